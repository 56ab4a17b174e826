"""Regularizers: a penalty on the factor rows a batch touches, and an optional λ update per step. Each
registers under its option name (`regularizer=<name>`, lambdaopt/registry.py)."""
import importlib
import pkgutil

# Every module here is imported, so a class registered in a new file is found with no edit elsewhere.
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
