"""Which task a config describes, which metrics its evaluator reports, and which way each improves.

Kept free of torch so `validate()` can check `trainer.monitor` before any data is loaded.
"""
from __future__ import annotations

from omegaconf import DictConfig

# The one table of which way a metric improves (the trainer's `mode: auto`, the report's selection and bold):
# errors and losses, and the completion descriptors where smaller means simpler (rank, nuclear norm), are
# smaller-better; everything else (auc, hr@K, ndcg@K) is larger-better.
ERROR_METRICS = {"rmse", "mae", "mse", "train_mse", "relative_error", "nuclear_norm", "effective_rank",
                 "train_loss", "loss"}


def lower_is_better(metric: str) -> bool:
    """For a metric name as logged anywhere: `rmse`, `test/rmse`, `best_valid/ndcg_at_10_smoothed`."""
    return metric.rsplit("/", 1)[-1].removesuffix("_smoothed") in ERROR_METRICS
COMPLETION_METRICS = ["train_mse", "relative_error", "nuclear_norm", "effective_rank"]
RATING_METRICS = ["rmse", "mae", "mse"]


def task_kind(cfg: DictConfig) -> str:
    """'implicit' (BPR + full ranking), 'explicit' (rating MSE + RMSE/MAE) or 'completion' (full-batch
    MSE vs a known W*), from `dataset.feedback` (implicit when the dataset has no such field)."""
    return str(cfg.dataset.get("feedback", "implicit"))


def metric_names(cfg: DictConfig) -> list[str]:
    kind = task_kind(cfg)
    if kind == "completion":
        return list(COMPLETION_METRICS)
    if kind == "explicit":
        return list(RATING_METRICS)
    return ["auc"] + [f"{m}@{k}" for k in cfg.evaluation.ks for m in ("hr", "ndcg")]


def resolve_monitor(cfg: DictConfig) -> tuple[str, str]:
    """(monitor, mode) with `auto` replaced by the task's default."""
    monitor = cfg.trainer.monitor
    if monitor == "auto":
        kind = task_kind(cfg)
        ks = list(cfg.evaluation.ks)
        monitor = {"completion": "train_mse", "explicit": "rmse"}.get(kind, f"ndcg@{10 if 10 in ks else ks[0]}")
    mode = cfg.trainer.get("mode", "auto")
    if mode == "auto":
        mode = "min" if lower_is_better(monitor) else "max"
    return monitor, mode
