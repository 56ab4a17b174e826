"""Deep MF, SVD MF, GroupRMSprop, nuclear-norm solvers, low-rank data and completion/rating metrics."""
import sys

import numpy as np
import pytest
import torch

from lambdaopt.data.lowrank import load_lowrank
from lambdaopt.evaluation.completion import CompletionEvaluator, effective_rank, spectrum_metrics
from lambdaopt.models.nuclear_norm import NuclearNormCompletion
from lambdaopt.tasks.completion import FullBatchMSE
from lambdaopt.data.interactions import Interactions, SplitDataset
from lambdaopt.errors import ConfigError
from lambdaopt.models.deep_mf import DeepMatrixFactorization
from lambdaopt.models.svd_mf import SVDMatrixFactorization
from lambdaopt.optimizers import GroupRMSprop
from lambdaopt.evaluation.rating import RatingEvaluator
from lambdaopt.tasks.rating import RatingObjective


# ----------------------------------------------------------------------------- models
@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("init", ["gaussian", "identity", "orthogonal"])
def test_deep_mf_init_norm_is_init_scale_sqrt_n(depth, init):
    torch.manual_seed(0)
    n, scale = 100, 1e-3
    model = DeepMatrixFactorization(n, n, depth=depth, init=init, init_scale=scale)
    norm = float(model.matrix().detach().norm())
    tolerance = 0.25 if init == "gaussian" else 1e-4  # identity / orthogonal products are exact
    assert abs(norm / (scale * n ** 0.5) - 1) < tolerance


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_deep_mf_product_scores_and_rows_agree(depth):
    torch.manual_seed(0)
    model = DeepMatrixFactorization(7, 5, depth=depth, hidden_sizes=[4] * (depth - 1), init_scale=1.0)
    product = model.factors()[0]
    for factor in model.factors()[1:]:
        product = product @ factor
    assert product.shape == (7, 5)
    torch.testing.assert_close(model.matrix(), product)
    users, items = torch.tensor([0, 3, 6, 6]), torch.tensor([4, 0, 2, 4])
    torch.testing.assert_close(model.score(users, items), product[users, items])
    torch.testing.assert_close(model.score_all(torch.tensor([1, 5])), product[[1, 5]])


def test_deep_mf_rejects_depth_zero_and_wrong_widths():
    with pytest.raises(ConfigError, match="model.depth"):
        DeepMatrixFactorization(5, 5, depth=0)
    with pytest.raises(ConfigError, match="hidden_sizes"):
        DeepMatrixFactorization(5, 5, depth=3, hidden_sizes=[4])


def test_svd_mf_stays_orthogonal_after_training_steps():
    torch.manual_seed(0)
    data = load_lowrank(n=12, m=9, rank=2, n_train_samples=60, seed=0)
    model = SVDMatrixFactorization(12, 9, depth=3, init_scale=1e-2)
    objective = FullBatchMSE(data, "cpu")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    start = model.matrix().detach().clone()
    for batch in [objective.batch] * 30:
        optimizer.zero_grad()
        objective.loss(model, batch).backward()
        optimizer.step()
    assert not torch.allclose(model.matrix(), start)  # it did move
    eye = torch.eye(9)
    with torch.no_grad():
        assert float((model.U.T @ model.U - eye).abs().max()) < 1e-5
        assert float((model.V.T @ model.V - eye).abs().max()) < 1e-5
    torch.testing.assert_close(model.matrix(), (model.U * model.sigma ** 3) @ model.V.T)  # Vᵀ, not a random matrix
    assert abs(float(SVDMatrixFactorization(10, 10, init_scale=1e-3).matrix().detach().norm()) - 1e-3 * 10 ** 0.5) < 1e-8


def test_svd_mf_rejects_rank_it_cannot_hold():
    with pytest.raises(ConfigError, match="model.rank=10"):
        SVDMatrixFactorization(10, 6, rank=10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_svd_mf_on_gpu():
    model = SVDMatrixFactorization(20, 20).cuda()
    model.matrix().sum().backward()
    assert model.sigma.grad is not None and model.sigma.grad.is_cuda


# ----------------------------------------------------------------------------- GroupRMSprop
def test_group_rmsprop_step_equals_its_definition():
    torch.manual_seed(0)
    a, b = torch.nn.Parameter(torch.randn(3, 4)), torch.nn.Parameter(torch.randn(5))
    optimizer = GroupRMSprop([{"params": [a]}, {"params": [b], "lr": 0.3}], lr=0.1, alpha=0.9, eps=1e-4)
    expected_a, expected_b, v = a.detach().clone(), b.detach().clone(), 0.0
    for t in range(1, 4):
        ga, gb = torch.randn(3, 4), torch.randn(5)
        a.grad, b.grad = ga.clone(), gb.clone()
        optimizer.step()
        v = 0.9 * v + 0.1 * float(ga.square().sum() + gb.square().sum())
        denominator = (v / (1 - 0.9 ** t)) ** 0.5 + 1e-4
        expected_a -= 0.1 / denominator * ga
        expected_b -= 0.3 / denominator * gb
        torch.testing.assert_close(a.detach(), expected_a)
        torch.testing.assert_close(b.detach(), expected_b)
    restored = GroupRMSprop([{"params": [torch.nn.Parameter(torch.zeros(3, 4))]},
                             {"params": [torch.nn.Parameter(torch.zeros(5))]}])
    restored.load_state_dict(optimizer.state_dict())
    assert restored.second_moment == pytest.approx(v) and restored.steps == 3


# ----------------------------------------------------------------------------- data
def test_lowrank_data_matches_its_definition():
    data = load_lowrank(n=30, m=20, rank=3, n_train_samples=200, seed=4)
    assert np.linalg.matrix_rank(data.truth.astype(np.float64), tol=1e-3) == 3
    assert np.linalg.norm(data.truth) == pytest.approx(np.sqrt(30 * 20), rel=1e-5)
    flat = data.rows * 20 + data.cols
    assert len(np.unique(flat)) == 200  # without replacement
    np.testing.assert_array_equal(data.values, data.truth[data.rows, data.cols])
    again = load_lowrank(n=30, m=20, rank=3, n_train_samples=200, seed=4)
    assert data.fingerprint == again.fingerprint


def test_sensing_loss_estimates_all_entries_mse():
    data = load_lowrank(n=10, rank=2, n_train_samples=4000, sensing=True, seed=0)
    objective = FullBatchMSE(data, "cpu")
    model = NuclearNormCompletion(10, 10)  # a zero matrix: loss = mean y² ≈ ‖W*‖²/(nm) = 1
    assert float(objective.loss(model, objective.batch)) == pytest.approx(1.0, rel=0.1)


@pytest.mark.parametrize("kwargs,key", [
    (dict(n=10, rank=11), "dataset.rank"),
    (dict(n=10, m=4, rank=5), "dataset.rank"),
    (dict(n=10, n_train_samples=101), "dataset.n_train_samples"),
    (dict(n=10, n_train_samples=0), "dataset.n_train_samples"),
])
def test_lowrank_bad_sizes_name_the_key(kwargs, key):
    with pytest.raises(ConfigError) as error:
        load_lowrank(**kwargs)
    assert str(error.value).startswith(key) and "\n" not in str(error.value)


# ----------------------------------------------------------------------------- nuclear norm
@pytest.mark.parametrize("solver", ["svt", "soft_impute", "cvxpy"])
def test_nuclear_norm_recovers_rank_two_from_sixty_percent(solver):
    data = load_lowrank(n=20, rank=2, n_train_samples=240, seed=0)
    model = NuclearNormCompletion(20, 20, solver=solver, tolerance=1e-6)
    model.solve(data)
    error = np.linalg.norm(model.matrix().numpy() - data.truth) / np.linalg.norm(data.truth)
    assert error < 1e-3


def test_nuclear_norm_cvxpy_missing_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "cvxpy", None)  # makes `import cvxpy` raise ImportError
    model = NuclearNormCompletion(20, 20, solver="cvxpy")
    with pytest.raises(ConfigError, match=r"pip install '\.\[convex\]'"):
        model.solve(load_lowrank(n=20, rank=2, n_train_samples=240))


# ----------------------------------------------------------------------------- metrics
def test_completion_metrics_match_numpy():
    torch.manual_seed(0)
    data = load_lowrank(n=15, m=12, rank=2, n_train_samples=80, seed=1)
    model = DeepMatrixFactorization(15, 12, depth=2, init_scale=3.0)
    objective = FullBatchMSE(data, "cpu")
    objective.loss(model, objective.batch).backward()
    metrics = CompletionEvaluator(data, objective, top_k=3)(model)
    w = model.matrix().detach().double().numpy()
    truth = data.truth.astype(np.float64)
    sigma = np.linalg.svd(w, compute_uv=False)
    p = sigma / sigma.sum()
    assert metrics["train_mse"] == pytest.approx(np.mean((w[data.rows, data.cols] - data.values) ** 2), rel=1e-4)
    assert metrics["relative_error"] == pytest.approx(np.sum((w - truth) ** 2) / np.sum(truth ** 2), rel=1e-4)
    # the one error metric is also the all-entries MSE (‖W*‖² = n·m), so no second name for it is logged
    assert metrics["relative_error"] == pytest.approx(np.mean((w - truth) ** 2), rel=1e-4) and "test_mse" not in metrics
    assert metrics["nuclear_norm"] == pytest.approx(sigma.sum(), rel=1e-5)
    assert metrics["effective_rank"] == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-5)
    assert [metrics[f"sigma_{i}"] for i in (1, 2, 3)] == pytest.approx(sigma[:3], rel=1e-5)
    grads = np.sqrt(sum(float(q.grad.square().sum()) for q in model.parameters()))
    assert metrics["grad_norm"] == pytest.approx(grads, rel=1e-5)
    assert effective_rank(torch.tensor([1.0, 0.0, 0.0])) == pytest.approx(1.0)
    assert effective_rank(torch.ones(4)) == pytest.approx(4.0)


def test_rating_objective_and_metrics_match_numpy():
    rng = np.random.default_rng(0)
    train = Interactions.from_arrays(rng.integers(0, 6, 40), rng.integers(0, 5, 40), ratings=rng.integers(1, 6, 40))
    test = Interactions.from_arrays(rng.integers(0, 6, 15), rng.integers(0, 5, 15), ratings=rng.integers(1, 6, 15))
    dataset = SplitDataset("toy", 6, 5, train, test, test)
    torch.manual_seed(0)
    model = DeepMatrixFactorization(6, 5, depth=2, init_scale=2.0)
    objective = RatingObjective(dataset, batch_size=8, device="cpu")
    metrics = RatingEvaluator(test, objective, spectrum_top_k=2)(model)
    w = model.matrix().detach().double().numpy() + train.ratings.mean()
    error = w[test.users, test.items] - test.ratings
    assert metrics["rmse"] == pytest.approx(np.sqrt(np.mean(error ** 2)), rel=1e-5)
    assert metrics["mae"] == pytest.approx(np.mean(np.abs(error)), rel=1e-5)
    assert "sigma_2" in metrics and "effective_rank" in metrics
    batches = list(objective.batches(np.random.default_rng(0)))
    assert len(batches) == 5 and sum(len(b[0]) for b in batches) == 40
    full = RatingObjective(dataset, batch_size=8, device="cpu", full_batch=True, steps_per_epoch=3)
    assert [len(b[0]) for b in full.batches(np.random.default_rng(0))] == [40, 40, 40]


def test_spectrum_metrics_of_a_known_matrix():
    matrix = torch.diag(torch.tensor([3.0, 2.0, 0.0]))
    metrics, sigma = spectrum_metrics(matrix, top_k=2)
    assert metrics["nuclear_norm"] == pytest.approx(5.0)
    assert (metrics["sigma_1"], metrics["sigma_2"]) == pytest.approx((3.0, 2.0))
    assert NuclearNormCompletion(2, 2).matrix().shape == (2, 2)
