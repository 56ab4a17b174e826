"""`singular_values.png`: the top singular values of the end-to-end matrix over training, against the
ground truth's — the incremental-learning picture of the deep-MF papers (Arora et al. 2019, Fig. 3):
from a small init, σ_1, σ_2, ... rise one after another towards σ_i(W*)."""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.ticker import NullFormatter

from lambdaopt.figures.style import figure, figure_legend


def singular_values_figure(table: pd.DataFrame, truth_sigma: np.ndarray | None, steps_per_epoch: int | None,
                           title: str = ""):
    """`table`: (step, index, value) rows. x: gradient steps on a symlog axis (step 0, the init, at 0;
    then log-spaced), with the epochs MLflow's charts use on the top axis; y: log."""
    fig = figure(6.4, 4.4)
    ax = fig.subplots()
    indices = sorted(table["index"].unique())
    colors = colormaps["viridis"](np.linspace(0.0, 0.9, len(indices)))
    for color, (index, part) in zip(colors, table.groupby("index")):
        ax.plot(part["step"], part["value"], color=color, lw=1.4, label=f"σ{index}")
    if truth_sigma is not None:
        truth = np.asarray(truth_sigma, dtype=float)
        truth = truth[truth > 1e-6 * truth.max()]  # the rank-r truth's zero singular values have no log place
        for k, value in enumerate(truth):
            ax.axhline(value, color="k", ls=":", lw=1, label="ground truth σ(W*)" if k == 0 else None)
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlim(left=0)
    ax.set_yscale("log")
    ax.set(xlabel="gradient step (0 = initialization)", ylabel="singular value of W", title=title)
    if steps_per_epoch:
        top = ax.secondary_xaxis("top", functions=(lambda s: np.asarray(s) / steps_per_epoch,
                                                   lambda e: np.asarray(e) * steps_per_epoch))
        top.set_xscale("symlog", linthresh=1 / steps_per_epoch)
        last = table["step"].max() / steps_per_epoch
        epochs = [0] + [10 ** k for k in range(int(np.log10(max(last, 1))) + 1)]  # whole epochs only
        top.set_xticks(epochs, [str(e) for e in epochs])
        top.xaxis.set_minor_formatter(NullFormatter())
        top.set_xlabel(f"epoch (MLflow's step; {steps_per_epoch} gradient steps each)")
    figure_legend(fig, ncol=6)
    return fig
