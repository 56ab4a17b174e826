"""torch's fused Adam stepped from row gradients (compiled_adam.py) against torch's own route, bit for bit: λ's
one-pass clip + Adam + projection (regularizers/lambda_step.py) against dense `.grad`, `clip_grad_norm_`, the
fused step and `project_`; the MF-BPR step's Adam (tasks/bpr_step.py) against `optimizer.step()`; SparseAdam on the touched rows
against `SparseAdam.step()`."""
import copy

import numpy as np
import pytest
import torch

from lambdaopt.compiled_adam import CompiledAdam, CompiledSparseAdam, torch_adam_step
from lambdaopt.errors import TrainingDiverged
from lambdaopt.models.mf import MatrixFactorization
from lambdaopt.regularizers.fixed import FixedL2
from lambdaopt.regularizers.lambda_step import FusedLambdaAdam, FusedLambdaSparseAdam, lambda_rows, set_row_grads
from lambdaopt.regularizers.lambdaopt import LambdaOpt
from lambdaopt.regularizers.lambdas import GRANULARITIES, LambdaTables
from lambdaopt.tasks import bpr_kernel
from lambdaopt.tasks.bpr_step import ClosedFormBPRStep
from lambdaopt.tasks.ranking import BPRObjective

from lookahead_setup import train_with_lambda

N_USERS, N_ITEMS, DIM = 40, 30, 8


def hypergradient_rows(rng, dtype, scale):
    """{role: (unique row ids, h)} as the compiled look-ahead returns them."""
    rows = {}
    for role, n in (("user", N_USERS), ("item", N_ITEMS)):
        ids = np.sort(rng.choice(n, size=n // 2, replace=False))
        rows[role] = (torch.from_numpy(ids), torch.from_numpy(rng.standard_normal((len(ids), DIM)) * scale).to(dtype))
    return rows


def torch_route(lam, optimizer, rows, grad_clip):
    optimizer.zero_grad(set_to_none=True)
    set_row_grads(lam, rows)
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(lam.parameters(), grad_clip)
    optimizer.step()
    lam.project_()


def fused_route(fused, lam, rows, grad_clip):
    parts = lambda_rows(lam, rows)
    fused.clip_(parts, grad_clip)
    fused.step(parts)


def two_copies(granularity, dtype, **adam):
    lam = LambdaTables(granularity, N_USERS, N_ITEMS, DIM).to(dtype)
    with torch.no_grad():  # near the clamp boundary, so that the projection binds somewhere
        for p in lam.raw.values():
            p.copy_(torch.rand(p.shape, generator=torch.Generator().manual_seed(3), dtype=dtype) * 1e-3)
    copies = []
    for _ in range(2):
        twin = copy.deepcopy(lam)
        copies.append((twin, torch.optim.Adam(twin.parameters(), lr=1e-3, fused=True, **adam)))
    return copies


def assert_identical(a, b):
    (lam_a, opt_a), (lam_b, opt_b) = a, b
    for name, tensor in lam_a.raw.items():
        assert torch.equal(tensor, lam_b.raw[name]), name
        state_a, state_b = opt_a.state[tensor], opt_b.state[lam_b.raw[name]]
        assert state_a.keys() == state_b.keys()
        for key in state_a:
            assert state_a[key].dtype == state_b[key].dtype and torch.equal(state_a[key], state_b[key]), (name, key)


@pytest.mark.parametrize("granularity", list(GRANULARITIES))
@pytest.mark.parametrize("dtype,amsgrad,betas,start", [
    (torch.float32, True, (0.9, 0.999), "fused"), (torch.float32, False, (0.9, 0.999), "torch"),
    (torch.float64, True, (0.9, 0.999), "torch"), (torch.float32, True, (0.3, 0.99), "fused")])
def test_fused_step_equals_torch_bit_for_bit(granularity, dtype, amsgrad, betas, start):
    """Every granularity; float32 and float64; amsgrad or not; β₁ < ½ (ATen lerps from the gradient then);
    the state made by the fused step or by torch's first step; the clip off, and on without binding."""
    rng = np.random.default_rng(0)
    reference, fused = two_copies(granularity, dtype, amsgrad=amsgrad, betas=betas)
    one_pass = FusedLambdaAdam.build(fused[0], fused[1])
    assert one_pass is not None
    for step in range(6):
        rows = hypergradient_rows(rng, dtype, scale=10.0 ** rng.uniform(-6, -3))
        grad_clip = None if step % 2 else 1e6
        torch_route(*reference, rows, grad_clip)
        if start == "torch" and step == 0:
            torch_route(*fused, rows, grad_clip)
        else:
            fused_route(one_pass, fused[0], rows, grad_clip)
        assert_identical(reference, fused)
    if granularity != "global":  # one λ: it may stay positive
        assert any((p == 0).any() for p in fused[0].raw.values())  # the projection was exercised


def test_a_binding_clip_scales_as_clip_grad_norm():
    """Clipped: the same to float rounding (the norm is summed over the touched rows, not the dense table)."""
    rng = np.random.default_rng(1)
    reference, fused = two_copies("dui", torch.float32, amsgrad=True)
    one_pass = FusedLambdaAdam.build(*fused)
    for _ in range(4):
        rows = hypergradient_rows(rng, torch.float32, scale=10.0)
        parts = lambda_rows(fused[0], copy.deepcopy(rows))  # scaled in place
        norm = one_pass.clip_(parts, 1.0)
        reference[1].zero_grad()
        set_row_grads(reference[0], rows)
        assert norm == pytest.approx(float(torch.nn.utils.clip_grad_norm_(reference[0].parameters(), 1.0)), rel=1e-5)
        assert norm > 1  # the clip binds
        reference[1].step()
        reference[0].project_()
        one_pass.step(parts)
        for name, tensor in reference[0].raw.items():
            torch.testing.assert_close(fused[0].raw[name], tensor, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("options,fused", [({}, True), ({"lambda_optimizer": "sgd"}, False),
                                           ({"lambda_optimizer": "sparse_adam"}, False),
                                           ({"nonneg": "softplus", "init": 1e-2}, False)])
def test_lambdaopt_steps_lambda_in_one_pass_by_default(dataset, options, fused):
    """The default λ optimizer (fused Adam, clamp) takes the one-pass step; λ after training steps is the
    same bits as with torch's route (clip at its default 1.0, not binding here)."""
    results = []
    for one_pass in ((True, False) if fused else (False,)):
        torch.manual_seed(0)
        model = MatrixFactorization(dataset.n_users, dataset.n_items, dim=8, init_std=0.3)
        objective = BPRObjective(dataset, 24, torch.device("cpu"))
        optimizer = torch.optim.Adam(model.parameters(), lr=0.05, fused=True)
        granularity = "user_item" if options.get("lambda_optimizer") == "sparse_adam" else "dui"
        reg = LambdaOpt(granularity=granularity, lambda_lr=1e-2, **options)
        reg.setup(model, objective)
        initial = reg.lam.raw["user"].detach().clone()
        assert isinstance(reg._fused, FusedLambdaAdam) == fused  # sparse_adam: FusedLambdaSparseAdam (below)
        if not one_pass:
            reg._fused = None
        train_with_lambda(model, objective, optimizer, reg, steps=4)
        assert not torch.equal(reg.lam.raw["user"], initial)  # λ moved
        results.append(reg)
    if fused:
        assert_identical(*((r.lam, r.lambda_optimizer) for r in results))


def test_a_nan_hypergradient_stops_the_one_pass_step(dataset):
    torch.manual_seed(0)
    model = MatrixFactorization(dataset.n_users, dataset.n_items, dim=8)
    objective = BPRObjective(dataset, 24, torch.device("cpu"))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05, fused=True)
    reg = LambdaOpt()
    reg.setup(model, objective)
    batch = next(objective.batches(np.random.default_rng(0)))
    with torch.no_grad():
        model.user_embedding[batch[0][0]] = float("nan")
    before = {name: p.detach().clone() for name, p in reg.lam.raw.items()}
    with pytest.raises(TrainingDiverged, match="NaN"):
        reg.update(model, optimizer, batch, 0)
    assert reg._fused is not None and all(torch.equal(p, before[name]) for name, p in reg.lam.raw.items())



MODEL_ADAMS = {"adam": dict(lr=1e-2), "amsgrad": dict(lr=1e-2, amsgrad=True), "beta1 0.3": dict(lr=1e-2, betas=(0.3, 0.9))}


@pytest.mark.parametrize("user_bias,item_bias", [(False, True), (True, True), (False, False)])
@pytest.mark.parametrize("penalty", ["fixed", "dui"])
@pytest.mark.parametrize("adam", sorted(MODEL_ADAMS))
def test_the_mf_bpr_step_takes_torch_adams_step_bit_for_bit(dataset, adam, penalty, user_bias, item_bias):
    """The closed-form MF-BPR step under torch's fused Adam (`optimizer=adam`) steps the tables from its
    gradient buffers through `CompiledAdam`: losses, parameters and optimizer state are the same bits as with
    the gradient handed to `optimizer.step()`; every table, the user bias's zero gradient included."""
    runs = []
    for compiled in (True, False):
        torch.manual_seed(0)
        model = MatrixFactorization(dataset.n_users, dataset.n_items, dim=DIM, init_std=0.3, user_bias=user_bias,
                                    item_bias=item_bias)
        objective = BPRObjective(dataset, 24, torch.device("cpu"))
        optimizer = torch.optim.Adam(model.parameters(), fused=True, **MODEL_ADAMS[adam])
        regularizer = FixedL2(0.05) if penalty == "fixed" else LambdaOpt(granularity="dui", init=0.05)
        regularizer.setup(model, objective)
        step = ClosedFormBPRStep(model, regularizer, optimizer)
        assert step.compiled is not None and step.adam is not None
        if not compiled:
            step.adam = None
        initial = model.user_embedding.detach().clone()
        batches = objective.batches(np.random.default_rng(0))
        losses = [torch.as_tensor(step(next(batches))) for _ in range(5)]  # compiled: NumPy float32
        assert not torch.equal(model.user_embedding, initial)
        runs.append((model, optimizer, losses))
    (model, optimizer, losses), (reference, reference_optimizer, reference_losses) = runs
    assert all(torch.equal(a, b) for a, b in zip(losses, reference_losses))
    for (name, mine), theirs in zip(model.named_parameters(), reference.parameters()):
        assert torch.equal(mine, theirs), name
        state, reference_state = optimizer.state[mine], reference_optimizer.state[theirs]
        assert state.keys() == reference_state.keys()
        assert all(torch.equal(state[key], reference_state[key]) for key in state), name


@pytest.mark.parametrize("granularity", ["dui", "global"])  # λ per entry, one λ (1 × 1)
@pytest.mark.parametrize("adam", sorted(MODEL_ADAMS))
def test_the_step_from_the_lookaheads_fit_is_its_l2_gradient_then_torchs_adam(dataset, granularity, adam):
    """λOpt's model step under Adam adds the penalty's gradient to the look-ahead's fit rows inside the Adam
    pass (bpr_kernel.adam_l2_rows_step): its parameters, optimizer state and loss are the bits of
    `l2_rows_gradient`'s gradient table handed to torch's `Adam.step()` — width 5, so the scalar tail too."""
    torch.manual_seed(0)
    model = MatrixFactorization(dataset.n_users, dataset.n_items, dim=5, init_std=0.3, user_bias=True, item_bias=True)
    objective = BPRObjective(dataset, 24, torch.device("cpu"))
    optimizer = torch.optim.Adam(model.parameters(), fused=True, **MODEL_ADAMS[adam])
    reg = LambdaOpt(granularity=granularity, init=0.05, lambda_lr=0.05)
    reg.setup(model, objective)
    step = ClosedFormBPRStep(model, reg, optimizer)
    batches = objective.batches(np.random.default_rng(0))
    for index in range(4):  # the last from a warm optimizer state
        batch = next(batches)
        reg.update(model, optimizer, batch, index)
        reference = copy.deepcopy(model)
        reference_optimizer = torch.optim.Adam(reference.parameters(), fused=True, **MODEL_ADAMS[adam])
        reference_optimizer.load_state_dict(copy.deepcopy(optimizer.state_dict()))  # (it would share the tensors)
        fit, lams = reg._train_fit, step.compiled._weights(reg.l2_weights())
        assert fit is not None and fit.batch is batch
        loss = step(batch)

        grads = [np.zeros(tuple(t.shape), np.float32) for t in (reference.user_embedding, reference.item_embedding)]
        squares = sum(bpr_kernel.l2_rows_gradient(table.detach().numpy(), ids, rows, counts, lam, fit.size, grad,
                                                  np.zeros(len(grad), np.bool_))
                      for table, ids, rows, counts, lam, grad in (
                          (reference.user_embedding, fit.user_ids, fit.user_rows, fit.user_counts, lams[0], grads[0]),
                          (reference.item_embedding, fit.item_ids, fit.item_rows, fit.item_counts, lams[1], grads[1])))
        reference.user_embedding.grad, reference.item_embedding.grad = (torch.from_numpy(g) for g in grads)
        reference.item_bias.grad = torch.zeros_like(reference.item_bias)
        reference.item_bias.grad[torch.from_numpy(fit.item_ids)] = torch.from_numpy(fit.bias_rows)
        reference.user_bias.grad = torch.zeros_like(reference.user_bias)
        with torch.no_grad():
            torch_adam_step(reference_optimizer)
        assert loss == np.float32((fit.loss_sum + squares) / fit.size)
        for (name, mine), theirs in zip(model.named_parameters(), reference.parameters()):
            assert torch.equal(mine, theirs), (index, name)
            state, reference_state = optimizer.state[mine], reference_optimizer.state[theirs]
            assert all(torch.equal(state[key], reference_state[key]) for key in state), name


@pytest.mark.parametrize("optimizer", [
    lambda p: torch.optim.Adam(p, lr=1e-2), lambda p: torch.optim.Adam(p, lr=1e-2, fused=True, weight_decay=1e-3),
    lambda p: torch.optim.AdamW(p, lr=1e-2, fused=True), lambda p: torch.optim.Adam(p, lr=1e-2, fused=True, maximize=True),
    lambda p: torch.optim.SGD(p, lr=1.0, momentum=0.9), lambda p: torch.optim.SGD(p, lr=1.0)])
def test_other_optimizers_keep_their_own_step(dataset, optimizer):
    """Unfused Adam, weight decay, AdamW, maximize, SGD: torch's step (lazy rows for plain SGD); an Adam that
    does not hold every table: no compiled step either."""
    model = MatrixFactorization(dataset.n_users, dataset.n_items, dim=DIM)
    assert ClosedFormBPRStep(model, FixedL2(0.05), optimizer(model.parameters())).adam is None
    partial = torch.optim.Adam(list(model.parameters())[:1], lr=1e-2, fused=True)
    assert CompiledAdam.build(partial, list(model.parameters())) is None


def test_a_table_turned_float64_after_the_build_still_steps_as_torch():
    """The views follow the tables: λ made float64 after the step was built (as `.double()` on a set-up
    regularizer does) rounds as torch's float64 step."""
    rng = np.random.default_rng(2)
    reference, fused = two_copies("user_item", torch.float32, amsgrad=True)  # 30 × 1: a tail
    one_pass = FusedLambdaAdam.build(*fused)
    rows = hypergradient_rows(rng, torch.float32, scale=1e-4)
    torch_route(*reference, rows, None)
    fused_route(one_pass, fused[0], rows, None)
    for lam, optimizer in (reference, fused):
        lam.double()
        for state in optimizer.state.values():
            for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
                state[key] = state[key].double()
    for _ in range(3):
        rows = hypergradient_rows(rng, torch.float64, scale=1e-4)
        torch_route(*reference, rows, None)
        fused_route(one_pass, fused[0], rows, None)
        assert_identical(reference, fused)
    assert fused[0].raw["item"].dtype == torch.float64


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.3, 0.5)])
def test_compiled_sparse_adam_takes_sparse_adams_step(dtype, betas):
    """optimizer=sparse_adam's step from the compiled loop's buffers (`CompiledSparseAdam`) against
    `SparseAdam.step()` on the same gradient as a COO tensor with repeated rows: the moments the same bits,
    the parameters within 1 ulp of √ (torch's vectorized √ is not always correctly rounded), after several
    steps; rows no batch touched keep zero state; buffers and flags left cleared."""
    rng = np.random.default_rng(0)
    start = torch.from_numpy(rng.standard_normal((N_USERS, DIM)) * 0.1).to(dtype)
    mine, theirs = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    optimizer = torch.optim.SparseAdam([mine], lr=3e-2, betas=betas)
    reference = torch.optim.SparseAdam([theirs], lr=3e-2, betas=betas)
    compiled = CompiledSparseAdam.build(optimizer, [mine])
    assert compiled is not None
    grad, touched = np.zeros((N_USERS, DIM), start.numpy().dtype), np.zeros(N_USERS, np.bool_)
    never = np.arange(N_USERS - 5, N_USERS)  # rows no batch touches
    for _ in range(6):
        ids = rng.integers(0, N_USERS - 5, 25)  # repeats: their rows' gradients are summed once
        occurrences = torch.from_numpy(rng.standard_normal((len(ids), DIM)) * 1e-2).to(dtype)
        theirs.grad = torch.sparse_coo_tensor(torch.from_numpy(ids).unsqueeze(0), occurrences, theirs.shape,
                                              check_invariants=True)
        reference.step()
        summed = theirs.grad.coalesce()  # the gradient SparseAdam stepped on, row by row
        grad[summed.indices()[0].numpy()] = summed.values().numpy()
        touched[ids] = True
        compiled.step_rows(mine, grad, touched, ids)
        assert not touched.any() and not grad.any()
    for key in ("exp_avg", "exp_avg_sq"):
        assert torch.equal(optimizer.state[mine][key], reference.state[theirs][key]), key
    # each step's 1-ulp differences add up in θ: a few ulps of the step, not of θ
    torch.testing.assert_close(mine, theirs, rtol=0, atol=16 * torch.finfo(dtype).eps * 3e-2)
    assert optimizer.state[mine]["step"] == reference.state[theirs]["step"] == 6
    assert not optimizer.state[mine]["exp_avg"][never].any()


def test_compiled_sparse_adam_applies_only_to_a_plain_sparse_adam():
    table = torch.nn.Parameter(torch.zeros(4, 3))
    assert CompiledSparseAdam.build(torch.optim.SparseAdam([table], lr=1e-2), [table]) is not None
    assert CompiledSparseAdam.build(torch.optim.SparseAdam([table], lr=1e-2, maximize=True), [table]) is None
    assert CompiledSparseAdam.build(torch.optim.Adam([table], lr=1e-2), [table]) is None
    assert CompiledSparseAdam.build(torch.optim.SparseAdam([table], lr=1e-2), [table, torch.zeros(2, 3)]) is None


@pytest.mark.parametrize("grad_clip", [None, 1e-4])  # 1e-4: the clip binds at every step
@pytest.mark.parametrize("granularity", ["dui", "user_item"])
def test_sparse_lambda_step_follows_torchs_sparse_adam_route(dataset, granularity, grad_clip):
    """regularizer.lambda_optimizer=sparse_adam through `FusedLambdaSparseAdam` against torch's route (a
    row-sparse `.grad`, its coalescing and clip, `SparseAdam.step()`, `project_`): λ and its moments after
    several training steps, λ near the clamp bound so that the projection binds; equal up to the rounding of
    √ and of the clip's norm (summed in another order)."""
    runs = []
    for fused in (True, False):
        torch.manual_seed(0)
        model = MatrixFactorization(dataset.n_users, dataset.n_items, dim=8, init_std=0.3, item_bias=False)
        objective = BPRObjective(dataset, 24, torch.device("cpu"))
        optimizer = torch.optim.Adam(model.parameters(), lr=0.05, fused=True)
        reg = LambdaOpt(granularity=granularity, init=1e-3, lambda_optimizer="sparse_adam", lambda_lr=1e-3,
                        grad_clip=grad_clip)
        reg.setup(model, objective)
        assert isinstance(reg._fused, FusedLambdaSparseAdam)
        if not fused:
            reg._fused = None  # torch's route
        train_with_lambda(model, objective, optimizer, reg, steps=5)
        runs.append(reg)
    fused, reference = runs
    moved = False
    for name, tensor in fused.lam.raw.items():
        expected = reference.lam.raw[name]
        torch.testing.assert_close(tensor, expected, rtol=1e-5, atol=1e-9)
        moved |= bool((expected != 1e-3).any())
        assert (tensor >= 0).all() and bool((tensor == 0).any()) == bool((expected == 0).any())
        state, reference_state = fused.lambda_optimizer.state[tensor], reference.lambda_optimizer.state[expected]
        assert state["step"] == reference_state["step"] == 5
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(state[key], reference_state[key], rtol=1e-5, atol=1e-12)
    assert moved
