"""Cost of one checkpoint write vs one epoch + validation, on the default experiment's data and model.

    .venv/bin/python bench/checkpoint_cost.py [--regularizers fixed lambdaopt_dui] [--repeats 5] [--dir .]

Builds the run from the real configs (synthetic 1500 × 1500, MF d = 64, Adam), trains one epoch,
validates once, then times `Checkpointer.save(trainer.state_dict())` (torch.save to a temporary file,
fsync, rename) with a best-state copy present, as after an improving evaluation.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import lambdaopt
from lambdaopt import checkpoint
from lambdaopt.experiment import build_parts, build_trainer
from lambdaopt.tracking import NullTracker

def measure(regularizer_name: str, repeats: int, where: str) -> str:
    cfg = lambdaopt.compose([f"regularizer={regularizer_name}", "tracking.enabled=false"])
    parts = build_parts(cfg, torch.device("cpu"))
    model, trainer = parts.model, build_trainer(cfg, parts, NullTracker())
    started = time.perf_counter()
    trainer.train_epoch()
    epoch = time.perf_counter() - started
    started = time.perf_counter()
    trainer.evaluate()
    validation = time.perf_counter() - started
    trainer.best_state = {k: v.clone() for k, v in model.state_dict().items()}
    with tempfile.TemporaryDirectory(dir=where) as folder:
        writer = checkpoint.Checkpointer(Path(folder), True, {"config": {}})
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            writer.save(trainer.state_dict())
            times.append(time.perf_counter() - started)
        size = (Path(folder) / checkpoint.FILENAME).stat().st_size
    write = statistics.median(times)
    return (f"{regularizer_name:>14}: epoch {epoch:.2f} s + validation {validation:.2f} s; checkpoint "
            f"{write * 1000:.0f} ms median of {repeats} ({size / 1e6:.1f} MB), "
            f"{100 * write / (epoch + validation):.0f}% of an evaluated epoch")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regularizers", nargs="+", default=["fixed", "lambdaopt_dui"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dir", default=".", help="where to write (the disk mlartifacts/ would be on)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name in args.regularizers:
        print(measure(name, args.repeats, args.dir))


if __name__ == "__main__":
    main()
