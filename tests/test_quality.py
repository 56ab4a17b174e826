"""The trained model is better than the non-personalized baseline on the default data."""
import pytest

from lambdaopt.experiment import run
from lambdaopt.metrics import RankingEvaluator
from lambdaopt.models.popularity import Popularity
from hydra.utils import instantiate

from conftest import compose_config

pytestmark = pytest.mark.slow


def test_default_mf_beats_popularity_on_test_ndcg(tmp_path):
    cfg = compose_config(["tracking.enabled=false"])
    test = run(cfg).test
    dataset = instantiate(cfg.dataset)
    popularity = RankingEvaluator(dataset.n_users, dataset.n_items, dataset.test,
                                  dataset.train.concat(dataset.valid), ks=cfg.evaluation.ks)(
        Popularity(dataset.n_items, dataset.train))
    assert test["ndcg@10"] > 1.1 * popularity["ndcg@10"]
    assert test["auc"] > popularity["auc"]


def test_lambdaopt_dui_matches_the_best_validation_selected_fixed_lambda():
    """The issue's bar: λOpt-DUI (defaults) ≥ the fixed-λ grid's validation-selected model on test NDCG@10."""
    grid = {lam: run(compose_config(["tracking.enabled=false", f"regularizer.lam={lam}"]))
            for lam in (0.0, 1e-4, 1e-3, 1e-2, 1e-1)}
    best_lam = max(grid, key=lambda lam: grid[lam].valid["ndcg@10"])
    learned = run(compose_config(["tracking.enabled=false", "regularizer=lambdaopt_dui"]))
    assert learned.test["ndcg@10"] >= grid[best_lam].test["ndcg@10"]
