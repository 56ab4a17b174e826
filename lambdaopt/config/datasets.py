"""Schemas of the real datasets: MovieLens 100K / 1M / 10M and Amazon Fine Food.

All four share one set of options (`RealDatasetConfig`); each subclass only sets its defaults.
The `_target_` (lambdaopt.data.real.load_dataset) fetches or reads the raw file, applies the
preprocessing below and caches the splits (see README, "Datasets").
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from lambdaopt.config.checks import Check, field_with, non_negative, one_of, seed_range
from lambdaopt.config.core import SplitConfig


def null_or_positive() -> dict:
    return {"check": Check(lambda v: v is None or v > 0, "null or a number > 0")}


@dataclass
class RealDatasetConfig:
    _target_: str = "lambdaopt.data.real.load_dataset"
    name: str = field_with("ml-100k", one_of("ml-100k", "ml-1m", "ml-10m", "amazon-food"))
    # A raw file the user already has (u.data, ratings.dat, Reviews.csv, finefoods.txt[.gz]);
    # null → the cached copy, fetched on first use where the publisher allows it.
    path: Optional[str] = None
    # null → $LAMBDAOPT_CACHE, else ~/.cache/lambdaopt ($XDG_CACHE_HOME/lambdaopt).
    cache_dir: Optional[str] = None
    feedback: str = field_with("implicit", one_of("implicit", "explicit"))
    # implicit: rows with rating ≥ threshold are positives; null → every rating is a positive (λOpt).
    implicit_threshold: Optional[float] = field_with(None, null_or_positive())
    min_user_interactions: int = field_with(3, non_negative())
    min_item_interactions: int = field_with(0, non_negative())
    # false: one pass, items then users (the λOpt reference); true: repeat to a fixed point (k-core).
    iterative_filter: bool = False
    seed: int = field_with(0, seed_range())
    split: SplitConfig = field(default_factory=SplitConfig)


@dataclass
class MovieLens100KConfig(RealDatasetConfig):
    name: str = field_with("ml-100k", one_of("ml-100k"))


@dataclass
class MovieLens1MConfig(RealDatasetConfig):
    name: str = field_with("ml-1m", one_of("ml-1m"))


@dataclass
class MovieLens10MConfig(RealDatasetConfig):
    name: str = field_with("ml-10m", one_of("ml-10m"))


@dataclass
class AmazonFoodConfig(RealDatasetConfig):
    name: str = field_with("amazon-food", one_of("amazon-food"))
    min_user_interactions: int = field_with(20, non_negative())
    min_item_interactions: int = field_with(20, non_negative())


SCHEMAS = {
    "dataset": {
        "ml-100k": MovieLens100KConfig,
        "ml-1m": MovieLens1MConfig,
        "ml-10m": MovieLens10MConfig,
        "amazon-food": AmazonFoodConfig,
    },
}
