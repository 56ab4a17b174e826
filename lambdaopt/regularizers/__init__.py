"""Regularizers: a penalty on the factor rows a batch touches, and an optional λ update per step. Each
registers under its option name (`regularizer=<name>`, lambdaopt/registry.py)."""
from lambdaopt.regularizers import adversarial, fixed, lambdaopt  # noqa: F401  (each registers itself)
