"""The λOpt figures: λ over epochs by frequency quartile (the paper's Figure 8) and λ vs frequency, both
at the validation-selected epoch (the model a run reports), not the last one trained."""
from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr

from lambdaopt.figures.style import figure, integer_axis, log_count_axis, save

BUCKETS = 4
# rare → frequent: light to dark of one hue family, so the order reads off the colour and four lines
# stay apart (viridis' ends are too alike in lightness to tell apart in print)
BUCKET_COLORS = ("#fdae61", "#f46d43", "#2c7bb6", "#1a1a5e")


def selected_snapshot(epochs: list[int], selected_epoch: int | None) -> int:
    """Index of the snapshot at the selected epoch, or of the last one before it (snapshots may be
    sparser than evaluations); the last snapshot when no epoch was selected."""
    if selected_epoch is None or not epochs:
        return len(epochs) - 1
    before = [i for i, epoch in enumerate(epochs) if epoch <= selected_epoch]
    return before[-1] if before else 0


def frequency_buckets(counts: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(label, entity ids) per training-frequency quartile, rarest first; the label names the quartile's
    range of training interactions and which end it is."""
    order = np.argsort(counts, kind="stable")
    parts = [part for part in np.array_split(order, BUCKETS) if len(part)]
    labels = []
    for q, part in enumerate(parts):
        end = ", rarest" if q == 0 else ", most frequent" if q == len(parts) - 1 else ""
        labels.append(f"Q{q + 1}{end}: {counts[part].min()}–{counts[part].max()}")
    return list(zip(labels, parts))


def trajectories_figure(epochs, entity_means, counts, per_entity, selected_epoch=None):
    """Per side: the median over a quartile's entities of their mean λ, with the quartiles' middle half
    shaded; a shared λ is one line. The selected epoch is marked."""
    fig = figure(9, 4.2)
    axes = fig.subplots(1, 2)
    for ax, role in zip(axes, ("user", "item")):
        history = np.stack(entity_means[role])  # (snapshots, entities)
        if per_entity[role]:
            for color, (label, ids) in zip(BUCKET_COLORS, frequency_buckets(counts[role])):
                low, mid, high = np.percentile(history[:, ids], [25, 50, 75], axis=1)
                ax.fill_between(epochs, low, high, color=color, alpha=0.2, linewidth=0)
                ax.plot(epochs, mid, color=color, lw=1.6, marker="." if len(epochs) < 15 else None, label=label)
        else:
            ax.plot(epochs, history[:, 0], color="k", lw=1.6, label="shared λ")
        if selected_epoch is not None:
            ax.axvline(selected_epoch, color="0.4", ls="--", lw=1, label=f"selected epoch {selected_epoch}")
        integer_axis(ax.xaxis)
        ax.set(title=f"{role}s by training frequency", xlabel="epoch",
               ylabel=f"mean {role} λ (quartile median, 25–75 %)")
        # a legend per panel: the quartiles' interaction ranges differ between users and items
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False,
                  title="training interactions, by quartile" if per_entity[role] else None)
    return fig


def lambda_vs_frequency_figure(epochs, entity_means, counts, per_entity, selected_epoch=None):
    """Each entity's mean λ at the selected epoch against its training interactions (log axis)."""
    at = selected_snapshot(epochs, selected_epoch)
    fig = figure(9, 3.6)
    axes = fig.subplots(1, 2)
    for ax, role in zip(axes, ("user", "item")):
        lam = entity_means[role][at]
        shown = np.maximum(counts[role], 1)  # an entity without training data sits at 1 on the log axis
        ax.scatter(shown, lam, s=5, alpha=0.5, color="#2c7bb6", linewidths=0)
        ax.set_xscale("log")
        log_count_axis(ax.xaxis, shown)
        title = f"{role}s, λ at epoch {epochs[at]}" + (" (selected)" if epochs[at] == selected_epoch else "")
        if per_entity[role]:
            ax.text(0.03, 0.95, f"Spearman ρ = {spearmanr(counts[role], lam).statistic:.3f}",
                    transform=ax.transAxes, va="top")
        ax.set(title=title, xlabel="training interactions (log scale)", ylabel=f"mean {role} λ")
    return fig


def plot_trajectories(epochs, entity_means, counts, per_entity, path, selected_epoch=None):
    return save(trajectories_figure(epochs, entity_means, counts, per_entity, selected_epoch), path)


def plot_lambda_vs_frequency(epochs, entity_means, counts, per_entity, path, selected_epoch=None):
    return save(lambda_vs_frequency_figure(epochs, entity_means, counts, per_entity, selected_epoch), path)
