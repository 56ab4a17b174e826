"""Recommender models. Each scores (user, item) pairs and full rows of the user × item matrix, and
registers under its option name (`model=<name>`, lambdaopt/registry.py)."""
from lambdaopt.models import deep_mf, mf, neumf, nuclear_norm, svd_mf  # noqa: F401  (each registers itself)
