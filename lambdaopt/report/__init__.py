"""Paper-style tables and figures from MLflow runs: `python -m lambdaopt.report --experiment NAME`.

    load_runs        runs (by experiment, parent run, tags) → DataFrame          (runs.py)
    label_runs       the table row of each run                                   (runs.py)
    paper_table      mean ± std over seeds, compute per row, best per column     (table.py)
    figures          λ sensitivity, λ trajectories, deep-MF depth                (figures.py)
    write_report     all of it into a folder (CSV, Markdown, PNG), logged to the parent run
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import pandas as pd

from lambdaopt.report import figures
from lambdaopt.report.runs import label_runs, load_runs
from lambdaopt.tracking import store_uri
from lambdaopt.report.table import figure_metrics, metric_columns, paper_table, to_markdown

__all__ = ["load_runs", "label_runs", "paper_table", "to_markdown", "write_report"]

TRAJECTORY_KEYS = ("reg/user/lambda_mean", "reg/item/lambda_mean")


def _histories(uri: str, runs: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """{row: long DataFrame (step, key, value)} of the λ trajectories of the learned-λ runs."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store_uri(uri))
    histories = {}
    learned = runs[runs.get(f"metrics.{TRAJECTORY_KEYS[0]}", pd.Series(index=runs.index, dtype=float)).notna()]
    for row, group in learned.groupby("row", sort=False):
        points = [(m.step, key, m.value) for run_id in group["run_id"] for key in TRAJECTORY_KEYS
                  for m in client.get_metric_history(run_id, key)]
        histories[row] = pd.DataFrame(points, columns=["step", "key", "value"])
    return histories


def write_report(uri: str, experiment: str, parent: str | None = None, tags: Iterable[tuple[str, str]] = (),
                 out: str | Path | None = None, metrics: list[str] | None = None, quiet: bool = False) -> dict:
    """Write table.csv, table.md, runs.csv and the figures into `out` (default reports/<experiment>/), log
    them to `parent` under `report/` when given, print the table unless `quiet`; return the paths."""
    tags = list(tags)
    runs = label_runs(load_runs(uri, experiment, parent, tags))
    columns = metric_columns(runs, metrics)
    table = paper_table(runs, columns)
    out = Path(out or Path("reports") / experiment)
    out.mkdir(parents=True, exist_ok=True)
    markdown = to_markdown(table, columns)
    written = {"table_csv": out / "table.csv", "table_md": out / "table.md", "runs_csv": out / "runs.csv"}
    table.to_csv(written["table_csv"])
    written["table_md"].write_text(markdown + "\n")
    keep = ["run_id", "row", "seed", "lam", "status"] + [c for c in runs.columns if c.startswith("metrics.test/")
                                                         or c in ("metrics.train_seconds", "tags.overrides")]
    runs[keep].to_csv(written["runs_csv"], index=False)
    for name, path in (("lambda_sensitivity", figures.lambda_sensitivity(runs, figure_metrics(columns), out / "lambda_sensitivity.png")),
                       ("lambda_trajectories", figures.lambda_trajectories(_histories(uri, runs), out / "lambda_trajectories.png")),
                       ("deep_mf_depth", figures.deep_mf(runs, out / "deep_mf_depth.png"))):
        if path is not None:
            written[name] = path
    if parent:
        from mlflow.tracking import MlflowClient

        MlflowClient(uri).log_artifacts(parent, str(out), "report")
    if not quiet:
        print(markdown)
        print(f"\n{len(runs)} runs → {len(table)} rows; written to {out}/: " + ", ".join(p.name for p in written.values()))
    return written
