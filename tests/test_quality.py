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
    test = run(cfg)
    dataset = instantiate(cfg.dataset)
    popularity = RankingEvaluator(dataset.n_users, dataset.n_items, dataset.test,
                                  dataset.train.concat(dataset.valid), ks=cfg.evaluation.ks)(
        Popularity(dataset.n_items, dataset.train))
    assert test["ndcg@10"] > 1.1 * popularity["ndcg@10"]
    assert test["auc"] > popularity["auc"]
