"""λOpt against a search, per seed: the best fixed λ a grid finds, the best an Optuna study finds, and
λOpt from one run — test quality at the validation-selected point against the compute each one cost
(`python -m lambdaopt.report --search`; runs of lambdaopt/conf/sweep/search_vs_lambdaopt*.yaml)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lambdaopt.errors import ReportError
from lambdaopt.report.table import display_name, number, select_grid_points, selection_column


def search_method(run: pd.Series) -> str:
    """`grid`, `Optuna` (a fixed-λ run that was a trial of a study) or the run's own label (λOpt-DUI)."""
    if not run["is_grid"]:
        return run["base"].split("-", 1)[-1]
    return "Optuna" if isinstance(run.get("tags.optuna_study"), str) else "grid"


def search_table(runs: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """One row per (seed, method): the run selected on validation (the best trial or grid point; λOpt's
    single run), its λ, validation value and test metrics; `runs` and `compute_s` = summed train_seconds
    of every run the method needed for that seed (the whole grid, every trial)."""
    runs = runs.assign(row=runs.apply(search_method, axis=1))
    missing = {"grid", "Optuna"} - set(runs["row"])
    if missing or runs["is_grid"].all():
        raise ReportError("a search comparison needs grid runs, Optuna trials and a λOpt run; none of "
                          + ", ".join(sorted(missing) or ["λOpt"]) + " here (lambdaopt/conf/sweep/search_vs_lambdaopt*.yaml)")
    seconds = runs.get("metrics.train_seconds", pd.Series(np.nan, index=runs.index))
    cost = seconds.groupby([runs["row"], runs["seed"]]).agg(["sum", "size"])
    selected = select_grid_points(runs)
    rows = []
    for index, run in selected.iterrows():
        column = selection_column(selected.loc[[index]])  # what this run was selected on
        total, count = cost.loc[(run["row"], run["seed"])]
        rows.append({"seed": run["seed"], "method": run["row"], "runs": int(count),
                     "lam": f"{run['lam']:g}" if run["is_grid"] else "learned",
                     "monitor": column.split("/", 1)[1].removesuffix("_smoothed"), "valid": run.get(column, np.nan),
                     **{m: run.get(f"metrics.test/{m}", np.nan) for m in metrics}, "compute_s": total,
                     "run_id": run["run_id"]})
    order = {"grid": 0, "Optuna": 1}
    table = pd.DataFrame(rows)
    return table.sort_values(["seed", "method"], key=lambda c: c.map(order).fillna(2) if c.name == "method" else c)


def search_markdown(table: pd.DataFrame, metrics: list[str]) -> str:
    """Per seed one line per method, then each method's mean over seeds."""
    header = ["seed", "method", "runs", "λ", f"valid {table['monitor'].iloc[0]}", *map(display_name, metrics), "compute"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def line(seed, method, runs, lam, valid, values, seconds):
        cells = [seed, method, runs, lam, number(valid), *(number(v) for v in values), f"{seconds:.1f} s"]
        lines.append("| " + " | ".join(map(str, cells)) + " |")

    for _, row in table.iterrows():
        line(row["seed"], row["method"], row["runs"], row["lam"], row["valid"], [row[m] for m in metrics], row["compute_s"])
    for method, group in table.groupby("method", sort=False):
        line("mean", method, f"{group['runs'].mean():g}", "", group["valid"].mean(),
             [group[m].mean() for m in metrics], group["compute_s"].mean())
    return "\n".join(lines)


def write_search_report(runs: pd.DataFrame, metrics: list[str], out: Path) -> tuple[Path, str]:
    """search.csv and search.md in `out`; returns the Markdown's path and text."""
    table = search_table(runs, metrics)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "search.csv", index=False)
    markdown = search_markdown(table, metrics)
    (out / "search.md").write_text(markdown + "\n")
    return out / "search.md", markdown
