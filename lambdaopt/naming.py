"""What a person reads in MLflow's run list: run names that say what differs, and one-sentence descriptions.

A sweep's children used to share one name (`MatrixFactorization-FixedL2-ml-100k`), so the run list and
chart legends could not tell them apart. A run is now named for its method (`fixed λ=0.001`, `λOpt-DUI`,
`SGDA`, `AMF`), its model and data, its seed, and in a sweep every swept key that the method name does not
already say (`optimizer.lr=10`); the parent run passes the swept keys to its jobs in SWEPT_KEYS_ENV.
"""
from __future__ import annotations

import os

from omegaconf import DictConfig, OmegaConf

from lambdaopt.console import number, result_rows, table_columns

SWEPT_KEYS_ENV = "LAMBDAOPT_SWEPT_KEYS"


def _class(cfg: DictConfig, group: str) -> str:
    return str(OmegaConf.select(cfg, f"{group}._target_") or "").rsplit(".", 1)[-1]


def model_name(class_name: str) -> str:
    """A registered model's display name (`MF`, `deep MF`), else the class name."""
    from lambdaopt.registry import MODELS

    model = MODELS.by_class.get(class_name)
    return (model.display_name if model is not None else "") or class_name


def method_name(cfg: DictConfig) -> str:
    """`fixed λ=0.001`, `λOpt-DUI`, `SGDA`, `AMF`, `no penalty`: the registered regularizer's run label,
    else its class name."""
    from lambdaopt.registry import REGULARIZERS

    name = _class(cfg, "regularizer")
    regularizer = REGULARIZERS.by_class.get(name)
    return regularizer.run_label(cfg.regularizer) if regularizer is not None else name


def swept_keys() -> list[str]:
    return [k for k in os.environ.get(SWEPT_KEYS_ENV, "").split(",") if k]


def run_name(cfg: DictConfig, dataset_name: str) -> str:
    """e.g. `fixed λ=0.001 · MF · ml-100k · seed 0` or, in a sweep over the lr, `... · optimizer.lr=10`."""
    model = _class(cfg, "model")
    parts = [method_name(cfg), model_name(model), dataset_name, f"seed {cfg.seed}"]
    said = {"regularizer", "regularizer.lam", "regularizer.granularity", "model", "dataset", "seed"}
    for key in swept_keys():
        if key not in said and (value := OmegaConf.select(cfg, key)) is not None and not isinstance(value, DictConfig):
            parts.append(f"{key}={value}")
    return " · ".join(parts)


def description(name: str, dataset, monitor: str, best_epoch: int, epochs_run: int, valid: dict, test: dict,
                prefix: str = "valid") -> str:
    """The run's Overview text (`mlflow.note.content`, rendered as Markdown above the metrics): one sentence,
    then the selected epoch's metrics in a table at 4 significant digits. MLflow's own metrics table lists
    the last epoch's `valid/*` first and every value at full float precision."""
    def shown(value):
        return number(value) if isinstance(value, float) else "–"

    size = f" ({dataset.n_users:,} users × {dataset.n_items:,} items"
    size += f", {len(dataset.train):,} training interactions)" if hasattr(dataset, "train") else ")"
    sentence = (f"{name}: trained on {dataset.name}{size}; epoch {best_epoch} of {epochs_run} "
                f"selected on validation {monitor} = {shown(valid.get(monitor))}, where test {monitor} = "
                f"{shown(test.get(monitor))}.")
    rows = result_rows(prefix, valid, test)
    labels = {prefix: f"validation, epoch {best_epoch}", "test": f"test, epoch {best_epoch}"}
    return sentence + "\n\n" + markdown_table({labels[k]: v for k, v in rows.items()})


def markdown_table(rows: dict[str, dict[str, float]]) -> str:
    """| | metric | ... | with a line per row."""
    columns = table_columns(rows)
    lines = ["| | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for label, values in rows.items():
        lines.append(f"| {label} | " + " | ".join(number(values[c]) if c in values else "–" for c in columns) + " |")
    return "\n".join(lines)
