"""`model=nuclear_norm`: the convex baseline of deep MF — the minimum-nuclear-norm completion

    min_X ‖X‖_*   s.t.  |X_ij − y_ij| ≤ tolerance  for every observed (i, j)

solved once (no gradient steps), by one of:

- `svt` (default, built in): ADMM on the split X = Z, with X's step a singular value thresholding
  and Z's a clip of the observed entries into their tolerance box (unobserved entries are free):

      X ← SVT_{1/ρ}(Z − U),   Z ← Π_box(X + U),   U ← U + X − Z

  ρ is rebalanced when the primal residual ‖X − Z‖ and the dual one ρ‖ΔZ‖ drift apart (Boyd et al.
  2011, §3.4.1). It solves the same problem as cvxpy, to `rel_tol`, with one SVD per iteration.
- `soft_impute` (built in, Mazumder et al. 2010): X ← SVT_λ(P_Ω(Y) + P_Ω⊥(X)) along a geometric
  λ path down to λ_max · `min_lambda_ratio`, warm-started; its limit λ → 0 is the same minimizer.
- `cvxpy`: the conic program through cvxpy + SCS (`pip install .[convex]`), as in the reference.
"""
from __future__ import annotations

import logging
import math
import time

from typing import Annotated

import numpy as np
import torch
from torch import nn

from lambdaopt.data.lowrank import CompletionData
from lambdaopt.config.checks import non_negative, one_of, open_unit, positive
from lambdaopt.errors import ConfigError
from lambdaopt.models.base import SolvedModel
from lambdaopt.registry import MODELS

log = logging.getLogger(__name__)
SOLVERS = ("svt", "soft_impute", "cvxpy")


def singular_value_threshold(matrix: torch.Tensor, threshold: float) -> torch.Tensor:
    """argmin_X threshold·‖X‖_* + ½‖X − matrix‖_F² = U diag(max(σ − threshold, 0)) Vᵀ."""
    u, sigma, vh = torch.linalg.svd(matrix, full_matrices=False)
    shrunk = (sigma - threshold).clamp(min=0)
    keep = int((shrunk > 0).sum())
    return (u[:, :keep] * shrunk[:keep]) @ vh[:keep]


def admm_nuclear_norm(shape, flat_index, values, tolerance, max_iters=20000, rel_tol=1e-7):
    """ADMM for min ‖X‖_* s.t. |X.view(-1)[flat_index] − values| ≤ tolerance. float64 tensors in/out.
    Returns (X, iterations)."""
    observed = torch.zeros(shape, dtype=values.dtype, device=values.device).view(-1)
    observed[flat_index] = values
    z = observed.view(shape).clone()
    dual = torch.zeros_like(z)
    rho = 1.0 / max(float(torch.linalg.matrix_norm(z, ord=2)), 1e-12)  # first threshold ≈ σ_max(P_Ω(Y))
    scale = max(float(z.norm()), 1e-12)
    for iteration in range(1, max_iters + 1):
        x = singular_value_threshold(z - dual, 1.0 / rho)
        previous_z = z
        z = x + dual
        flat = z.view(-1)
        flat[flat_index] = torch.minimum(torch.maximum(flat[flat_index], values - tolerance), values + tolerance)
        dual = dual + x - z
        primal, dual_residual = float((x - z).norm()), rho * float((z - previous_z).norm())
        if primal < rel_tol * scale and dual_residual < rel_tol * scale:
            return x, iteration
        if primal > 10 * dual_residual:  # too loose a coupling: tighten, and rescale the scaled dual
            rho, dual = rho * 2, dual / 2
        elif dual_residual > 10 * primal:
            rho, dual = rho / 2, dual * 2
    return x, max_iters


def soft_impute(shape, flat_index, values, min_lambda_ratio=1e-6, n_lambdas=60, max_iters=20000, rel_tol=1e-9):
    """Soft-impute along λ_k = λ_max · ratio^{k/(n−1)}; returns (X at the smallest λ, iterations)."""
    observed = torch.zeros(shape, dtype=values.dtype, device=values.device).view(-1)
    observed[flat_index] = values
    observed = observed.view(shape)
    mask = torch.zeros(math.prod(shape), dtype=torch.bool, device=values.device)
    mask[flat_index] = True
    mask = mask.view(shape)
    lam_max = float(torch.linalg.matrix_norm(observed, ord=2))
    x, iterations = torch.zeros_like(observed), 0
    for lam in lam_max * np.geomspace(1.0, min_lambda_ratio, n_lambdas):
        while iterations < max_iters:
            iterations += 1
            updated = singular_value_threshold(torch.where(mask, observed, x), float(lam))
            change = float((updated - x).norm()) / max(float(x.norm()), 1e-12)
            x = updated
            if change < rel_tol:
                break
    return x, iterations


def cvxpy_nuclear_norm(data: CompletionData, tolerance: float) -> np.ndarray:
    """The reference's exact program through cvxpy + SCS (completion or sensing)."""
    try:
        import cvxpy as cp
    except ImportError:
        raise ConfigError("model.solver=cvxpy needs cvxpy, which is not installed: pip install '.[convex]' "
                          "or use the built-in model.solver=svt") from None
    x = cp.Variable((data.n_users, data.n_items))
    if data.measurements is None:
        predictions = x[data.rows, data.cols]
    else:
        predictions = data.measurements.astype(np.float64) @ cp.vec(x, order="C")
    problem = cp.Problem(cp.Minimize(cp.normNuc(x)),
                         [cp.abs(predictions - data.values.astype(np.float64)) <= tolerance])
    problem.solve(solver=cp.SCS)
    if x.value is None:
        raise RuntimeError(f"cvxpy/SCS found no solution (status {problem.status})")
    return x.value


@MODELS.register("nuclear_norm")
class NuclearNormCompletion(SolvedModel):
    """Holds the minimum-nuclear-norm completion once `solve` has run; scores like any model.

    The solution is a frozen Parameter (requires_grad=False) so the model moves with `.to(device)`,
    lands in `state_dict`, and the framework's optimizer construction still sees a parameter (it is
    never stepped: `experiment.run` calls `solve` instead of the trainer for models with `solve`).
    """

    display_name = "nuclear norm"

    def __init__(self, n_users: int, n_items: int, solver: Annotated[str, one_of(*SOLVERS)] = "svt",
                 tolerance: Annotated[float, non_negative()] = 1e-3, max_iters: Annotated[int, positive()] = 20000,
                 rel_tol: Annotated[float, positive()] = 1e-7,
                 min_lambda_ratio: Annotated[float, open_unit()] = 1e-6, sparse_grad: bool = False):
        super().__init__(n_users, n_items, sparse_grad)
        self.solver = solver
        self.tolerance, self.max_iters, self.rel_tol, self.min_lambda_ratio = tolerance, max_iters, rel_tol, min_lambda_ratio
        self.solution = nn.Parameter(torch.zeros(n_users, n_items), requires_grad=False)

    def solve(self, data: CompletionData) -> dict[str, float]:
        """Fill `solution` from the observations; returns {iterations, solve_seconds}."""
        started, iterations = time.perf_counter(), 0
        if self.solver == "cvxpy":
            matrix = torch.as_tensor(cvxpy_nuclear_norm(data, self.tolerance))
        else:
            if data.measurements is not None:
                raise ConfigError(f"model.solver={self.solver} handles completion only: use model.solver=cvxpy "
                                  "for matrix sensing (dataset.sensing=true)")
            device = self.solution.device
            flat_index = torch.as_tensor(data.rows * data.n_items + data.cols, device=device)
            values = torch.as_tensor(data.values, dtype=torch.float64, device=device)
            shape = (data.n_users, data.n_items)
            if self.solver == "svt":
                matrix, iterations = admm_nuclear_norm(shape, flat_index, values, self.tolerance,
                                                       self.max_iters, self.rel_tol)
            else:
                matrix, iterations = soft_impute(shape, flat_index, values, self.min_lambda_ratio,
                                                 max_iters=self.max_iters)
        with torch.no_grad():
            self.solution.copy_(matrix.to(self.solution))
        seconds = time.perf_counter() - started
        log.info("nuclear norm (%s): %d iterations, %.1fs", self.solver, iterations, seconds)
        return {"iterations": iterations, "solve_seconds": seconds}

    def matrix(self) -> torch.Tensor:
        return self.solution

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.solution[users, items]

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self.solution[users]

