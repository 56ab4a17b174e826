"""The closed-form deep-MF completion step (tasks/completion_step.py) against the autograd step: the same
weights, optimizer state and spectrum snapshots after several steps, at every depth, square or not."""
import copy

import numpy as np
import pytest
import torch

from lambdaopt.data.lowrank import load_lowrank
from lambdaopt.evaluation.completion import CompletionEvaluator
from lambdaopt.models.deep_mf import DeepMatrixFactorization
from lambdaopt.optimizers import GroupRMSprop
from lambdaopt.regularizers.fixed import FixedL2, NoRegularizer
from lambdaopt.tasks.completion import FullBatchMSE
from lambdaopt.tasks.completion_step import ClosedFormProductStep
from lambdaopt.trainer import Trainer
from lambdaopt.tracking import NullTracker


def trainer(data, model, closed_form: bool, regularizer=None, optimizer=GroupRMSprop):
    objective = FullBatchMSE(data, "cpu", steps_per_epoch=7)
    evaluator = CompletionEvaluator(data, objective, top_k=3)
    objective.trajectory = evaluator.trajectory
    return Trainer(model, regularizer or NoRegularizer(), optimizer(model.parameters(), lr=1e-2), objective,
                   evaluator, NullTracker(), max_epochs=3, closed_form_step=closed_form)


@pytest.mark.parametrize("optimizer", [GroupRMSprop, torch.optim.Adam])
@pytest.mark.parametrize("depth,hidden", [(1, None), (2, None), (3, None), (4, [6, 8, 5])])
def test_closed_form_steps_match_autograd(depth, hidden, optimizer):
    torch.manual_seed(0)
    data = load_lowrank(n=12, m=9, rank=2, n_train_samples=60, seed=0)
    model = DeepMatrixFactorization(12, 9, depth=depth, hidden_sizes=hidden, init_scale=0.3)
    closed, reference = trainer(data, model, True, optimizer=optimizer), \
        trainer(data, copy.deepcopy(model), False, optimizer=optimizer)
    assert isinstance(closed.closed_form, ClosedFormProductStep) and reference.closed_form is None
    for _ in range(3):
        assert closed.train_epoch() == pytest.approx(reference.train_epoch(), rel=1e-5)
    for mine, theirs in zip(closed.model.parameters(), reference.model.parameters()):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(closed.model.matrix(), model.matrix() * 0)  # it trained
    mine, theirs = closed.objective.trajectory, reference.objective.trajectory
    assert mine.steps == theirs.steps and len(mine.steps) > 1
    torch.testing.assert_close(torch.as_tensor(np.array(mine.values)), torch.as_tensor(np.array(theirs.values)), rtol=1e-4, atol=1e-6)


def test_a_row_penalty_or_sensing_keeps_the_autograd_step():
    data = load_lowrank(n=12, m=9, rank=2, n_train_samples=60, seed=0)
    model = DeepMatrixFactorization(12, 9, depth=3)
    assert trainer(data, model, True, regularizer=FixedL2(1e-3)).closed_form is None
    sensing = load_lowrank(n=6, m=6, rank=2, n_train_samples=20, seed=0, sensing=True)
    objective = FullBatchMSE(sensing, "cpu")
    assert objective.closed_form_step(DeepMatrixFactorization(6, 6), NoRegularizer(), None) is None


@pytest.mark.parametrize("depth,hidden", [(2, None), (3, None), (4, [6, 8, 5])])
def test_compiled_sparse_step_equals_the_tensor_step_in_float64(depth, hidden):
    """The observed-entries pass (completion_kernel.py) with the transposed recursion against the dense
    products, to float64 rounding; a repeated observed entry counts twice in both."""
    torch.manual_seed(0)
    data = load_lowrank(n=12, m=9, rank=2, n_train_samples=60, seed=0)
    model = DeepMatrixFactorization(12, 9, depth=depth, hidden_sizes=hidden, init_scale=0.3).double()
    objective = FullBatchMSE(data, "cpu")
    rows, cols, values = objective.batch
    batch = (torch.cat([rows, rows[:5]]), torch.cat([cols, cols[:5]]), torch.cat([values, values[:5]]).double())
    objective.flat_index = batch[0] * data.n_items + batch[1]
    results = []
    for compiled in (True, False):
        mine = copy.deepcopy(model)
        step = ClosedFormProductStep(mine, objective, torch.optim.SGD(mine.parameters(), lr=0.0))
        assert step.kernel is not None
        if not compiled:
            step.kernel = None
        loss = step(batch)
        results.append((float(loss), [p.grad.clone() for p in step.model.parameters()]))
    (loss, grads), (reference_loss, reference_grads) = results
    assert loss == pytest.approx(reference_loss, rel=1e-12)
    for mine, theirs in zip(grads, reference_grads):
        assert theirs.abs().max() > 0
        torch.testing.assert_close(mine, theirs, rtol=1e-10, atol=1e-15)


def test_group_rmsprop_takes_the_compiled_step_without_its_wrapper():
    """GroupRMSprop over exactly the factor tables (two groups, two learning rates) is stepped through
    `apply_to` with the step's own lists: the same bits as its `apply_gradients`; an optimizer holding other
    parameters too keeps its own step."""
    data = load_lowrank(n=12, m=9, rank=2, n_train_samples=60, seed=0)
    results = []
    for direct in (True, False):
        torch.manual_seed(0)
        model = DeepMatrixFactorization(12, 9, depth=3, init_scale=0.3)
        tables = model.factor_parameters()
        optimizer = GroupRMSprop([{"params": tables[:1], "lr": 1e-2}, {"params": tables[1:], "lr": 3e-3}])
        objective = FullBatchMSE(data, "cpu")
        step = ClosedFormProductStep(model, objective, optimizer)
        assert step.kernel is not None and step.groups == [[0], [1, 2]]
        if not direct:
            step.groups = None
        initial = tables[0].detach().clone()
        for _ in range(3):
            step(objective.batch)
        assert not torch.equal(tables[0], initial)
        results.append([p.detach().clone() for p in tables])
    assert all(torch.equal(a, b) for a, b in zip(*results))
    extra = torch.nn.Parameter(torch.zeros(2))
    model = DeepMatrixFactorization(12, 9, depth=3)
    optimizer = GroupRMSprop([*model.factor_parameters(), extra])
    assert ClosedFormProductStep(model, FullBatchMSE(data, "cpu"), optimizer).groups is None
