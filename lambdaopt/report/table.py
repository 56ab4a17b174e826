"""The paper-style table: one row per regularizer/model, mean ± std over seeds, best per column marked,
and the compute each row cost (a fixed-λ row costs its whole grid)."""
from __future__ import annotations

import re
import sys

import numpy as np
import pandas as pd

from lambdaopt.tasks import lower_is_better
from lambdaopt.errors import ReportError
from lambdaopt.tracking import mlflow_key

def display_name(metric: str) -> str:
    """`hr_at_10` → `HR@10`, `auc` → `AUC`."""
    name, _, k = metric.partition("_at_")
    return f"{name.upper()}@{k}" if k else (name.upper() if len(name) <= 5 else name)


def _metric_order(metric: str) -> tuple:
    name, _, k = metric.partition("_at_")
    if not k and (numbered := re.fullmatch(r"(.+)_(\d+)", name)):  # sigma_2 before sigma_10
        name, k = numbered.groups()
    rank = {"auc": 0, "hr": 1, "recall": 1, "ndcg": 2}.get(name, 3)
    return rank, name if rank == 3 else "", int(k) if k.isdigit() else 0, name


def figure_metrics(metrics: list[str], most: int = 4) -> list[str]:
    """One metric per family for figures, the smallest K: auc, hr_at_10, ndcg_at_10, rmse, ..."""
    families: dict[str, str] = {}
    for metric in sorted(metrics, key=_metric_order):
        families.setdefault(metric.partition("_at_")[0], metric)
    return list(families.values())[:most]


def metric_columns(runs: pd.DataFrame, metrics: list[str] | None = None) -> list[str]:
    """The test metrics to tabulate (mlflow names, without `test/`): `metrics` if given, else all there are."""
    available = sorted((c[len("metrics.test/"):] for c in runs.columns
                        if c.startswith("metrics.test/") and runs[c].notna().any()), key=_metric_order)
    if not available:
        raise ReportError(f"none of the {len(runs)} runs has a test/ metric")
    if not metrics:
        return available
    wanted = [mlflow_key(m) for m in metrics]
    missing = [m for m in wanted if m not in available]
    if missing:
        raise ReportError(f"no run has metric test/{missing[0]} (available: {', '.join(available)})")
    return wanted


def selection_column(group: pd.DataFrame) -> str:
    """The column holding what the runs of `group` were selected on: `metrics.best_valid/<monitor>_smoothed`
    where every run logged it (trainer.smoothing > 1: what each run's epoch was selected on), else
    `metrics.best_valid/<monitor>`; the monitor from the tag, which holds the resolved metric
    (trainer.monitor may say `auto`)."""
    chosen = group["tags.monitor"] if "tags.monitor" in group else group["params.trainer.monitor"]
    column = "metrics.best_valid/" + mlflow_key(str(chosen.iloc[0]))
    smoothed = group.get(column + "_smoothed")
    return column + "_smoothed" if smoothed is not None and smoothed.notna().all() else column


def select_grid_points(runs: pd.DataFrame, within: tuple[str, ...] = ()) -> pd.DataFrame:
    """Per row and seed (and per value of each column in `within`, e.g. `("lam",)`: the best point at
    each λ), the fixed-λ grid point with the best validation value of the monitored metric
    (`best_valid/<trainer.monitor>_smoothed` where logged, else `best_valid/<trainer.monitor>`); other
    runs pass through. Adds `row_seconds`: every run's
    `train_seconds` summed over the row (the whole grid for a fixed-λ row)."""
    runs = runs.copy()
    seconds = runs.get("metrics.train_seconds", pd.Series(np.nan, index=runs.index))
    runs["row_seconds"] = runs["row"].map(seconds.groupby(runs["row"]).sum(min_count=1))
    runs["row_runs"] = runs["row"].map(runs["row"].value_counts())
    keep = [runs[~runs["is_grid"]]]
    for _, group in runs[runs["is_grid"]].groupby(["row", "seed", *within], sort=False):
        monitor = selection_column(group)
        values = group.get(monitor)
        if values is None or values.isna().any():
            run = group[values.isna()].iloc[0] if values is not None else group.iloc[0]
            raise ReportError(f"run {run['run_id']} ({run.get('tags.overrides', '')}) has no metric "
                              f"{monitor[len('metrics.'):]} to select λ on")
        better = values.idxmin() if lower_is_better(monitor) else values.idxmax()
        keep.append(group.loc[[better]])
    selected = pd.concat(keep)
    return selected.loc[[i for i in runs.index if i in selected.index]]


def paper_table(runs: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """One row per `row` label: `<metric>_mean`, `<metric>_std` over seeds, `seeds`, `runs`,
    `compute_s` (total training seconds of every run behind the row) and, for a fixed-λ row, the λ
    selected for each seed."""
    selected = select_grid_points(runs)
    for metric in metrics:
        lacking = selected[selected[f"metrics.test/{metric}"].isna()]
        if not lacking.empty and lacking["row"].nunique() < selected["row"].nunique():
            print(f"warning: {len(lacking)} run(s) lack test/{metric} (rows: {', '.join(lacking['row'].unique())})",
                  file=sys.stderr)
    table = {}
    for row, group in selected.groupby("row", sort=False):
        entry = {}
        for metric in metrics:
            values = group[f"metrics.test/{metric}"].dropna()
            entry[f"{metric}_mean"] = values.mean() if len(values) else np.nan
            entry[f"{metric}_std"] = values.std(ddof=0) if len(values) else np.nan
        entry.update(seeds=group["seed"].nunique(), runs=int(group["row_runs"].iloc[0]),
                     compute_s=group["row_seconds"].iloc[0],
                     selected_lam=", ".join(tuned_point(run, runs) for _, run in group.iterrows())
                     if group["is_grid"].all() else "")
        table[row] = entry
    frame = pd.DataFrame.from_dict(table, orient="index")
    frame.index.name = "row"
    return frame


def tuned_point(run: pd.Series, runs: pd.DataFrame) -> str:
    """The selected grid point of a tuned row: λ, and any other tuned key that varies in its grid."""
    from lambdaopt.report.runs import tuned_prefixes

    grid = runs[runs["row"] == run["row"]]
    keys = [c for c in grid.columns if c.startswith(tuned_prefixes(run)) and c != "params.regularizer.lam"
            and grid[c].astype(str).nunique() > 1]
    parts = [f"{run['lam']:g}"]
    for c in sorted(keys, key=lambda c: not c.endswith("._target_")):  # the optimizer's name before its lr
        parts.append(str(run[c]).rsplit(".", 1)[-1] if c.endswith("._target_") else f"{c.rsplit('.', 1)[-1]}={run[c]}")
    return " ".join(parts)


def best_rows(table: pd.DataFrame, metrics: list[str]) -> dict[str, str]:
    """{metric: the row with the best mean}."""
    best = {}
    for metric in metrics:
        means = table[f"{metric}_mean"].dropna()
        if len(means) > 1:
            best[metric] = means.idxmin() if lower_is_better(metric) else means.idxmax()
    return best


def number(value: float) -> str:
    """4 decimals, or 3 significant digits for what 4 decimals would print as 0.0000 (7.7e-06)."""
    return f"{value:.4f}" if value == 0 or abs(value) >= 5e-5 else f"{value:.3g}"


def to_markdown(table: pd.DataFrame, metrics: list[str]) -> str:
    """A Markdown table: `mean ± std` per metric, the best per column in bold, then seeds, runs, compute."""
    best = best_rows(table, metrics)
    show_lam = table["selected_lam"].astype(bool).any()
    header = ["", *map(display_name, metrics), "seeds", "runs", "compute"]
    header += ["selected λ (per seed)"] if show_lam else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row, entry in table.iterrows():
        cells = [row]
        for metric in metrics:
            mean, std = entry[f"{metric}_mean"], entry[f"{metric}_std"]
            cell = "–" if pd.isna(mean) else number(mean) + ("" if entry["seeds"] < 2 else f" ± {number(std)}")
            cells.append(f"**{cell}**" if best.get(metric) == row else cell)
        seconds = entry["compute_s"]
        cells += [str(entry["seeds"]), str(entry["runs"]), "–" if pd.isna(seconds) else f"{seconds:.{0 if seconds >= 10 else 1}f} s"]
        if show_lam:
            cells.append(entry["selected_lam"] or "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
