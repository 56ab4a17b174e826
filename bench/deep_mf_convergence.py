"""Wall time for depth-3 deep MF to reach relative error ≤ 1e-4 on the reference completion setup.

Setup (the deep-MF papers' completion experiment, Arora et al. 2019): n = 100, rank 5, 2000 observed entries, gaussian
init with scale 1e-3, GroupRMSprop lr 1e-3. The reference implementation is not a
dependency: `--reference` runs a checkout of it (bench/reference_speed.md) — a ratio to it is only ever
printed from a measurement in the same run, never from a constant. This drives the framework's own pieces (config,
task selection, `Trainer.train_epoch` on the full-batch objective) and checks the relative error vs W* (the
evaluator's formula, not its spectrum metrics: the reference computes only its error) every `--check-every`
steps; the check is timed too. With `--reference DIR` it also runs the reference
implementation (a checkout patched as bench/reference_speed.md says) on the very same ground truth and
observed entries, alternating with ours for `--rounds` rounds, and prints the ratio of the medians.

    python bench/deep_mf_convergence.py [--target 1e-4] [--check-every 100] [--threads 1] [--autograd] [--device cuda]
    python bench/deep_mf_convergence.py --reference /tmp/dmf --reference-python /tmp/dmfvenv/bin/python --rounds 3
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import lambdaopt
from lambdaopt.experiment import build_parts, build_trainer
from lambdaopt.tracking import NullTracker



OVERRIDES = ["dataset=lowrank", "dataset.n=100", "dataset.rank=5", "dataset.n_train_samples=2000", "model=deep_mf",
             "model.init_scale=1e-3", "optimizer=group_rmsprop", "optimizer.lr=1e-3", "tracking.enabled=false"]


def ours(args, seed: int = 0):
    """(seconds, steps, relative error) of lambdaopt's run to the target; the task for its data."""
    cfg = lambdaopt.compose([*OVERRIDES, f"model.depth={args.depth}", f"trainer.steps_per_epoch={args.check_every}",
                             f"seed={seed}", f"trainer.closed_form_step={str(not args.autograd).lower()}",
                             f"device={args.device}"])
    parts = build_parts(cfg, torch.device(args.device))
    task, model, trainer = parts.task, parts.model, build_trainer(cfg, parts, NullTracker())
    started = time.perf_counter()
    error = float("inf")
    while task.objective.steps_taken < args.max_steps:
        trainer.train_epoch()
        with torch.no_grad():  # the stopping criterion alone, as the reference computes it (no spectrum)
            error = task.valid_evaluator.relative_error(model.matrix())
        if error <= args.target:
            break
    return time.perf_counter() - started, task.objective.steps_taken, error, task


def reference(args, task) -> tuple[float, int, float]:
    """The reference implementation (bench/reference_speed.md: its checkout, two patches) on the same
    ground truth and observed entries: (seconds from its first step, steps, relative error)."""
    folder = Path(args.reference)
    data = task.data
    (folder / "datasets/mat-cmpl").mkdir(parents=True, exist_ok=True)
    torch.save(torch.from_numpy(data.truth.astype(np.float32)), folder / "datasets/mat-cmpl/gt.pt")
    torch.save([(torch.from_numpy(data.rows), torch.from_numpy(data.cols)), torch.from_numpy(data.values)],
               folder / "datasets/mat-cmpl/2000.pt")
    with tempfile.TemporaryDirectory() as logs:
        result = subprocess.run(
            [args.reference_python, "main.py", "--log_dir", logs, "--config", "configs/mat-cmpl/run.toml",
             "--config", "configs/mat-cmpl/2000.toml", "--config", "configs/opt/grouprmsprop.toml",
             "--set", "depth", str(args.depth)],
            cwd=folder, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    found = re.search(r"REACHED relative error (\S+) at step (\d+) after (\S+) s", result.stdout + result.stderr)
    if found is None:
        raise SystemExit(f"the reference did not print its REACHED line (is it patched? bench/reference_speed.md):\n"
                         f"{(result.stdout + result.stderr)[-2000:]}")
    return float(found[3]), int(found[2]) + 1, float(found[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=float, default=1e-4, help="relative squared error to reach")
    parser.add_argument("--check-every", type=int, default=100, help="steps between two error checks")
    parser.add_argument("--max-steps", type=int, default=200_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--autograd", action="store_true", help="trainer.closed_form_step=false")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (the error check synchronizes)")
    parser.add_argument("--reference", help="a patched checkout of the reference (bench/reference_speed.md): time "
                                            "it on the same data, in alternating rounds")
    parser.add_argument("--reference-python", default=sys.executable, help="the Python that runs the reference")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for round_ in range(args.rounds):
        seconds, steps, error, task = ours(args)
        rows.append(("lambdaopt", seconds, steps, error))
        print(f"round {round_ + 1}: lambdaopt {seconds:.1f} s, {steps} steps ({seconds / steps * 1e3:.3f} ms/step), "
              f"error {error:.3g}", flush=True)
        if args.reference:
            seconds, steps, error = reference(args, task)
            rows.append(("reference", seconds, steps, error))
            print(f"round {round_ + 1}: reference {seconds:.1f} s, {steps} steps "
                  f"({seconds / steps * 1e3:.3f} ms/step), error {error:.3g}", flush=True)
    print(f"\nwhat:   deep MF depth {args.depth}, n=100 rank 5, 2000 entries, init 1e-3, GroupRMSprop lr 1e-3, "
          f"full batch, {args.device}, {args.threads} thread(s); "
          f"time from the first step to relative error <= {args.target:g} "
          f"(lambdaopt checks every {args.check_every} steps, the reference every step)")
    medians = {}
    for who in ("lambdaopt", "reference"):
        mine = [r for r in rows if r[0] == who]
        if mine:
            medians[who] = statistics.median(r[1] for r in mine)
            steps = statistics.median(r[2] for r in mine)
            print(f"{who:10s}  median {medians[who]:.1f} s over {len(mine)} round(s), {steps:.0f} steps, "
                  f"{medians[who] / steps * 1e3:.3f} ms/step")
    if len(medians) == 2:
        print(f"reference / lambdaopt: {medians['reference'] / medians['lambdaopt']:.2f}x")


if __name__ == "__main__":
    main()
