"""Where a training step's time goes: the compiled passes, one by one, against everything else (Python, torch and
NumPy calls around them), for a fixed-λ step and a λOpt-DUI step, measured inside real training epochs.

    python bench/step_breakdown.py [--epochs 7] [--dim 128]

ML-100K-shaped synthetic data, MF d=128, batch 1024, Adam lr 1e-2 (fused, as lambdaopt/conf/optimizer/adam.yaml),
1 thread. Every compiled kernel the steps call (numba; the look-ahead, the BPR gradient, Adam and the fused
penalty + Adam, the negative sampler) is wrapped by a timer and the setups take turns one epoch at a time; the
table gives wall milliseconds per step: each kernel (its dispatch included), their sum, and the rest of the
step. The compiled sum's ratio is how far the λ step's own passes put DUI above fixed with no Python at all —
the floor of DUI ÷ fixed for this design (bench/README.md, λOpt epoch time). The timers cost ~1 µs per call.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ml100k_shaped, print_table  # noqa: E402

from lambdaopt.kernels import compiled_kernels  # noqa: E402
from lambdaopt.models.mf import MatrixFactorization  # noqa: E402
from lambdaopt.regularizers.fixed import FixedL2  # noqa: E402
from lambdaopt.regularizers.lambdaopt import LambdaOpt  # noqa: E402
from lambdaopt.tasks import bpr_kernel, bpr_lookahead  # noqa: E402
from lambdaopt.tasks.ranking import BPRObjective  # noqa: E402
from lambdaopt.trainer import Trainer  # noqa: E402
from lambdaopt.tracking import NullTracker  # noqa: E402

SPENT: dict = defaultdict(float)  # (setup, kernel) → seconds
RUNNING = ["?"]  # the setup whose epoch runs


def timed(name: str, kernel):
    def call(*args):
        started = time.perf_counter()
        try:
            return kernel(*args)
        finally:
            SPENT[RUNNING[0], name] += time.perf_counter() - started
    return call


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=7)
    parser.add_argument("--dim", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(1)
    dataset = ml100k_shaped()
    # the kernels the compiled steps look up in their modules at each call (put back on the way out: the
    # tests run this script in their own process)
    wrapped = [(bpr_lookahead, "one_step_sensitivities", "look-ahead"), (bpr_kernel, "bpr_l2_gradient", "BPR gradient"),
               (bpr_kernel, "adam_touched_step", "Adam (model)"), (bpr_kernel, "adam_l2_rows_step", "penalty + Adam (model)")]
    wrapped.append((compiled_kernels("sampling_kernel", "lambdaopt.data"), "draw_triples", "validation draw"))
    originals = [(module, name, getattr(module, name)) for module, name, _ in wrapped]
    for module, name, label in wrapped:
        setattr(module, name, timed(label, getattr(module, name)))
    try:
        breakdown(args, dataset)
    finally:
        for module, name, kernel in originals:
            setattr(module, name, kernel)


def breakdown(args, dataset) -> None:
    trainers = {}
    for name, regularizer in (("fixed", FixedL2(1e-2)), ("λOpt-DUI", LambdaOpt(granularity="dui"))):
        torch.manual_seed(0)
        model = MatrixFactorization(dataset.n_users, dataset.n_items, dim=args.dim, item_bias=False)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, fused=True)
        objective = BPRObjective(dataset, 1024, torch.device("cpu"))
        regularizer.setup(model, objective)
        trainer = Trainer(model, regularizer, optimizer, objective, None, NullTracker(), max_epochs=args.epochs + 1)
        trainers[name] = trainer
        trainer.train_epoch()  # compiles, and builds the steps whose kernels are wrapped next
        if trainer.closed_form.adam is None or trainer.closed_form.compiled is None:
            sys.exit("the compiled MF-BPR step does not apply here (numba missing?): nothing to break down")
        if name != "fixed":
            regularizer._fused.adam.kernel = timed("AMSGrad (λ)", regularizer._fused.adam.kernel)
    SPENT.clear()
    seconds = {name: [] for name in trainers}
    for _ in range(args.epochs):
        for name, trainer in trainers.items():
            RUNNING[0] = name
            started = time.perf_counter()
            trainer.train_epoch()
            seconds[name].append(time.perf_counter() - started)
    steps = args.epochs * next(iter(trainers.values())).objective.n_batches()
    per_step = {name: float(np.median(s)) * args.epochs / steps * 1e3 for name, s in seconds.items()}
    compiled = {name: sum(v for (setup, _), v in SPENT.items() if setup == name) / steps * 1e3 for name in trainers}
    kernels = sorted({kernel for _, kernel in SPENT}, key=lambda k: -max(SPENT.get((n, k), 0.0) for n in trainers))
    rows = [(kernel, *(f"{SPENT[name, kernel] / steps * 1e3:.3f}" if (name, kernel) in SPENT else "" for name in trainers))
            for kernel in kernels]
    rows.append(("compiled passes, together", *(f"{compiled[name]:.3f}" for name in trainers)))
    rows.append(("the rest (Python, torch, NumPy)", *(f"{per_step[name] - compiled[name]:.3f}" for name in trainers)))
    rows.append(("whole step (median epoch)", *(f"{per_step[name]:.3f}" for name in trainers)))
    print(f"\n{dataset.n_users} users x {dataset.n_items} items, d={args.dim}, batch 1024, Adam, 1 thread, "
          f"torch {torch.__version__}: wall ms per step, {args.epochs} epochs each, the setups taking turns\n")
    print_table(rows, ["piece", *trainers])
    fixed, dui = trainers
    print(f"\nDUI ÷ fixed: whole step {per_step[dui] / per_step[fixed]:.2f}x, "
          f"compiled passes alone {compiled[dui] / compiled[fixed]:.2f}x")


if __name__ == "__main__":
    main()
