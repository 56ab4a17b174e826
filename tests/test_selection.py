"""Epoch selection that does not pick an undertrained epoch: a smoothed monitor and warm-up epochs.

The validation curve below is the shape measured on ML-100K with Adam lr 1e-3: a popularity-like
model spikes in epochs 1–3, the curve dips, then climbs slowly past the spike. Judged on raw values
with early stopping, patience decides whether the spike or the real optimum is kept."""
import numpy as np
import pytest
import torch

from lambdaopt.experiment import build_parts, build_trainer
from lambdaopt.tracking import NullTracker

from conftest import TINY, compose_config

SPIKE_THEN_CLIMB = ([0.163, 0.167, 0.160, 0.142, 0.146] + [0.147 + 0.0006 * e + 0.002 * (-1) ** e for e in range(45)]
                    + [0.174 - 0.001 * e for e in range(30)])  # overfitting after epoch 50


def fit_on_curve(curve, **trainer):
    cfg = compose_config([*TINY, "tracking.enabled=false", f"trainer.max_epochs={len(curve)}",
                          *(f"trainer.{k}={v}" for k, v in trainer.items())])
    parts = build_parts(cfg, torch.device("cpu"))
    values = iter(curve)

    class Curve:  # an evaluator that reads its metric off `curve`, one value per evaluation
        log_prefix, trajectory = "valid", None

        def __call__(self, model):
            return {"ndcg@10": next(values), "auc": 0.5}

    parts.task.valid_evaluator = Curve()
    return build_trainer(cfg, parts, NullTracker()).fit()


@pytest.mark.parametrize("patience", [5, 10, 20])
def test_smoothed_monitor_after_warm_up_selects_the_real_optimum_whatever_the_patience(patience):
    fit = fit_on_curve(SPIKE_THEN_CLIMB, patience=patience, smoothing=3, min_epochs=10)
    smoothed = np.convolve(SPIKE_THEN_CLIMB, np.ones(3) / 3, mode="valid")
    assert fit.best_epoch == 3 + int(np.argmax(smoothed))  # the end of the best 3-epoch window
    assert 40 < fit.best_epoch < 55 and fit.best_valid["ndcg@10"] > max(SPIKE_THEN_CLIMB[:3]) - 0.005


def test_raw_monitor_keeps_the_spike_when_patience_is_short():
    fit = fit_on_curve(SPIKE_THEN_CLIMB, patience=5, smoothing=1, min_epochs=0)
    assert fit.best_epoch == 2 and fit.epochs_run == 7


def test_a_run_shorter_than_the_window_keeps_its_last_epoch():
    fit = fit_on_curve([0.1, 0.2], patience=5, smoothing=3, min_epochs=10)
    assert fit.best_epoch == 2 and fit.best_valid["ndcg@10"] == 0.2
