"""What a run prints: one number format, the epoch line, a progress bar within long epochs on a terminal,
MLflow's own messages in the job's log format, and the closing summary in the Hydra job log too."""
from __future__ import annotations

import logging
import os
import sys
from typing import Iterable, Iterator

log = logging.getLogger(__name__)

# Loggers MLflow gives a handler of its own (stderr, its own format, not in the job log file):
# mlflow/utils/logging_utils.py, _configure_mlflow_loggers.
MLFLOW_LOGGERS = ("mlflow", "alembic", "sqlalchemy.engine", "huey")
# An epoch shorter than this never shows a bar: a bar that flashes on every short epoch is noise.
BAR_DELAY_S = 2.0


def number(value: float) -> str:
    """Every metric, loss and λ on the console: 4 significant digits, trailing zeros kept so that columns
    line up (0.1661, 0.6740, 0.001234, 1.200e-05)."""
    return f"{value:#.4g}"


def epoch_line(epoch: int, train_loss: float, prefix: str, valid: dict[str, float], monitor: str,
               smoothed: tuple[int, float] | None, improved: bool, record: dict[str, float], seconds: float) -> str:
    """`epoch  12 | loss 0.4321 | valid auc 0.9123 ndcg@10 0.1661 * | λ user 0.0012 item 0.0034 | 3.2 s`:
    AUC when there is one, the monitored metric (and its mean over the last n evaluations, `smoothed` =
    (n, mean), when selection smooths), `*` when the epoch is the new
    selection, λ's mean per side for learned λ (from the logged `reg/*/lambda_mean`)."""
    shown = [f"auc {number(valid['auc'])}"] if "auc" in valid and monitor != "auc" else []
    shown.append(f"{monitor} {number(valid[monitor])}")
    if smoothed is not None:
        shown.append(f"(mean of last {smoothed[0]} {number(smoothed[1])})")
    parts = [f"epoch {epoch:3d}", f"loss {number(train_loss)}", f"{prefix} " + " ".join(shown) + (" *" if improved else "")]
    lambdas = [f"{side} {number(record[key])}" for side in ("user", "item")
               if (key := f"reg/{side}/lambda_mean") in record]
    if lambdas:
        parts.append("λ mean " + " ".join(lambdas))
    parts.append(f"{seconds:.2f} s")
    return " | ".join(parts)


def result_rows(prefix: str, selected: dict[str, float], test: dict[str, float]) -> dict[str, dict[str, float]]:
    """The closing table's rows: validation at the selected epoch, then test. Completion's evaluator
    (prefix `eval`) measures the test quantities against W* along the way, so at the selected epoch it
    measured the model the test evaluates: one row, not two alike ones."""
    return {"test": test} if prefix == "eval" else {prefix: selected, "test": test}


def table_columns(rows: dict[str, dict[str, float]]) -> list[str]:
    """The metrics a summary table shows, in first-seen order: σ_i and the smoothed monitor stay in MLflow."""
    return list(dict.fromkeys(c for values in rows.values() for c in values
                              if not c.startswith("sigma_") and not c.endswith("_smoothed")))


def within_epoch(batches: Iterable, total: int, epoch: int) -> Iterator:
    """`batches`, with a progress bar on stderr when it is a terminal (tqdm's `disable=None`), shown only
    once an epoch has run BAR_DELAY_S and erased at its end (the epoch line follows); a log file or a
    pipe gets no bar. The bar draws nothing random: a run is the same with or without it."""
    from tqdm import tqdm

    return iter(tqdm(batches, total=total, desc=f"epoch {epoch}", unit="step", leave=False, delay=BAR_DELAY_S,
                     file=sys.stderr, disable=None, dynamic_ncols=True))


class _ToRootHandlers(logging.Handler):
    """Hands a record to the root logger's handlers: Hydra's console format and its job log file."""

    def emit(self, record: logging.LogRecord) -> None:
        for handler in logging.getLogger().handlers:
            if record.levelno >= handler.level:
                handler.handle(record)


def route_mlflow_logs() -> None:
    """MLflow's messages ("Creating initial MLflow database tables...", alembic's migrations) in the same
    format and log file as lambdaopt's, instead of MLflow's own stderr format; idempotent. MLflow's
    artifact-download bars are turned off: they filled logs with carriage returns."""
    import mlflow  # noqa: F401  (configures its loggers at import; replace that now, not before)
    from mlflow.utils.logging_utils import SuppressLogFilter

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    handler = _ToRootHandlers()
    handler.addFilter(SuppressLogFilter())  # what MLflow's own handler filters (logs of its silenced threads)
    for name in MLFLOW_LOGGERS:
        logging.getLogger(name).handlers = [handler]


def show(text: str) -> None:
    """The closing summary: through logging under Hydra (its console and the job's .log file), printed
    elsewhere (a notebook has no log handler)."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized() and logging.getLogger().handlers:
        log.info("%s", text)
    else:
        print(text)
