"""bench/peers.py on tiny synthetic data: cornac's and implicit's BPR tuned on validation, scored by
lambdaopt's own evaluator, beside the rows of a lambdaopt sweep read from MLflow; and
bench/select_on_validation.py, which selects on that sweep once per seed."""
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT, TINY, empty_store_in, run_in_process, run_script

sys.path.insert(0, str(ROOT / "bench"))
import peers  # noqa: E402

pytestmark = pytest.mark.slow
DATA = [o for o in TINY if o.startswith("dataset.")] + ["model.dim=8"]


def test_factor_scorer_ranks_cold_items_last_without_infinities():
    scorer = peers.FactorScorer(np.ones((2, 2)), np.array([[1.0, 0.0], [0.0, 2.0], [5.0, 5.0]]),
                                np.array([0.0, 0.5, 0.0]), cold=np.array([False, False, True]))
    scores = scorer.score_all(torch.tensor([0, 1]))
    assert torch.isfinite(scores).all() and (scores.argsort(dim=1)[:, 0] == 2).all()
    assert torch.allclose(scores[:, :2], torch.tensor([[1.0, 2.5], [1.0, 2.5]]))


@pytest.mark.parametrize("peer", ["cornac", "implicit"])
def test_tune_selects_the_best_validation_point_of_the_grid(peer):
    from lambdaopt.evaluation.ranking import RankingEvaluator
    from conftest import compose_config
    from hydra.utils import instantiate

    dataset = instantiate(compose_config(DATA).dataset)
    valid = RankingEvaluator(dataset.n_users, dataset.n_items, dataset.valid, dataset.train, ks=[5, 10])
    grid = {"lr": [0.01, 0.1], "reg": [1e-3, 1e-1]}
    best, trials = peers.tune(peer, dataset, 8, 0, grid, max_iter=6, eval_every=2, valid_eval=valid, monitor="ndcg@10")
    assert len(trials) == 4 and all([e for e, _ in t.curve] == [2, 4, 6] for t in trials)
    every_point = max(v for t in trials for _, v in t.curve)
    assert best.best_valid["ndcg@10"] == every_point  # the best (lr, reg, epochs) on validation
    assert best.best_valid == valid(best.best_scorer)  # the kept model is the one that scored it


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A λ × seed grid (2 × 2) with its MLflow parent run: (folder, tracking URI, parent run id)."""
    from mlflow.tracking import MlflowClient

    cwd = tmp_path_factory.mktemp("sweep")
    uri = f"sqlite:///{empty_store_in(cwd)}"
    done = run_in_process("run.py", ["-m", *TINY, "regularizer.lam=1e-3,1e-2", "seed=0,1", f"tracking.uri={uri}"],
                          cwd, {})
    assert done.returncode == 0, done.stderr
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("lambdaopt")
    parent = client.search_runs([experiment.experiment_id], "tags.sweep_role = 'parent'")[0].info.run_id
    return cwd, uri, parent


def test_peers_table_beside_a_lambdaopt_sweep(sweep, tmp_path, capsys):
    _, uri, parent = sweep
    out = tmp_path / "table.md"
    code = peers.main([*DATA, "--seeds", "0", "1", "--max-iter", "4", "--eval-every", "2", "--lr", "0.05",
                       "--reg", "0.01", "--metrics", "ndcg@10", "auc", "--parent", parent, "--uri", uri,
                       "--out", str(out)])
    assert code == 0
    table = out.read_text().splitlines()
    rows = [line.split("|")[1].strip() for line in table[2:]]
    assert rows == ["cornac BPR", "implicit BPR", "lambdaopt MF-λFix"]
    assert all(" ± " in line.split("|")[2] for line in table[2:])  # two seeds each
    # a split other than the sweep's is refused
    assert peers.main([*DATA, "dataset.split.method=random", "--seeds", "0", "--max-iter", "2", "--eval-every", "2",
                       "--lr", "0.05", "--reg", "0.01", "--parent", parent, "--uri", uri]) == 2
    assert "not on this one" in capsys.readouterr().err


def test_select_on_validation_selects_once_per_seed(sweep):
    from mlflow.tracking import MlflowClient

    _, uri, parent = sweep
    printed = run_script(ROOT / "bench" / "select_on_validation.py", "--uri", uri, "--ks", "5,10")
    marked = [line.split() for line in printed.splitlines() if line.endswith(" *")]
    assert sorted(row[0] for row in marked) == ["0", "1"]  # one selected run per seed, not one overall
    children = MlflowClient(uri).search_runs(
        [MlflowClient(uri).get_experiment_by_name("lambdaopt").experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'")
    for seed, lam, valid, *_ in marked:  # each the best validation value among its own seed's runs
        same_seed = [r for r in children if r.data.params["seed"] == seed]
        best = max(same_seed, key=lambda r: r.data.metrics["best_valid/ndcg_at_10_smoothed"])
        assert best.data.params["regularizer.lam"] == lam
    assert "selected on validation ndcg@10, per seed: seed 0:" in printed
