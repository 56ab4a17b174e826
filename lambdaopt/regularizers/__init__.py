"""Regularizers: a penalty on the factor rows a batch touches, and an optional λ update per step."""
