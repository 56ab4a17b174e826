"""λ's own validation data: a holdout carved from each user's training interactions, per split method.

Invariants: the holdout and what the model fits on partition the training split; the holdout never
meets the validation split (epoch selection) nor the training triples; every user with ≥ 2 training
interactions has ≥ 1 holdout interaction and ≥ 1 left to fit; its size follows the split method."""
import numpy as np
import pytest
import torch

from lambdaopt.data.splits import carve_holdout, lambda_data_split, split_per_user
from lambdaopt.experiment import build_parts

from conftest import TINY, compose_config
from builders import pairs, random_log

METHODS = ["temporal", "random", "leave_one_out"]


@pytest.mark.parametrize("method", METHODS)
def test_holdout_and_fit_partition_train_and_cover_every_user(method):
    log = random_log(min_per_user=4)
    train, valid, _ = split_per_user(log, 60, method, 0.2, 0.25, seed=3)
    fit, holdout = carve_holdout(train, 60, method, 0.1, seed=3)
    assert len(fit) + len(holdout) == len(train)
    assert pairs(fit) | pairs(holdout) == pairs(train) and not pairs(fit) & pairs(holdout)
    assert not pairs(holdout) & pairs(valid)
    n_train = np.bincount(train.users, minlength=60)
    n_hold = np.bincount(holdout.users, minlength=60)
    n_fit = np.bincount(fit.users, minlength=60)
    assert ((n_hold >= 1) == (n_train >= 2)).all() and (n_fit >= 1)[n_train >= 1].all()
    if method == "leave_one_out":
        assert (n_hold == (n_train >= 2)).all()
    else:
        expected = np.where(n_train >= 2, np.minimum(np.maximum(1, np.rint(0.1 * n_train)), n_train - 1), 0)
        assert (n_hold == expected).all()


@pytest.mark.parametrize("method", ["temporal", "leave_one_out"])
def test_temporal_holdout_is_each_users_latest_training_interactions(method):
    log = random_log(min_per_user=4)
    train, _, _ = split_per_user(log, 60, method, 0.2, 0.25)
    fit, holdout = carve_holdout(train, 60, method, 0.25)
    for user in range(60):
        held, kept = holdout.timestamps[holdout.users == user], fit.timestamps[fit.users == user]
        if len(held):
            assert held.min() >= kept.max()


def test_a_user_with_one_training_interaction_keeps_it_for_fitting():
    from lambdaopt.data.interactions import Interactions

    train = Interactions.from_arrays([0, 1, 1, 1], [0, 0, 1, 2], [5, 1, 2, 3])
    fit, holdout = carve_holdout(train, 2, "temporal", 0.3)
    assert pairs(fit) == {(0, 0), (1, 0), (1, 1)} and pairs(holdout) == {(1, 2)}


@pytest.mark.parametrize("method", METHODS)
def test_lambda_data_split_covers_every_user_and_never_meets_selection(method):
    log = random_log(min_per_user=6)
    train, valid, _ = split_per_user(log, 60, method, 0.2, 0.25, seed=3)
    fit, learn_valid, holdout, select = lambda_data_split(train, valid, 60, method, 0.5, seed=3)
    assert pairs(fit) | pairs(holdout) == pairs(train) and not pairs(fit) & pairs(holdout)
    assert pairs(learn_valid) | pairs(select) == pairs(valid) and not pairs(learn_valid) & pairs(select)
    learn = pairs(learn_valid) | pairs(holdout)
    assert not learn & pairs(select)
    n_valid = np.bincount(valid.users, minlength=60)
    users_learning = {u for u, _ in learn}
    assert users_learning == set(range(60)) == {u for u, _ in pairs(select)}  # every user: both sides
    # a user with ≥ 2 validation interactions lends λ validation data only; a user with one, a training one
    assert {u for u, _ in pairs(holdout)} == set(np.flatnonzero(n_valid == 1).tolist())
    if method == "leave_one_out":
        assert len(holdout) == 60 and not learn_valid
    shares = np.bincount(learn_valid.users, minlength=60)[n_valid >= 2] / n_valid[n_valid >= 2]
    assert np.allclose(shares, 0.5, atol=0.5 / 2)  # round(share · n) of each user's validation interactions


@pytest.mark.parametrize("method", METHODS)
def test_lambdaopt_trains_on_fit_learns_on_its_data_and_selects_on_the_rest(method):
    cfg = compose_config([*TINY, "regularizer=lambdaopt_dui", f"dataset.split.method={method}",
                          "tracking.enabled=false"])
    parts = build_parts(cfg, torch.device("cpu"))
    dataset, objective = parts.dataset, parts.task.objective
    learn = pairs(objective.lambda_valid)
    held_train = learn & pairs(dataset.train)
    assert pairs(objective.fit) == pairs(dataset.train) - held_train
    trained = set()
    for users, positives, _ in objective.batches(np.random.default_rng(0)):
        trained |= set(zip(users.tolist(), positives.tolist()))
    assert trained == pairs(objective.fit) and not trained & learn  # every fit positive once, nothing of λ's
    users, items, negatives = (t.numpy() for t in objective.valid_batch(np.random.default_rng(1), 500))
    assert set(zip(users.tolist(), items.tolist())) <= learn
    assert not set(zip(users.tolist(), negatives.tolist())) & (pairs(dataset.train) | learn)
    # epoch selection: the validation interactions λ never drew from
    evaluator = parts.task.valid_evaluator
    assert len(evaluator.heldout_items) == len(pairs(dataset.valid) - learn)
    users_with_data = set(dataset.train.users.tolist())
    assert {u for u, _ in learn} == users_with_data
    assert parts.regularizer.uncovered_users == 0.0


def test_lambda_data_validation_keeps_the_old_protocol():
    cfg = compose_config([*TINY, "regularizer=lambdaopt_dui", "regularizer.lambda_data=validation",
                          "tracking.enabled=false"])
    parts = build_parts(cfg, torch.device("cpu"))
    objective, dataset = parts.task.objective, parts.dataset
    assert pairs(objective.fit) == pairs(dataset.train)
    assert pairs(objective.lambda_valid) < pairs(dataset.valid)  # a share; the rest selects the epoch
