"""The trained model is better than the non-personalized baseline on the default data."""
import pytest

from lambdaopt.experiment import run
from lambdaopt.evaluation.ranking import RankingEvaluator
from lambdaopt.models.popularity import Popularity
from hydra.utils import instantiate

from conftest import compose_config

# quality comparisons (results, not code paths): `-m research` selects them, `-m 'not research'` leaves them out;
# CI runs them
pytestmark = [pytest.mark.slow, pytest.mark.research]


GRID = (0.0, 1e-3, 3e-3, 5e-3, 1e-2, 3e-2)


@pytest.fixture(scope="module")
def fixed_grid():
    """{λ: result} of the default experiment at each λ of the grid; the default λ is one of them."""
    return {lam: run(compose_config(["tracking.enabled=false", f"regularizer.lam={lam}"])) for lam in GRID}


def test_default_mf_beats_popularity_on_test_ndcg(fixed_grid):
    cfg = compose_config(["tracking.enabled=false"])
    test = fixed_grid[cfg.regularizer.lam].test  # the default run
    dataset = instantiate(cfg.dataset)
    popularity = RankingEvaluator(dataset.n_users, dataset.n_items, dataset.test,
                                  dataset.train.concat(dataset.valid), ks=cfg.evaluation.ks)(
        Popularity(dataset.n_items, dataset.train))
    assert test["ndcg@10"] > 1.1 * popularity["ndcg@10"]
    assert test["auc"] > popularity["auc"]


def test_lambdaopt_dui_matches_the_validation_selected_fixed_lambda_within_noise(fixed_grid):
    """λOpt-DUI (defaults) against the fixed-λ grid's validation-selected model, on test NDCG@10.

    With the strong defaults (item bias, SGD; README, Strong baselines) the tuned fixed λ is hard to
    beat here: measured, the grid selects λ = 5e-3 (test .215) and λOpt-DUI reaches .212 — a match within
    the seed-to-seed spread (≈ .003), not a win. The test keeps it a match, and λOpt above no penalty."""
    best_lam = max(fixed_grid, key=lambda lam: fixed_grid[lam].valid["ndcg@10"])
    learned = run(compose_config(["tracking.enabled=false", "regularizer=lambdaopt_dui"]))
    assert learned.test["ndcg@10"] >= fixed_grid[best_lam].test["ndcg@10"] - 0.005
    assert learned.test["ndcg@10"] > fixed_grid[0.0].test["ndcg@10"] + 0.005
