"""Wall time for depth-3 deep MF to reach relative error ≤ 1e-4 on the reference completion setup.

Setup (the deep-MF papers' completion experiment, Arora et al. 2019): n = 100, rank 5, 2000 observed entries, gaussian
init with scale 1e-3, GroupRMSprop lr 1e-3. The reference implementation cannot run in this script: how
it was timed side by side, and its numbers, are in bench/reference_speed.md (a ratio to it is only ever
printed from a measurement in the same session, never from a constant). This drives the framework's own pieces (config,
task selection, `Trainer.train_epoch` on the full-batch objective) and checks the error vs W* every
`--check-every` steps; the check is timed too.

    python bench/deep_mf_convergence.py [--target 1e-4] [--check-every 100] [--threads 1]
"""
from __future__ import annotations

import argparse
import time

import torch
import lambdaopt
from lambdaopt.experiment import build_parts, build_trainer
from lambdaopt.tracking import NullTracker



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=float, default=1e-4, help="relative squared error to reach")
    parser.add_argument("--check-every", type=int, default=100, help="steps between two error checks")
    parser.add_argument("--max-steps", type=int, default=200_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--depth", type=int, default=3)
    args = parser.parse_args()

    overrides = ["dataset=lowrank", "dataset.n=100", "dataset.rank=5", "dataset.n_train_samples=2000",
                 "model=deep_mf", f"model.depth={args.depth}", "model.init_scale=1e-3",
                 "optimizer=group_rmsprop", "optimizer.lr=1e-3", f"trainer.steps_per_epoch={args.check_every}",
                 "device=cpu", "tracking.enabled=false"]
    cfg = lambdaopt.compose(overrides)
    torch.set_num_threads(args.threads)
    parts = build_parts(cfg, torch.device("cpu"))
    task, model, trainer = parts.task, parts.model, build_trainer(cfg, parts, NullTracker())

    started = time.perf_counter()
    error = float("inf")
    while task.objective.steps_taken < args.max_steps:
        trainer.train_epoch()
        with torch.no_grad():
            error = task.valid_evaluator(model)["relative_error"]
        if error <= args.target:
            break
    seconds = time.perf_counter() - started
    steps = task.objective.steps_taken
    reached = "reached" if error <= args.target else "NOT reached"
    print(f"what:       deep MF depth {args.depth}, n=100 rank 5, 2000 entries, init 1e-3, GroupRMSprop lr 1e-3, "
          f"full batch, {args.threads} thread(s)")
    print(f"target:     relative error <= {args.target:g} ({reached}: {error:.3g})")
    print(f"iterations: {steps}")
    print(f"time:       {seconds:.1f} s ({seconds / steps * 1e3:.3f} ms/step incl. a check every {args.check_every})")


if __name__ == "__main__":
    main()
