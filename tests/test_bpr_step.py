"""The closed-form MF-BPR step (tasks/bpr_step.py) against the autograd step it replaces: the same
parameters after several steps, for every optimizer route (lazy SGD rows, dense `.grad`, sparse rows)
and every regularizer with a closed-form row gradient; and when the trainer uses which."""
import copy

import numpy as np
import pytest
import torch

from lambdaopt.models.mf import MatrixFactorization
from lambdaopt.registry import REGULARIZERS
from lambdaopt.regularizers.fixed import FixedL2, NoRegularizer
from lambdaopt.regularizers.l1 import L1
from lambdaopt.regularizers.lambdaopt import LambdaOpt
from lambdaopt.tasks.bpr_step import ClosedFormBPRStep, lazy_sgd_lr
from lambdaopt.tasks.ranking import BPRObjective
from lambdaopt.trainer import Trainer
from lambdaopt.tracking import NullTracker

N_USERS, N_ITEMS = 12, 15


def batches(n=6, size=40, seed=0):
    """Random triples with many repeated users and items per batch (duplicates are the subtle case)."""
    rng = np.random.default_rng(seed)
    return [tuple(torch.as_tensor(rng.integers(0, n, size)) for n in (N_USERS, N_ITEMS, N_ITEMS)) for _ in range(n)]


def autograd_step(model, regularizer, optimizer, batch):
    fit, rows = BPRObjective.loss_and_rows(model, batch)
    loss = fit + regularizer.penalty(model, rows, len(batch[0]), batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


OPTIMIZERS = {
    "sgd (lazy rows)": lambda params: torch.optim.SGD(params, lr=5.0),
    "sgd fused (lazy rows)": lambda params: torch.optim.SGD(params, lr=5.0, fused=True),
    "sgd momentum (dense grad)": lambda params: torch.optim.SGD(params, lr=1.0, momentum=0.9),
    "sgd weight decay (dense grad)": lambda params: torch.optim.SGD(params, lr=1.0, weight_decay=1e-2),
    "adam (dense grad)": lambda params: torch.optim.Adam(params, lr=1e-2, fused=True),
    "adagrad (dense grad)": lambda params: torch.optim.Adagrad(params, lr=5e-2),
}
REGULARIZERS_WITH_CLOSED_FORM = {"fixed": lambda: FixedL2(0.05), "l1": lambda: L1(0.02), "none": NoRegularizer}


@pytest.mark.parametrize("user_bias,item_bias", [(False, True), (False, False), (True, True)])
@pytest.mark.parametrize("regularizer", sorted(REGULARIZERS_WITH_CLOSED_FORM))
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_closed_form_step_matches_autograd(optimizer, regularizer, user_bias, item_bias):
    torch.manual_seed(0)
    model = MatrixFactorization(N_USERS, N_ITEMS, dim=6, init_std=0.3, user_bias=user_bias, item_bias=item_bias)
    reference = copy.deepcopy(model)
    penalty = REGULARIZERS_WITH_CLOSED_FORM[regularizer]()
    step = ClosedFormBPRStep(model, penalty, OPTIMIZERS[optimizer](model.parameters()))
    reference_optimizer = OPTIMIZERS[optimizer](reference.parameters())
    assert step.lazy_sgd == ("lazy" in optimizer)
    # a weighted L2 penalty runs as compiled loops (bpr_kernel.py), L1 as tensor ops
    assert (step.compiled is not None) == (regularizer in ("fixed", "none"))
    for batch in batches():
        loss = torch.as_tensor(step(batch))  # a compiled step returns a NumPy float32
        expected = autograd_step(reference, penalty, reference_optimizer, batch)
        torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    for name, value in reference.named_parameters():
        torch.testing.assert_close(dict(model.named_parameters())[name], value, rtol=1e-5, atol=1e-6, msg=name)
    assert any((value != 0).any() for value in model.parameters())


def test_closed_form_step_with_sparse_rows_matches_sparse_adam():
    torch.manual_seed(0)
    model = MatrixFactorization(N_USERS, N_ITEMS, dim=6, init_std=0.3, item_bias=False, sparse_grad=True)
    reference = copy.deepcopy(model)
    optimizer = torch.optim.SparseAdam(list(model.parameters()), lr=1e-2)
    step = ClosedFormBPRStep(model, FixedL2(0.05), optimizer)
    assert step.sparse_adam is not None  # the compiled rows (compiled_adam.CompiledSparseAdam)
    reference_optimizer = torch.optim.SparseAdam(list(reference.parameters()), lr=1e-2)
    for batch in batches():
        step(batch)
        autograd_step(reference, FixedL2(0.05), reference_optimizer, batch)
    for mine, theirs in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)
        state, expected = optimizer.state[mine], reference_optimizer.state[theirs]
        assert state["step"] == expected["step"] == len(batches())
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(state[key], expected[key], rtol=1e-5, atol=1e-9)


CLOSED_FORM = sorted(name for name, cls in REGULARIZERS.by_name.items() if cls.closed_form_gradient)


def test_which_regularizers_have_a_closed_form():
    assert CLOSED_FORM == ["fixed", "l1", "lambdaopt", "none"]  # AMF's FixedL2 parent must not hand it down


@pytest.mark.parametrize("name", CLOSED_FORM)
def test_closed_form_row_gradient_is_the_penalty_gradient(name, dataset):
    """Every registered regularizer that says it has a closed-form row gradient adds exactly
    scale · ∂penalty/∂rows (autograd's), including rows that occur twice."""
    regularizer = REGULARIZERS.by_name[name]()
    model = MatrixFactorization(dataset.n_users, dataset.n_items, dim=5)
    regularizer.setup(model, BPRObjective(dataset, 16, torch.device("cpu")))
    with torch.no_grad():  # learned λ: a different λ per user, item and dimension
        for table in regularizer.parameters():
            table.uniform_(0.0, 0.1)
    generator = torch.Generator().manual_seed(1)
    users, items = torch.tensor([0, 3, 3, 7]), torch.tensor([1, 1, 4, 9, 2, 0, 14, 1])
    rows = {"user_embedding": ("user", users, torch.randn(4, 5, generator=generator, requires_grad=True)),
            "item_embedding": ("item", items, torch.randn(8, 5, generator=generator, requires_grad=True))}
    if name == "l1":  # autograd's subgradient of |x| at 0 is 0: a zero entry checks that convention too
        with torch.no_grad():
            rows["user_embedding"][2][0, 0] = 0.0
    value, inputs = regularizer.penalty(model, rows, 4), [v for _, _, v in rows.values()]
    expected = (torch.autograd.grad(value, inputs) if value.requires_grad  # no penalty: a constant 0
                else [torch.zeros_like(v) for v in inputs])
    for scale in (1.0, -0.3):
        for (role, ids, values), want in zip(rows.values(), expected):
            grad = torch.ones_like(values)
            regularizer.add_rows_gradient(grad, role, ids, values.detach(), 4, scale)
            torch.testing.assert_close(grad, 1.0 + scale * want)


def make_trainer(dataset, regularizer, optimizer="sgd", **options):
    torch.manual_seed(0)
    model = MatrixFactorization(dataset.n_users, dataset.n_items, dim=8)
    make = {"sgd": lambda p: torch.optim.SGD(p, lr=20.0), "adam": lambda p: torch.optim.Adam(p, lr=1e-2)}[optimizer]
    objective = BPRObjective(dataset, 64, torch.device("cpu"))
    regularizer.setup(model, objective)
    return Trainer(model, regularizer, make(model.parameters()), objective, None, NullTracker(), max_epochs=3,
                   **options)


def test_the_trainer_takes_the_closed_form_only_where_it_holds(dataset):
    from lambdaopt.regularizers.adversarial import Adversarial

    assert isinstance(make_trainer(dataset, FixedL2(1e-2)).closed_form, ClosedFormBPRStep)
    assert make_trainer(dataset, FixedL2(1e-2), closed_form_step=False).closed_form is None
    assert make_trainer(dataset, FixedL2(1e-2), check_finite_grads=True).closed_form is None  # grads are checked
    assert make_trainer(dataset, Adversarial()).closed_form is None
    assert isinstance(make_trainer(dataset, LambdaOpt(granularity="dui")).closed_form, ClosedFormBPRStep)
    assert lazy_sgd_lr(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0))
    assert not lazy_sgd_lr(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0, momentum=0.5))


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("regularizer", ["fixed", "lambdaopt"])
def test_training_epochs_agree_with_autograd(dataset, optimizer, regularizer):
    """Whole epochs through the trainer (sampling, batching, loss bookkeeping; λOpt's λ steps before
    each model step): the same losses and weights with and without the closed form, to float rounding."""
    make = {"fixed": lambda: FixedL2(1e-2), "lambdaopt": lambda: LambdaOpt(granularity="dui", lambda_lr=1e-2)}
    closed = make_trainer(dataset, make[regularizer](), optimizer)
    reference = make_trainer(dataset, make[regularizer](), optimizer, closed_form_step=False)
    for _ in range(3):
        assert closed.train_epoch() == pytest.approx(reference.train_epoch(), rel=1e-5)
    for mine, theirs in zip(closed.model.parameters(), reference.model.parameters()):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-5)
    if regularizer == "lambdaopt":
        learned = [table for table in closed.regularizer.parameters()]
        assert all((table > 0).any() for table in learned)
        for mine, theirs in zip(learned, reference.regularizer.parameters()):
            torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("optimizer", ["sgd (lazy rows)", "adam (dense grad)"])
def test_without_numba_the_tensor_path_takes_the_step(optimizer, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "lambdaopt.tasks.bpr_kernel", None)  # as on a platform without numba
    torch.manual_seed(0)
    model = MatrixFactorization(N_USERS, N_ITEMS, dim=6, init_std=0.3)
    reference = copy.deepcopy(model)
    step = ClosedFormBPRStep(model, FixedL2(0.05), OPTIMIZERS[optimizer](model.parameters()))
    assert step.compiled is None
    reference_optimizer = OPTIMIZERS[optimizer](reference.parameters())
    for batch in batches():
        step(batch)
        autograd_step(reference, FixedL2(0.05), reference_optimizer, batch)
    for mine, theirs in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("compiled", [True, False])
def test_a_non_finite_parameter_gives_a_non_finite_loss(compiled, monkeypatch):
    """The trainer's divergence check reads the loss: the compiled loop must not optimize NaN away."""
    import sys

    if not compiled:
        monkeypatch.setitem(sys.modules, "lambdaopt.tasks.bpr_kernel", None)
    model = MatrixFactorization(N_USERS, N_ITEMS, dim=6)
    step = ClosedFormBPRStep(model, FixedL2(0.05), torch.optim.SGD(model.parameters(), lr=5.0))
    assert (step.compiled is not None) == compiled
    batch = batches(n=1)[0]
    with torch.no_grad():
        model.user_embedding[batch[0][0], 0] = float("nan")
    assert not np.isfinite(float(step(batch)))


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("user_bias,item_bias", [(False, True), (False, False), (True, True)])
def test_closed_form_loss_and_grads_match_autograd(user_bias, item_bias, compiled, monkeypatch):
    """What λOpt's look-ahead takes twice per step (hypergrad.loss_grads), against autograd through
    the model at the same parameters; by the compiled loop and by tensor ops."""
    import sys

    from torch.func import functional_call

    if not compiled:
        monkeypatch.setitem(sys.modules, "lambdaopt.tasks.bpr_kernel", None)

    from lambdaopt.tasks.bpr_step import dot_bpr_loss_and_grads
    from lambdaopt.tasks.ranking import bpr_loss

    torch.manual_seed(0)
    model = MatrixFactorization(N_USERS, N_ITEMS, dim=6, init_std=0.3, user_bias=user_bias, item_bias=item_bias)
    params = {name: p.detach().clone().requires_grad_(True) for name, p in model.named_parameters()}
    for batch in batches(n=3):
        users, positives, negatives = batch
        scores = functional_call(model, params, (users.repeat(2), torch.cat([positives, negatives])))
        expected = bpr_loss(*scores.view(2, -1))
        wanted = torch.autograd.grad(expected, list(params.values()), allow_unused=True)
        loss, grads = dot_bpr_loss_and_grads({k: v.detach() for k, v in params.items()}, batch)
        torch.testing.assert_close(loss, expected.detach())
        assert sorted(grads) == sorted(params)
        for name, want in zip(params, wanted):
            torch.testing.assert_close(grads[name], torch.zeros_like(params[name]) if want is None else want, msg=name)


@pytest.mark.parametrize("optimizer", ["sgd (lazy rows)", "adam (dense grad)"])
@pytest.mark.parametrize("granularity", ["global", "d", "user", "item", "du", "dui"])
def test_learned_lambda_model_steps_match_autograd(granularity, optimizer, dataset):
    """λOpt's model step (after its λ step) in compiled loops, with λ per entry, per row, per
    dimension or one value, against autograd of its penalty; and its l2_weights are its penalty."""
    torch.manual_seed(0)
    model = MatrixFactorization(dataset.n_users, dataset.n_items, dim=6, init_std=0.3)
    regularizer = LambdaOpt(granularity=granularity)
    regularizer.setup(model, BPRObjective(dataset, 16, torch.device("cpu")))
    with torch.no_grad():
        for table in regularizer.parameters():
            table.uniform_(0.0, 0.2)
    reference = copy.deepcopy(model)
    step = ClosedFormBPRStep(model, regularizer, OPTIMIZERS[optimizer](model.parameters()))
    assert step.compiled is not None
    reference_optimizer = OPTIMIZERS[optimizer](reference.parameters())
    for batch in batches():
        torch.testing.assert_close(torch.as_tensor(step(batch)), autograd_step(reference, regularizer, reference_optimizer, batch))
    for mine, theirs in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- trainer.per_sample
def per_sample_reference(model, lam: float, lr: float, batch):
    """Per-sample SGD written out in float64 numpy: triple t moves its rows by −(lr/B)·∇ℓ_t."""
    P, Q = (t.detach().double().numpy().copy() for t in (model.user_embedding, model.item_embedding))
    b = model.item_bias.detach().double().numpy().copy()
    step = lr / len(batch[0])
    for u, i, j in zip(*(t.tolist() for t in batch)):
        x = P[u] @ (Q[i] - Q[j]) + b[i] - b[j]
        g = -1.0 / (1.0 + np.exp(x))
        p, qi, qj = P[u].copy(), Q[i].copy(), Q[j].copy()
        P[u] -= step * (g * (qi - qj) + 2 * lam * p)
        Q[i] -= step * (g * p + 2 * lam * qi)
        Q[j] -= step * (2 * lam * qj - g * p)
        b[i] -= step * g
        b[j] += step * g
    return P, Q, b


@pytest.mark.parametrize("penalty", ["fixed", "dui"])
def test_per_sample_step_applies_each_triple_before_the_next(penalty, dataset):
    torch.manual_seed(0)
    model = MatrixFactorization(dataset.n_users, dataset.n_items, dim=6, init_std=0.3, item_bias=True)
    regularizer = FixedL2(0.05) if penalty == "fixed" else LambdaOpt(granularity="dui", init=0.05)
    if penalty == "dui":  # every λ entry 0.05: the per-entry loop, against the reference's one λ
        regularizer.setup(model, BPRObjective(dataset, 8, torch.device("cpu")))
    step = ClosedFormBPRStep(model, regularizer, torch.optim.SGD(model.parameters(), lr=8.0), per_sample=40)
    for batch in batches(n=3):  # 40 triples over 12 users and 15 items: rows repeat within a batch
        P, Q, b = per_sample_reference(model, 0.05, 8.0, batch)
        step(batch)
        for mine, want in ((model.user_embedding, P), (model.item_embedding, Q), (model.item_bias, b)):
            np.testing.assert_allclose(mine.detach().numpy(), want, rtol=2e-5, atol=2e-6)


def test_per_sample_epochs_are_batch_size_one_epochs(dataset):
    """The trainer with per_sample at batch 64 and lr 64η runs the same epoch as batch size 1 at lr η: the
    same permutation of triples, each applied in turn (the short last batch too: its step is lr/64)."""
    def trainer(batch_size, lr, per_sample):
        torch.manual_seed(0)
        model = MatrixFactorization(dataset.n_users, dataset.n_items, dim=8)
        objective = BPRObjective(dataset, batch_size, torch.device("cpu"), per_sample=per_sample)
        return Trainer(model, FixedL2(1e-2), torch.optim.SGD(model.parameters(), lr=lr), objective, None,
                       NullTracker(), max_epochs=2)

    per_sample, one_by_one = trainer(64, 64 * 0.05, True), trainer(1, 0.05, False)
    for _ in range(2):  # (their epoch losses differ: a mean of 64-triple batch means vs of single triples)
        per_sample.train_epoch(), one_by_one.train_epoch()
    for mine, theirs in zip(per_sample.model.parameters(), one_by_one.model.parameters()):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-5)
    moved = trainer(64, 64 * 0.05, False)  # the batch step at the same settings ends elsewhere
    moved.train_epoch(), moved.train_epoch()
    assert not torch.allclose(moved.model.user_embedding, per_sample.model.user_embedding, atol=1e-3)


@pytest.mark.parametrize("overrides,needle", [
    (["optimizer=adam"], "plain SGD"),
    (["regularizer=l1"], "a weighted L2 penalty"),
    (["regularizer=amf"], "closed-form gradient"),
    (["trainer.closed_form_step=false"], "needs trainer.closed_form_step=true"),
    (["dataset.feedback=explicit"], "explicit feedback trains on other batches"),
])
def test_per_sample_refuses_what_it_cannot_run_in_one_line(overrides, needle):
    from conftest import TINY, fails_in_one_line

    fails_in_one_line([*TINY, "optimizer=sgd", "trainer.per_sample=true", *overrides], needle)


@pytest.mark.parametrize("optimizer", ["sgd (lazy rows)", "adam (dense grad)"])
def test_kept_views_follow_a_new_table_storage_and_a_changed_lambda(optimizer):
    """The compiled step keeps NumPy views of the tables, the optimizer state and λ between steps
    (bpr_kernel.CompiledBPRStep, compiled_adam.CompiledAdam): a table given new storage (`.data =`), a
    new λ value and an optimizer state loaded from a checkpoint are read, as a step made afresh reads them."""
    torch.manual_seed(0)
    model = MatrixFactorization(N_USERS, N_ITEMS, dim=6, init_std=0.3)
    reference = copy.deepcopy(model)
    penalty, reference_penalty = FixedL2(0.05), FixedL2(0.05)
    optimizer_, reference_optimizer = (OPTIMIZERS[optimizer](m.parameters()) for m in (model, reference))
    kept = ClosedFormBPRStep(model, penalty, optimizer_)
    assert kept.compiled is not None
    for index, batch in enumerate(batches(n=8)):
        if index == 2:  # new storage for a table (same values)
            model.user_embedding.data = model.user_embedding.data.clone()
            reference.user_embedding.data = reference.user_embedding.data.clone()
        if index == 4:  # another λ
            penalty.lam = reference_penalty.lam = 0.2
        if index == 6:  # the optimizer's state replaced by a loaded copy of itself (a resumed checkpoint)
            optimizer_.load_state_dict(copy.deepcopy(optimizer_.state_dict()))
        kept(batch)
        ClosedFormBPRStep(reference, reference_penalty, reference_optimizer)(batch)  # made afresh: no views kept
        for name, value in model.state_dict().items():
            assert torch.equal(value, reference.state_dict()[name]), (index, name)
        for state, expected in zip(optimizer_.state_dict()["state"].values(),
                                   reference_optimizer.state_dict()["state"].values()):
            assert all(torch.equal(state[key], expected[key]) for key in expected), index
