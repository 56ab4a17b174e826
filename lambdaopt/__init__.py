"""lambdaopt: how much and where to regularize matrix-factorization recommenders.

The Python API (api.py): `compose(overrides)`, `run(cfg)`, `evaluate(scores, heldout, excluded)`.
"""
from lambdaopt.api import compose, evaluate, run

__version__ = "0.1.0"
__all__ = ["compose", "evaluate", "run"]
