"""Most-popular ranking: every user gets items ordered by their training interaction count."""
from __future__ import annotations

import numpy as np
import torch

from lambdaopt.data.interactions import Interactions


class Popularity:
    """The non-personalized baseline that any trained recommender must beat."""

    def __init__(self, n_items: int, train: Interactions, device="cpu"):
        self.counts = torch.as_tensor(np.bincount(train.items, minlength=n_items), dtype=torch.float32, device=device)

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self.counts.expand(len(users), -1)
