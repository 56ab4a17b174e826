"""Paper-style tables and figures from MLflow runs: `python -m lambdaopt.report --experiment NAME`.

    load_runs        runs (by experiment, parent run, tags) → DataFrame          (runs.py)
    label_runs       the table row of each run                                   (runs.py)
    paper_table      mean ± std over seeds, compute per row, best per column     (table.py)
    figures          λ sensitivity, λ trajectories, deep-MF depth                (figures.py)
    write_report     all of it into a folder (CSV, Markdown, PNG), logged to the parent run
    search_report    per seed: grid vs Optuna vs λOpt, quality against compute  (search.py)
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterable

import pandas as pd

from lambdaopt.errors import ReportError
from lambdaopt.report import figures
from lambdaopt.report.runs import label_runs, load_runs
from lambdaopt.tracking import store_uri
from lambdaopt.report.table import figure_metrics, metric_columns, paper_table, to_markdown

__all__ = ["load_runs", "label_runs", "paper_table", "to_markdown", "write_report", "search_report"]

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


TASK_TITLES = {"implicit": "ranking (implicit feedback)", "explicit": "rating regression (explicit feedback)",
               "completion": "matrix completion"}


def run_tasks(runs: pd.DataFrame) -> pd.Series:
    """Each run's task, from its logged `dataset.feedback` (implicit where a run has none)."""
    return runs.get("params.dataset.feedback", pd.Series("implicit", index=runs.index)).fillna("implicit")


def default_out(experiment: str, parent: str | None, tags: list[tuple[str, str]]) -> Path:
    """reports/<experiment>/<what was selected>: a second report of other runs does not overwrite the first."""
    parts = ([f"parent-{parent[:12]}"] if parent else []) + [f"{k}={v}" for k, v in tags]
    name = "_".join(parts) or "all"
    return Path("reports") / experiment / "".join(c if c.isalnum() or c in "-_=." else "-" for c in name)


def _figure(name: str, draw, *args) -> Path | None:
    """Draw one figure; a figure the runs cannot support is skipped with a note, never a traceback."""
    try:
        return draw(*args)
    except Exception as error:  # noqa: BLE001 - the table matters more than any one figure
        print(f"note: figure {name} skipped ({type(error).__name__}: {error})", file=sys.stderr)
        return None


def write_report(uri: str, experiment: str, parent: str | None = None, tags: Iterable[tuple[str, str]] = (),
                 out: str | Path | None = None, metrics: list[str] | None = None, quiet: bool = False) -> dict:
    """Write table.csv, table.md, runs.csv and the figures into `out` (default `default_out`), log them
    to `parent` under `report/` when given, print the table unless `quiet`; return the paths.

    Runs of several tasks (ranking, ratings, completion) get one table section and one set of figures
    per task (`table-<task>.csv`, `<figure>-<task>.png`); their metrics are never mixed in one table."""
    tags = list(tags)
    runs = label_runs(load_runs(uri, experiment, parent, tags))
    out = Path(out) if out else default_out(experiment, parent, tags)
    out.mkdir(parents=True, exist_ok=True)
    tasks = run_tasks(runs)
    several = tasks.nunique() > 1
    sections, tables, written = [], [], {}
    for task, group in runs.groupby(tasks, sort=False):
        suffix = f"-{task}" if several else ""
        try:
            columns = metric_columns(group, metrics)
        except ReportError as error:
            if not several:
                raise
            print(f"note: no {TASK_TITLES.get(task, task)} table ({error})", file=sys.stderr)
            continue
        table = paper_table(group, columns)
        markdown = to_markdown(table, columns)
        sections.append(f"## {TASK_TITLES.get(task, task)}\n\n{markdown}" if several else markdown)
        tables.append(table.assign(task=task) if several else table)
        if several:
            table.to_csv(out / f"table{suffix}.csv")
        for name, draw, args in (
                ("lambda_sensitivity", figures.lambda_sensitivity, (group, figure_metrics(columns))),
                ("lambda_trajectories", figures.lambda_trajectories, (_histories(uri, group),)),
                ("deep_mf_depth", figures.deep_mf, (group,))):
            path = _figure(name, draw, *args, out / f"{name}{suffix}.png")
            if path is not None:
                written[name + suffix] = path
    if not tables:
        raise ReportError(f"none of the {len(runs)} runs has a test metric to tabulate")
    markdown = "\n\n".join(sections)
    written = {"table_csv": out / "table.csv", "table_md": out / "table.md", "runs_csv": out / "runs.csv", **written}
    pd.concat(tables).to_csv(written["table_csv"])
    written["table_md"].write_text(markdown + "\n")
    keep = ["run_id", "row", "seed", "lam", "status"] + [c for c in runs.columns if c.startswith("metrics.test/")
                                                         or c in ("metrics.train_seconds", "tags.overrides")]
    runs[keep].assign(task=tasks).to_csv(written["runs_csv"], index=False)
    if parent:
        from mlflow.tracking import MlflowClient

        MlflowClient(uri).log_artifacts(parent, str(out), "report")
    if not quiet:
        print(markdown)
        print(f"\n{len(runs)} runs → {sum(len(t) for t in tables)} rows; written to {out}/: "
              + ", ".join(p.name for p in written.values()))
    return written


def search_report(uri: str, experiment: str, parent: str | None = None, tags: Iterable[tuple[str, str]] = (),
                  out: str | Path | None = None, metrics: list[str] | None = None) -> Path:
    """search.csv and search.md (lambdaopt/report/search.py) into `out`, the table printed; its path."""
    from lambdaopt.report.search import write_search_report

    tags = list(tags)
    runs = label_runs(load_runs(uri, experiment, parent, tags))
    path, markdown = write_search_report(runs, metric_columns(runs, metrics), Path(out) if out else
                                         default_out(experiment, parent, tags))
    print(markdown)
    print(f"\n{len(runs)} runs; written to {path} and {path.with_suffix('.csv').name}")
    return path
