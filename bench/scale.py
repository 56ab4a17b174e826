"""Epoch time, evaluation time and peak memory at three sizes: ML-100K-, ML-1M- and ML-10M-shaped data.

    python bench/scale.py                       # --sizes ml-100k ml-1m ml-10m --setups fixed dui --dim 128
    python bench/scale.py --device cuda         # the same on a GPU: wall seconds between synchronizations

For each size a synthetic log of that shape (users × items × interactions, long-tailed, the project's
own generator) is drawn once and kept in --cache-dir. Each (size, setup) then runs in a fresh child
process, so its peak RSS is its own: build the objective, train one epoch (MF d=128, batch 1024, lr 1e-2,
1 thread; fixed λ = 1e-2 with Adam or with SparseAdam (optimizer=sparse_adam), or λOpt-DUI with Adam, its
λ updated by AMSGrad or, `dui_sparse_lambda`, by SparseAdam (regularizer.lambda_optimizer=sparse_adam)),
then one full-ranking evaluation of the test split
(AUC + HR/NDCG@{10,50,100}, train ∪ validation excluded). Printed: CPU seconds of the epoch and of
the evaluation, training triples per second, and the child's peak RSS (training + evaluation); on CUDA
wall seconds instead of CPU seconds, and the peak of GPU memory torch allocated.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Clock, device_name, peak_rss_mb, print_table  # noqa: E402

from lambdaopt.data.interactions import Interactions, SplitDataset  # noqa: E402

# name: (users, items, mean interactions per user) — the MovieLens releases' shapes: ≈ 0.1 M, 1 M, 10 M
# interactions after generation and dedupe
# (60/20/20 temporal split per user, so training gets ≈ 60 % of the interactions)
SIZES = {"ml-100k": (943, 1682, 119), "ml-1m": (6040, 3706, 194), "ml-10m": (69878, 10677, 161)}
SETUPS = {"fixed": "fixed λ, Adam", "fixed_sparse": "fixed λ, SparseAdam", "dui": "λOpt-DUI, Adam",
          "dui_sparse_lambda": "λOpt-DUI, Adam for the model, SparseAdam for λ"}


def dataset_file(cache_dir: Path, size: str) -> Path:
    n_users, n_items, mean = SIZES[size]
    return cache_dir / f"synthetic-{n_users}x{n_items}x{mean}.npz"


def build(size: str, path: Path) -> None:
    from omegaconf import OmegaConf

    from lambdaopt.config.core import SplitConfig
    from lambdaopt.data.synthetic import load_synthetic

    n_users, n_items, mean = SIZES[size]
    data = load_synthetic(split=OmegaConf.structured(SplitConfig), n_users=n_users, n_items=n_items, rank=16,
                          mean_interactions=mean, min_interactions=20, chunk_users=512)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"{part}_{field}": getattr(getattr(data, part), field)
              for part in ("train", "valid", "test") for field in ("users", "items")}
    np.savez(path.with_suffix(".tmp.npz"), n_users=data.n_users, n_items=data.n_items, **arrays)
    os.replace(path.with_suffix(".tmp.npz"), path)


def load(path: Path, size: str) -> SplitDataset:
    with np.load(path) as f:
        parts = {part: Interactions.from_arrays(f[f"{part}_users"], f[f"{part}_items"]) for part in ("train", "valid", "test")}
        return SplitDataset(size, int(f["n_users"]), int(f["n_items"]), **parts)


def child(path: Path, size: str, setup: str, dim: int, device: str) -> dict:
    """One epoch + one evaluation in this process; what it measured, as a dict."""
    from lambdaopt.evaluation.ranking import RankingEvaluator
    from lambdaopt.models.mf import MatrixFactorization
    from lambdaopt.tasks.ranking import BPRObjective
    from lambdaopt.regularizers.fixed import FixedL2
    from lambdaopt.regularizers.lambdaopt import LambdaOpt
    from lambdaopt.trainer import Trainer
    from lambdaopt.tracking import NullTracker

    torch.set_num_threads(1)
    clock = Clock(device)
    dataset = load(path, size)
    torch.manual_seed(0)
    # optimizer=sparse_adam: sparse gradients, lazy Adam on the batch rows
    model = MatrixFactorization(dataset.n_users, dataset.n_items, dim=dim, item_bias=False,
                                sparse_grad=setup == "fixed_sparse").to(clock.device)
    if setup == "fixed_sparse":
        optimizer = torch.optim.SparseAdam(model.parameters(), lr=1e-2)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, fused=True)  # as lambdaopt/conf/optimizer/adam.yaml
    if setup == "dui_sparse_lambda":  # regularizer.lambda_optimizer=sparse_adam: λ rows of the batch only
        regularizer = LambdaOpt(granularity="dui", lambda_optimizer="sparse_adam")
    else:
        regularizer = LambdaOpt(granularity="dui") if setup == "dui" else FixedL2(1e-2)
    objective = BPRObjective(dataset, 1024, clock.device)
    regularizer.setup(model, objective)
    regularizer.to(clock.device)
    trainer = Trainer(model, regularizer, optimizer, objective, None, NullTracker(), max_epochs=1)
    started = clock.now()
    trainer.train_epoch()
    epoch = clock.now() - started
    evaluator = RankingEvaluator(dataset.n_users, dataset.n_items, dataset.test, dataset.train.concat(dataset.valid),
                                 ks=[10, 50, 100], device=clock.device)
    started = clock.now()
    metrics = evaluator(model.eval())
    evaluation = clock.now() - started
    gpu_mb = torch.cuda.max_memory_allocated(clock.device) / 2**20 if clock.device.type == "cuda" else 0.0
    return {"size": size, "setup": setup, "users": dataset.n_users, "items": dataset.n_items,
            "train": len(dataset.train), "test": len(dataset.test), "epoch_s": epoch, "eval_s": evaluation,
            "rss_mb": peak_rss_mb(), "gpu_mb": gpu_mb, "auc": metrics["auc"]}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", nargs="*", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--setups", nargs="*", default=list(SETUPS), choices=list(SETUPS))
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "lambdaopt-bench")
    parser.add_argument("--child", nargs=2, metavar=("SIZE", "SETUP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        size, setup = args.child
        print(json.dumps(child(dataset_file(args.cache_dir, size), size, setup, args.dim, args.device)))
        return
    torch.set_num_threads(1)  # as in each child (the caption reads it)
    rows, cuda = [], args.device.startswith("cuda")
    for size in args.sizes:
        path = dataset_file(args.cache_dir, size)
        if not path.exists():
            started = time.perf_counter()
            build(size, path)
            print(f"built {size} in {time.perf_counter() - started:.0f} s -> {path}", flush=True)
        for setup in args.setups:
            out = subprocess.run([sys.executable, __file__, "--child", size, setup, "--dim", str(args.dim),
                                  "--device", args.device, "--cache-dir", str(args.cache_dir)],
                                 capture_output=True, text=True)
            if out.returncode:
                sys.exit(f"{size} {setup} failed:\n{out.stderr[-2000:]}")
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append((size, f"{r['users']}x{r['items']}", f"{r['train']:,}", setup, f"{r['epoch_s']:.2f}",
                         f"{r['train'] / r['epoch_s']:,.0f}", f"{r['eval_s']:.2f}", f"{r['rss_mb']:,.0f}")
                        + ((f"{r['gpu_mb']:,.0f}",) if cuda else ()))
            print(*rows[-1], flush=True)
    print(f"\nMF d={args.dim}, batch 1024, lr 1e-2, {device_name(args.device)}; {Clock(args.device).unit} for one "
          "epoch and one full-ranking evaluation; peak RSS of a fresh process doing both"
          + (" and the peak GPU memory torch allocated" if cuda else "") + "\n")
    print_table(rows, ["size", "users x items", "train triples", "setup", "epoch s", "triples/s", "eval s",
                       "peak RSS MB", *(["peak GPU MB"] if cuda else [])])


if __name__ == "__main__":
    main()
