"""Shared helpers: compose the real configs, and run the real entry point on tiny data."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import lambdaopt

ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = str(ROOT / "lambdaopt" / "conf")

# A synthetic set small enough that a whole run takes a couple of seconds.
TINY = [
    "dataset.n_users=150",
    "dataset.n_items=120",
    "dataset.mean_interactions=15",
    "model.dim=8",
    "trainer.max_epochs=3",
    "trainer.batch_size=256",
    "evaluation.ks=[5,10]",
]


def compose_config(overrides: list[str] | None = None):
    return lambdaopt.compose(overrides or [])


def run_cli(args: list[str], cwd: Path, timeout: int = 300, env: dict | None = None,
            script: Path = ROOT / "run.py") -> subprocess.CompletedProcess:
    """`python run.py ARGS` in `cwd` (so mlflow.db and outputs/ land there); `env` adds variables."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, str(script), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env)


@pytest.fixture
def tiny_overrides():
    return list(TINY)


@pytest.fixture(autouse=True)
def _isolated_tracking_uri(monkeypatch):
    """`mlflow.set_tracking_uri` (called by in-process runs) also sets MLFLOW_TRACKING_URI; keep one test's
    tracking database from becoming the next test's default."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
