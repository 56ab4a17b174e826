"""optimizer=sparse_adam: factor rows gathered with sparse gradients, lazy Adam on the batch rows only
(and regularizer.lambda_optimizer=sparse_adam, the same for λOpt's λ rows)."""
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import lambdaopt
from conftest import TINY, fails_in_one_line
from lambdaopt.config.core import SplitConfig
from lambdaopt.data.synthetic import load_synthetic
from lambdaopt.models.mf import MatrixFactorization
from lambdaopt.tasks.ranking import BPRObjective
from lambdaopt.regularizers.fixed import FixedL2


@pytest.fixture(scope="module")
def setup():
    dataset = load_synthetic(split=OmegaConf.structured(SplitConfig), n_users=60, n_items=80, rank=3,
                             mean_interactions=12, min_interactions=5, seed=4)
    objective = BPRObjective(dataset, 32, torch.device("cpu"))
    batch = next(iter(objective.batches(np.random.default_rng(0))))
    return dataset, objective, batch


def loss_and_grads(model, objective, batch):
    fit, rows = objective.loss_and_rows(model, batch)
    loss = fit + FixedL2(0.1).penalty(model, rows, len(batch[0]))
    model.zero_grad(set_to_none=True)
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters()}


def test_sparse_gradients_equal_the_dense_ones(setup):
    dataset, objective, batch = setup
    torch.manual_seed(0)
    model = MatrixFactorization(dataset.n_users, dataset.n_items, dim=6, init_std=0.3, item_bias=False).double()
    sparse_model = MatrixFactorization(dataset.n_users, dataset.n_items, dim=6, item_bias=False, sparse_grad=True)
    sparse_model.double().load_state_dict(model.state_dict())  # the same weights
    dense_loss, dense = loss_and_grads(model, objective, batch)
    sparse_loss, sparse = loss_and_grads(sparse_model, objective, batch)
    assert sparse_loss == dense_loss
    for name in dense:
        assert sparse[name].is_sparse and not dense[name].is_sparse
        torch.testing.assert_close(sparse[name].to_dense(), dense[name], rtol=1e-12, atol=1e-15)


def test_sparse_adam_moves_only_the_rows_in_the_batch(setup):
    dataset, objective, batch = setup
    torch.manual_seed(0)
    model = MatrixFactorization(dataset.n_users, dataset.n_items, dim=6, init_std=0.3, item_bias=False,
                                sparse_grad=True)
    optimizer = torch.optim.SparseAdam(model.parameters(), lr=0.05)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss_and_grads(model, objective, batch)
    optimizer.step()
    users, positives, negatives = batch
    touched = {"user_embedding": users, "item_embedding": torch.cat([positives, negatives])}
    for name, param in model.named_parameters():
        moved = (param.detach() != before[name]).any(1)
        expected = torch.zeros(len(moved), dtype=torch.bool)
        expected[touched[name]] = True
        assert torch.equal(moved, expected), name


@pytest.mark.slow
def test_sparse_adam_runs_train_and_what_it_cannot_update_is_one_line():
    """In process (the command's own wiring is tested in test_run.py / test_bad_inputs.py)."""
    off = ["tracking.enabled=false"]
    assert lambdaopt.run([*TINY, *off, "optimizer=sparse_adam", "model.item_bias=false"]).test
    # λ rows updated lazily; the model keeps its dense optimizer
    assert lambdaopt.run([*TINY, *off, "regularizer=lambdaopt_dui", "regularizer.lambda_optimizer=sparse_adam"]).test
    for args, needle in (([*TINY, "regularizer=lambdaopt_dui", "model.item_bias=false"], "a penalty on the batch's rows only"),
                         ([*TINY], "item_bias"),
                         ([*TINY, "model.user_bias=true"], "user_bias"),
                         (["dataset=lowrank", "model=mf", "trainer.max_epochs=1"], "full matrix")):
        fails_in_one_line([*args, "optimizer=sparse_adam"], needle)
