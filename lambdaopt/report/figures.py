"""Figures: test metric against the fixed λ with λOpt as horizontal lines (the λ-sensitivity figure of
the λOpt slides), λ trajectories of λOpt runs, and deep-MF error / effective rank against depth."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from lambdaopt.report.table import display_name, select_grid_points  # noqa: E402


def lambda_sensitivity(runs: pd.DataFrame, metrics: list[str], path: Path) -> Path | None:
    """One panel per metric: mean ± std over seeds at each fixed λ (λ = 0 drawn left of the smallest
    positive λ), and every other row's mean as a horizontal line. Where a fixed-λ row is tuned over more
    than λ (optimizer, lr, ...), each seed's point at a λ is its best on validation there, as the table
    selects, rather than an average over the other settings."""
    grid = runs[runs["is_grid"] & runs["lam"].notna()]
    if grid.empty:
        return None
    positive = grid.loc[grid["lam"] > 0, "lam"]
    zero_at = positive.min() / 10 if len(positive) else 1e-6
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
    order = list(pd.unique(grid["row"]))  # rows (and so colours) in sweep order, as before the selection
    grid = select_grid_points(grid, within=("lam",))
    for ax, metric in zip(axes[0], metrics):
        column = f"metrics.test/{metric}"
        for row in order:
            group = grid[grid["row"] == row]
            stats = group.groupby("lam")[column].agg(["mean", "std"]).fillna({"std": 0.0})
            x = np.where(stats.index > 0, stats.index, zero_at)
            ax.errorbar(x, stats["mean"], yerr=stats["std"], marker="o", capsize=3, label=row)
        others = runs[~runs["is_grid"]]
        for i, (row, group) in enumerate(others.groupby("row", sort=False)):
            ax.axhline(group[column].mean(), color=f"C{(i + 1) % 10}", linestyle="--", label=row)
        ax.set_xscale("log")
        ticks = sorted(set(np.where(grid["lam"] > 0, grid["lam"], zero_at)))
        ax.set_xticks(ticks, [("0" if t == zero_at else f"{t:g}") for t in ticks], rotation=45)
        ax.set_xlabel("fixed λ")
        ax.set_ylabel(f"test {display_name(metric)}")
    _legend(axes[0][0])
    return _save(fig, path)


def lambda_trajectories(histories: dict[str, pd.DataFrame], path: Path) -> Path | None:
    """`histories`: {row: DataFrame(step, key, value)} of `reg/{user,item}/lambda_mean`; mean over seeds."""
    if not histories:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), squeeze=False)
    for ax, side in zip(axes[0], ("user", "item")):
        for row, history in histories.items():
            points = history[history["key"] == f"reg/{side}/lambda_mean"]
            if not points.empty:
                curve = points.groupby("step")["value"].mean()
                ax.plot(curve.index, curve.values, marker=".", label=row)
        ax.set_title(f"mean {side} λ")
        ax.set_xlabel("epoch")
    _legend(axes[0][0])
    return _save(fig, path)


def deep_mf(runs: pd.DataFrame, path: Path) -> Path | None:
    """Error-like test metrics and effective rank against `model.depth`, a line per init scale (and
    number of training samples), mean over seeds."""
    if "params.model.depth" not in runs:
        return None
    runs = runs[runs["params.model.depth"].notna()].copy()
    columns = [c for c in runs.columns if c.startswith("metrics.test/") and runs[c].notna().any()
               and any(w in c for w in ("rmse", "error", "mse", "effective_rank"))]
    runs["depth"] = pd.to_numeric(runs["params.model.depth"])
    if runs.empty or not columns or runs["depth"].nunique() < 2:  # a curve over depth needs two depths
        return None
    series = [c for c in ("params.model.init_scale", "params.dataset.n_train_samples") if c in runs]
    fig, axes = plt.subplots(1, len(columns), figsize=(4.2 * len(columns), 3.4), squeeze=False)
    for ax, column in zip(axes[0], columns):
        for key, group in (runs.groupby(series, sort=True) if series else [((), runs)]):
            key = key if isinstance(key, tuple) else (key,)
            label = ", ".join(f"{c.rsplit('.', 1)[-1]}={v}" for c, v in zip(series, key))
            curve = group.groupby("depth")[column].mean()
            ax.plot(curve.index, curve.values, marker="o", label=label)
        positive = (runs[column].dropna() > 0).all()  # a log axis needs positive values (a loss may be 0)
        ax.set_yscale("log" if "effective_rank" not in column and positive else "linear")
        ax.set_xlabel("depth")
        ax.set_ylabel(column[len("metrics."):])
    _legend(axes[0][0])
    return _save(fig, path)


def _legend(ax) -> None:
    if any(ax.get_legend_handles_labels()[1]):  # a single unlabeled series needs none
        ax.legend(fontsize=7)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
