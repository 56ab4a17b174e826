"""The λOpt figures: λ trajectories by frequency bucket (the paper's Figure 8) and λ vs frequency."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

BUCKETS = 4
PER_BUCKET = 5


def sample_across_buckets(counts: np.ndarray, seed: int = 0) -> list[tuple[int, np.ndarray]]:
    """Entities drawn from each frequency quartile (bucket index, entity ids), rarest first."""
    rng = np.random.default_rng(seed)
    order = np.argsort(counts, kind="stable")
    return [(b, rng.choice(part, size=min(PER_BUCKET, len(part)), replace=False))
            for b, part in enumerate(np.array_split(order, BUCKETS)) if len(part)]


def plot_trajectories(epochs, entity_means, counts, per_entity, path):
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    colors = plt.cm.viridis(np.linspace(0.1, 0.9, BUCKETS))
    for ax, role in zip(axes, ("user", "item")):
        history = np.stack(entity_means[role])  # (snapshots, entities)
        if per_entity[role]:
            for bucket, ids in sample_across_buckets(counts[role]):
                for k, entity in enumerate(ids):
                    label = f"frequency quartile {bucket + 1}" if k == 0 else None
                    ax.plot(epochs, history[:, entity], color=colors[bucket], lw=1, label=label)
            ax.legend(fontsize=7)
        else:
            ax.plot(epochs, history[:, 0], color="k", lw=1.5, label="shared λ (mean over entries)")
            ax.legend(fontsize=7)
        ax.set(title=f"{role} λ (mean over dimensions)", xlabel="epoch", ylabel="λ")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_lambda_vs_frequency(epochs, entity_means, counts, per_entity, path):
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, role in zip(axes, ("user", "item")):
        final = entity_means[role][-1]
        ax.scatter(np.maximum(counts[role], 1), final, s=4, alpha=0.5)
        ax.set_xscale("log")
        title = f"{role}: final mean λ vs training interactions"
        if per_entity[role]:
            title += f"\nSpearman ρ = {spearmanr(counts[role], final).statistic:.3f}"
        ax.set(title=title, xlabel="interactions in train (log)", ylabel="λ")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
