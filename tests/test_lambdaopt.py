"""λOpt behaviour: λ shapes, non-negativity, no spurious movement, bad input, and the MLflow outputs."""
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from lambdaopt.config import validate
from lambdaopt.errors import ConfigError, TrainingDiverged
from lambdaopt.models.nuclear_norm import NuclearNormCompletion
from lambdaopt.regularizers import hypergrad
from lambdaopt.regularizers.lambdaopt import LambdaOpt
from lambdaopt.regularizers.lambdas import LambdaTables
from lambdaopt.regularizers.lookahead import optimizer_kind

from conftest import TINY, compose_config, run_in
from lookahead_setup import make_setup

U, I, D = 7, 5, 3
EXPECTED_SHAPES = {
    "global": {"shared": (1,)}, "d": {"shared": (D,)}, "double_d": {"user": (D,), "item": (D,)},
    "user": {"user": (U, 1), "item": (1,)}, "item": {"user": (1,), "item": (I, 1)},
    "user_item": {"user": (U, 1), "item": (I, 1)}, "du": {"user": (U, D), "item": (D,)},
    "di": {"user": (D,), "item": (I, D)}, "dui": {"user": (U, D), "item": (I, D)},
}


@pytest.mark.parametrize("granularity,shapes", EXPECTED_SHAPES.items())
def test_lambda_shapes_per_granularity(granularity, shapes):
    lam = LambdaTables(granularity, U, I, D)
    assert {name: tuple(p.shape) for name, p in lam.raw.items()} == shapes
    values = lam.values()
    rows = torch.tensor([0, 2, 2])
    for role in ("user", "item"):  # broadcastable against the gathered rows
        assert (lam.for_rows(role, rows, values) * torch.ones(3, D)).shape == (3, D)


@pytest.mark.parametrize("nonneg", ["clamp", "softplus", "exp"])
def test_lambda_stays_non_negative(dataset, nonneg):
    model, objective, optimizer, _, train, _ = make_setup(dataset, "adam", "dui")
    reg = LambdaOpt(granularity="dui", init=0.0 if nonneg == "clamp" else 1e-3, nonneg=nonneg, lambda_lr=0.5,
                    grad_clip=None)
    reg.setup(model, objective)
    reg.lam.double()
    for step, batch in enumerate(objective.batches(np.random.default_rng(1))):
        reg.update(model, optimizer, batch, step)
        fit, rows = objective.loss_and_rows(model, batch)
        loss = fit + reg.penalty(model, rows, len(batch[0]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for values in reg.lam.values().values():
        assert (values >= 0).all()
    assert any((v > 0).any() for v in reg.lam.values().values())  # and it did move


def test_lambda_does_not_move_when_validation_cannot_see_it(dataset):
    model, objective, optimizer, reg, train, _ = make_setup(dataset, "adam", "dui")
    before = {k: p.detach().clone() for k, p in reg.lam.raw.items()}
    users, positives, negatives = train
    seen_items = set(torch.cat([positives, negatives]).tolist())
    other_users = torch.tensor(sorted(set(range(dataset.n_users)) - set(users.tolist())))
    other_items = torch.tensor(sorted(set(range(dataset.n_items)) - seen_items))
    assert len(other_users) and len(other_items) >= 2
    disjoint = (other_users[:4], other_items[:1].repeat(4), other_items[1:2].repeat(4))
    objective.valid_batch = lambda rng, size: disjoint
    reg.update(model, optimizer, train, 0)
    for k, p in reg.lam.raw.items():
        assert torch.equal(p.grad, torch.zeros_like(p.grad))
        assert torch.equal(p.detach(), before[k])


def test_update_every_skips_steps(dataset):
    model, objective, optimizer, _, train, _ = make_setup(dataset, "sgd", "d")
    reg = LambdaOpt(granularity="d", update_every=3, lambda_lr=0.1)
    reg.setup(model, objective)
    reg.lam.double()
    reg.update(model, optimizer, train, 1)
    assert all(p.grad is None for p in reg.lam.parameters())
    reg.update(model, optimizer, train, 3)
    assert all(p.grad is not None for p in reg.lam.parameters())


def test_lookahead_valid_loss_is_the_mean_over_steps_and_survives_a_checkpoint(dataset):
    model, objective, optimizer, _, train, _ = make_setup(dataset, "adam", "dui")
    reg = LambdaOpt(granularity="dui", lambda_lr=0.1)
    reg.setup(model, objective)
    reg.lam.double()
    per_step = []
    for step in range(3):
        reg.update(model, optimizer, train, step)
        per_step.append(float(reg.valid_loss_sum) - sum(per_step))
    state = reg.get_extra_state()
    assert reg.metrics()["lookahead_valid_loss"] == pytest.approx(np.mean(per_step), rel=1e-12)
    assert reg.valid_loss_steps == 0  # reset by metrics(): one mean per evaluation
    reg.set_extra_state(state)  # as a resumed run: the sum so far comes back
    assert reg.metrics()["lookahead_valid_loss"] == pytest.approx(np.mean(per_step), rel=1e-12)
    # a checkpoint written before the running sum kept the per-step losses as a list
    reg.set_extra_state({**{k: v for k, v in state.items() if not k.startswith("valid_loss")},
                         "valid_losses": [torch.tensor(v, dtype=torch.float64) for v in per_step]})
    assert reg.metrics()["lookahead_valid_loss"] == pytest.approx(np.mean(per_step), rel=1e-12)


def test_nan_hypergradient_stops_with_a_reason(dataset):
    model, objective, optimizer, reg, train, _ = make_setup(dataset, "adam", "dui")
    with torch.no_grad():
        model.user_embedding[train[0][0]] = float("nan")
    with pytest.raises(TrainingDiverged, match="NaN"):
        reg.update(model, optimizer, train, 0)


@pytest.mark.parametrize("override,key", [
    ("regularizer.unroll_steps=0", "regularizer.unroll_steps"),
    ("regularizer.lambda_lr=0", "regularizer.lambda_lr"),
    ("regularizer.validation_share=0", "regularizer.validation_share"),
    ("regularizer.granularity=per_galaxy", "regularizer.granularity"),
])
def test_bad_lambdaopt_values_name_the_key(override, key):
    cfg = compose_config(["regularizer=lambdaopt_dui", override])
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(cfg)


def test_model_without_factor_tables_is_rejected(dataset):
    model, objective, *_ = make_setup(dataset, "sgd", "d")
    with pytest.raises(ConfigError, match="factor tables"):
        LambdaOpt().setup(NuclearNormCompletion(2, 2), objective)  # a model with no per-user/item tables


@pytest.mark.slow
def test_lambdaopt_run_logs_trajectories_metrics_and_figures(tmp_path):
    run_in(tmp_path, [*TINY, "regularizer=lambdaopt_dui", "regularizer.lambda_lr=1e-2"])
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    run = client.search_runs([client.get_experiment_by_name("lambdaopt").experiment_id])[0]
    assert run.info.status == "FINISHED"
    for role in ("user", "item"):
        for stat in ("mean", "median", "p10", "p90", "max", "frac_zero"):
            assert f"reg/{role}/lambda_{stat}" in run.data.metrics
        assert f"{role}/lambda_count_spearman" in run.data.metrics
    assert "reg/lookahead_valid_loss" in run.data.metrics
    snapshots = [a.path for a in client.list_artifacts(run.info.run_id, "lambda_trajectory")]
    assert sorted(snapshots) == sorted(f"lambda_trajectory/{role}_epoch000{e}.parquet"
                                       for role in ("user", "item") for e in (1, 2, 3))
    local = client.download_artifacts(run.info.run_id, "lambda_trajectory/user_epoch0003.parquet", str(tmp_path))
    frame = pd.read_parquet(local)
    assert list(frame.columns) == ["entity"] + [f"l{k}" for k in range(8)] and (frame.iloc[:, 1:] >= 0).all().all()
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert figures == {f"figures/{name}.{kind}" for name in ("lambda_trajectories", "lambda_vs_frequency")
                       for kind in ("png", "pdf")}


@pytest.mark.parametrize("granularity", ["dui", "user_item"])
def test_sparse_lambda_rows_give_the_dense_hypergradient_and_update_only_touched_rows(dataset, granularity):
    model, objective, optimizer, _, train, valid = make_setup(dataset, "adam", granularity)
    kind, hp = optimizer_kind(optimizer), optimizer.param_groups[0]
    dense, sparse = (LambdaOpt(granularity=granularity, lambda_optimizer=name) for name in ("adam", "sparse_adam"))
    for reg in (dense, sparse):
        reg.setup(model, objective)
        reg.lam.double()
        with torch.no_grad():
            for p in reg.lam.raw.values():
                p.fill_(0.1)
        problem = hypergrad.compact_problem(model, objective, optimizer, kind, train, valid)
        hypergrad.one_step_hypergrad(model, objective, problem, reg.lam, kind, hp)
    for name, p in sparse.lam.raw.items():
        assert p.grad.is_sparse
        torch.testing.assert_close(p.grad.to_dense(), dense.lam.raw[name].grad, rtol=1e-12, atol=1e-15)
    # a real update moves exactly the λ rows with a non-zero hypergradient — users/items of the train batch
    # that the validation batch also reaches — and no other
    before = {n: p.detach().clone() for n, p in sparse.lam.raw.items()}
    objective.valid_batch = lambda rng, size: valid
    sparse.update(model, optimizer, train, 0)
    touched = {"user": train[0], "item": torch.cat(train[1:])}
    for role, name in sparse.lam.param_of_role.items():
        moved = (sparse.lam.raw[name].detach() != before[name]).any(1)
        expected = (dense.lam.raw[name].grad != 0).any(1)
        in_batch = torch.zeros(len(moved), dtype=torch.bool)
        in_batch[touched[role]] = True
        assert expected.any() and not (expected & ~in_batch).any()
        assert torch.equal(moved, expected), role
        assert (sparse.lam.raw[name] >= 0).all()


@pytest.mark.parametrize("options,needle", [({"granularity": "du"}, "per-user and per-item"),
                                            ({"hypergrad": "unrolled"}, "one-step"),
                                            ({"nonneg": "softplus", "init": 1e-3}, "nonneg=clamp")])
def test_sparse_lambda_optimizer_rejects_what_it_cannot_do(dataset, options, needle):
    model, objective, *_ = make_setup(dataset, "adam", "dui")
    with pytest.raises(ConfigError, match=needle):
        LambdaOpt(lambda_optimizer="sparse_adam", **{"granularity": "dui", **options}).setup(model, objective)
