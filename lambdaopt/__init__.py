"""lambdaopt: how much and where to regularize matrix-factorization recommenders."""

__version__ = "0.1.0"
