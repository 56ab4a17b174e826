"""Epoch time of fixed λ vs every λOpt granularity vs `higher`, on ML-100K-shaped synthetic data.

    python bench/lambdaopt_epoch.py [--epochs 5] [--dim 128] [--device cuda]

d=128, batch 1024, Adam lr 1e-2, 1 thread, CPU time per epoch (on CUDA: wall time between two
synchronizations; evaluation excluded): the median over
`--epochs` epochs, the setups taking turns one epoch at a time so that a slow spell of the machine falls on
all of them alike. Ratios are to the fixed-λ epoch measured in the same process.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Clock, device_name, interleaved_epochs, ml100k_shaped, print_table  # noqa: E402

from lambdaopt.models.mf import MatrixFactorization  # noqa: E402
from lambdaopt.regularizers.fixed import FixedL2  # noqa: E402
from lambdaopt.regularizers.lambdaopt import LambdaOpt  # noqa: E402
from lambdaopt.regularizers.lambdas import GRANULARITIES  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--only", nargs="*", help="setups whose name contains one of these (fixed always runs)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    dataset = ml100k_shaped()
    setups = {"fixed": lambda: FixedL2(1e-2)}
    setups.update({f"lambdaopt_{g}": (lambda g=g: LambdaOpt(granularity=g)) for g in GRANULARITIES})
    setups["lambdaopt_dui, update_every=4"] = lambda: LambdaOpt(granularity="dui", update_every=4)
    setups["higher (unrolled K=1, all params)"] = lambda: LambdaOpt(hypergrad="unrolled", full_graph=True)
    setups["unrolled K=1 (rows)"] = lambda: LambdaOpt(hypergrad="unrolled")
    setups["unrolled K=2 (rows)"] = lambda: LambdaOpt(hypergrad="unrolled", unroll_steps=2)
    setups["ift (10 Neumann terms)"] = lambda: LambdaOpt(hypergrad="ift")
    if args.only:
        setups = {k: v for k, v in setups.items() if k == "fixed" or any(o in k for o in args.only)}
    built = {}
    for name, make in setups.items():
        torch.manual_seed(0)
        model = MatrixFactorization(dataset.n_users, dataset.n_items, dim=args.dim, item_bias=False).to(args.device)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, fused=True)  # as lambdaopt/conf/optimizer/adam.yaml
        built[name] = (model, make(), optimizer)
    times = interleaved_epochs(built, dataset, epochs=args.epochs, device=args.device)
    base, n_triples = float(np.median(times["fixed"])), len(dataset.train)
    rows = []
    for name, epochs in times.items():
        seconds = float(np.median(epochs))
        rows.append((name, f"{seconds:.3f}", f"{seconds / base:.2f}x", f"{n_triples / seconds:,.0f}",
                     f"{min(epochs):.3f}–{max(epochs):.3f}"))
    print(f"\n{dataset.n_users} users x {dataset.n_items} items, {n_triples} train triples/epoch, "
          f"d={args.dim}, batch 1024, Adam, {device_name(args.device)}, {Clock(args.device).unit}/epoch: median "
          f"(and range) of {args.epochs} epochs, the setups taking turns\n")
    print_table(rows, ["setup", "s/epoch", "vs fixed", "triples/s", "range"])


if __name__ == "__main__":
    main()
