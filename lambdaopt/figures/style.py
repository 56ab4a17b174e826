"""What every figure shares: a paper-sized style, axes whose tick labels never collide, one legend per
figure, and a PNG with a PDF beside it (a vector copy for the paper)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter  # noqa: E402

# Set for the process, not per figure: tick labels are created when a figure is drawn, after any
# rc_context around its construction has ended (this module is imported only to draw figures).
plt.rcParams.update({"font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9, "legend.fontsize": 8,
                     "xtick.labelsize": 8, "ytick.labelsize": 8, "axes.spines.top": False,
                     "axes.spines.right": False})


def figure(width: float, height: float, **kwargs):
    """A constrained-layout figure (a legend placed outside the axes gets room)."""
    return plt.figure(figsize=(width, height), layout="constrained", **kwargs)


def integer_axis(axis) -> None:
    """Epochs, depths: integer ticks only (never 2.5)."""
    axis.set_major_locator(MaxNLocator(integer=True))


def log_count_axis(axis, values) -> None:
    """A log axis over positive counts: plain labels (20, 50, 100) at 1-2-5 steps when the data span
    under three decades, at powers of ten otherwise; minor ticks unlabeled, so labels never collide."""
    values = np.asarray(values, dtype=float)
    values = values[values > 0]
    decades = np.log10(values.max() / values.min()) if len(values) else 0.0
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades < 3 else (1.0,)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def figure_legend(fig, axes=None, ncol: int = 4, **kwargs) -> None:
    """One legend for the whole figure, below the panels, from the labeled artists of `axes` (all axes
    by default) without repeats, in up to `ncol` columns; nothing when nothing is labeled."""
    seen: dict[str, object] = {}
    for ax in axes if axes is not None else fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label and not label.startswith("_"):
                seen.setdefault(label, handle)
    if seen:
        fig.legend(list(seen.values()), list(seen), loc="outside lower center", ncol=min(len(seen), ncol),
                   frameon=False, **kwargs)


def save(fig, path: str | Path) -> Path:
    """Write `path` (PNG) and the same figure as PDF beside it; close the figure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    fig.savefig(path.with_suffix(".pdf"))
    plt.close(fig)
    return path
