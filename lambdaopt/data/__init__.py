"""Interaction data: containers, generators/loaders, per-user splits and negative sampling."""
from lambdaopt.data.interactions import Interactions, SplitDataset

__all__ = ["Interactions", "SplitDataset"]
