"""Figures: test metric against the fixed λ with λOpt as horizontal lines (the λ-sensitivity figure of
the λOpt slides), λ trajectories of λOpt runs, and deep-MF error / effective rank against depth."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.ticker import NullFormatter

from lambdaopt.figures.style import figure, figure_legend, integer_axis, save
from lambdaopt.report.table import display_name, select_grid_points


def lambda_sensitivity(runs: pd.DataFrame, metrics: list[str], path: Path) -> Path | None:
    """One panel per metric: mean ± std over seeds at each fixed λ > 0 on a log axis, λ = 0 on its own
    narrow axis at the left labelled "0" (a broken axis: 0 has no place on a log scale), the λ selected on
    validation ringed, and every other row's mean as a horizontal line; one legend below the panels.
    Where a fixed-λ row is tuned over more than λ (optimizer, lr, ...), each seed's point at a λ is its
    best on validation there, as the table selects, rather than an average over the other settings."""
    grid = runs[runs["is_grid"] & runs["lam"].notna()]
    if grid.empty:
        return None
    order = list(pd.unique(grid["row"]))  # rows (and so colours) in sweep order, as before the selection
    selected = select_grid_points(grid)  # per row and seed: the λ the table reports
    grid = select_grid_points(grid, within=("lam",))
    others = runs[~runs["is_grid"]]
    has_zero = bool((grid["lam"] == 0).any())
    fig = figure(4.4 * len(metrics), 3.6)
    panels = fig.add_gridspec(1, len(metrics))
    for k, metric in enumerate(metrics):
        column = f"metrics.test/{metric}"
        if has_zero:
            cells = panels[k].subgridspec(1, 2, width_ratios=[1, 8], wspace=0.05)
            zero_ax = fig.add_subplot(cells[0])
            ax = fig.add_subplot(cells[1], sharey=zero_ax)
        else:
            zero_ax, ax = None, fig.add_subplot(panels[k])
        for i, row in enumerate(order):
            color = f"C{i % 10}"
            stats = grid[grid["row"] == row].groupby("lam")[column].agg(["mean", "std"]).fillna({"std": 0.0})
            positive = stats[stats.index > 0]
            ax.errorbar(positive.index, positive["mean"], yerr=positive["std"], marker="o", ms=4, capsize=2,
                        color=color, label=f"{row} (fixed λ)")
            if zero_ax is not None and 0 in stats.index:
                zero_ax.errorbar([0], stats.loc[[0], "mean"], yerr=stats.loc[[0], "std"], marker="o", ms=4,
                                 capsize=2, color=color)
            for lam in pd.unique(selected.loc[selected["row"] == row, "lam"]):
                target = zero_ax if lam == 0 and zero_ax is not None else ax
                target.plot([lam], [stats.loc[lam, "mean"]], marker="o", ms=11, mfc="none", mec=color, mew=1.5,
                            ls="none", label="λ selected on validation")
        for i, (row, group) in enumerate(others.groupby("row", sort=False)):
            for target in (ax, zero_ax) if zero_ax is not None else (ax,):
                target.axhline(group[column].mean(), color=f"C{(len(order) + i) % 10}", ls="--", lw=1.2, label=row)
        ax.set_xscale("log")
        ticks = sorted(grid.loc[grid["lam"] > 0, "lam"].unique())  # the grid's λ, not powers of ten
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks], rotation=45 if len(ticks) > 4 else 0)
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("fixed λ (log scale)")
        (zero_ax or ax).set_ylabel(f"test {display_name(metric)}")
        if zero_ax is not None:
            _break_axes(zero_ax, ax)
    figure_legend(fig, axes=[a for a in fig.axes if a.get_xscale() == "log"] + fig.axes)  # fixed-λ rows first
    return save(fig, path)


def _break_axes(zero_ax, ax) -> None:
    """λ = 0 axis | log axis, drawn as one axis broken by two slashes; the right one has no y labels."""
    zero_ax.set_xlim(-1, 1)
    zero_ax.set_xticks([0], ["0"])
    zero_ax.spines["right"].set_visible(False)
    ax.spines["left"].set_visible(False)
    ax.tick_params(axis="y", left=False, labelleft=False)
    kwargs = dict(marker=[(-1, -1.5), (1, 1.5)], markersize=8, linestyle="none", color="k", mec="k", mew=1,
                  clip_on=False)
    zero_ax.plot([1], [0], transform=zero_ax.transAxes, **kwargs)
    ax.plot([0], [0], transform=ax.transAxes, **kwargs)


def lambda_trajectories(histories: dict[str, pd.DataFrame], path: Path) -> Path | None:
    """`histories`: {row: DataFrame(step, key, value)} of `reg/{user,item}/lambda_mean`; mean over seeds."""
    if not histories:
        return None
    fig = figure(9, 3.4)
    axes = fig.subplots(1, 2)
    for ax, side in zip(axes, ("user", "item")):
        for row, history in histories.items():
            points = history[history["key"] == f"reg/{side}/lambda_mean"]
            if not points.empty:
                curve = points.groupby("step")["value"].mean()
                ax.plot(curve.index, curve.values, marker=".", label=row)
        integer_axis(ax.xaxis)
        ax.set(title=f"{side} λ (mean over seeds)", xlabel="epoch", ylabel=f"mean {side} λ over all {side}s")
    figure_legend(fig)
    return save(fig, path)


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
    fig = figure(4.2 * len(columns), 3.4)
    axes = fig.subplots(1, len(columns), squeeze=False)
    for ax, column in zip(axes[0], columns):
        for key, group in (runs.groupby(series, sort=True) if series else [((), runs)]):
            key = key if isinstance(key, tuple) else (key,)
            label = ", ".join(f"{c.rsplit('.', 1)[-1]}={v}" for c, v in zip(series, key))
            curve = group.groupby("depth")[column].mean()
            ax.plot(curve.index, curve.values, marker="o", label=label)
        positive = (runs[column].dropna() > 0).all()  # a log axis needs positive values (a loss may be 0)
        ax.set_yscale("log" if "effective_rank" not in column and positive else "linear")
        ax.set_xticks(sorted(runs["depth"].unique()))  # the depths run, never 2.5
        ax.set_xlabel("depth")
        ax.set_ylabel(column[len("metrics."):].replace("/", " ").replace("_", " "))  # "test relative error"
    figure_legend(fig)
    return save(fig, path)
