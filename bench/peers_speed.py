"""Epoch time of lambdaopt's MF-BPR beside cornac's and implicit's BPR, on lambdaopt's own split, and the
time each takes to reach a validation quality.

    pip install -e ".[peers]"
    python bench/peers_speed.py                      # ML-100K, d = 128, 7 interleaved rounds
    python bench/peers_speed.py --quality             # + wall seconds to validation NDCG@10 targets (--quality-epochs)
    python bench/peers_speed.py dataset=synthetic     # positional arguments: lambdaopt overrides

Epochs: every contender trains one epoch per round, in turn (interleaved, so a slow patch of the machine
hits all of them), one thread each, in this process; the table shows the median seconds per epoch over
the rounds and its ratio to cornac's, measured in this run. An epoch is every training interaction once
(lambdaopt: a permutation, batch 1024; cornac and implicit: as many triples drawn with replacement).
lambdaopt's contenders are built exactly as `run.py` builds them (`lambdaopt.compose` + `build_parts`),
and each is timed through `Trainer.train_epoch`, the loop a run uses: negative sampling, batching and
the loss bookkeeping are inside the time, evaluation is not. `closed-form` rows are the default step
(tasks/bpr_step.py), `autograd` rows the same configuration with `trainer.closed_form_step=false`.

Quality (`--quality`): wall seconds of training (evaluation excluded) until the validation NDCG@10 of
each run first reaches (a) that of the model the strong fixed-λ baseline selects on validation (the README's
selected grid point on ML-100K temporal: SGD lr 10, λ 3e-3, ≤ 400 epochs, patience 40, trained by the
trainer's own loop and selection) and (b) cornac's best; our runs: that baseline with one update per batch
and with per-sample SGD (`trainer.per_sample=true`), cornac BPR at its tuned point (lr .05, reg .01, 400
epochs), all evaluated after every epoch by lambdaopt's `RankingEvaluator` on the same validation split.
Seed 0; `--quality-seeds` for more.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import print_table  # noqa: E402
from peers import cornac_scorer  # noqa: E402

# our contenders: (row name, lambdaopt overrides on top of the command line's)
OURS = {
    "lambdaopt fixed λ, SGD (closed-form)": [],
    "lambdaopt fixed λ, SGD (autograd)": ["trainer.closed_form_step=false"],
    "lambdaopt fixed λ, SGD per-sample": ["trainer.per_sample=true"],
    "lambdaopt fixed λ, Adam (closed-form)": ["optimizer=adam"],
    "lambdaopt fixed λ, Adam (autograd)": ["optimizer=adam", "trainer.closed_form_step=false"],
    "lambdaopt λOpt-DUI, SGD": ["regularizer=lambdaopt_dui"],
}


def build_ours(overrides: list[str]):
    """A trainer over the parts `run.py` would build for these overrides (no tracking, no checkpoints)."""
    import lambdaopt
    from lambdaopt.experiment import build_parts, build_trainer
    from lambdaopt.tracking import NullTracker

    cfg = lambdaopt.compose([*overrides, "tracking.enabled=false", "trainer.checkpoint=false"])
    parts = build_parts(cfg, torch.device("cpu"))
    return parts, build_trainer(cfg, parts, NullTracker())


class Cornac:
    """cornac BPR; `fit` again continues from the current factors (one epoch per call with max_iter=1)."""

    def __init__(self, dataset, dim: int, lr: float = 0.05, reg: float = 0.01, seed: int = 0):
        import cornac

        warnings.filterwarnings("ignore", "Model is already fitted")
        train = dataset.train
        data = list(zip(train.users.tolist(), train.items.tolist(), [1.0] * len(train)))
        self.train_set = cornac.data.Dataset.build(data, fmt="UIR", seed=seed)
        self.model = cornac.models.BPR(k=dim, max_iter=1, learning_rate=lr, lambda_reg=reg, seed=seed,
                                       num_threads=1, verbose=False)
        self.dataset = dataset

    def epoch(self) -> None:
        self.model.fit(self.train_set)

    def scorer(self):
        return cornac_scorer(self.model, self.train_set, self.dataset)


class Implicit:
    """implicit BPR; `fit` again continues from the current factors (one epoch per call)."""

    def __init__(self, dataset, dim: int, seed: int = 0):
        import scipy.sparse as sp
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        train = dataset.train
        self.matrix = sp.csr_matrix((np.ones(len(train), np.float32), (train.users, train.items)),
                                    shape=(dataset.n_users, dataset.n_items))
        self.model = BayesianPersonalizedRanking(factors=dim, iterations=1, num_threads=1, random_state=seed)

    def epoch(self) -> None:
        self.model.fit(self.matrix, show_progress=False)


def time_epochs(args, dataset_overrides: list[str]) -> None:
    contenders, triples = {}, {}
    for name, extra in OURS.items():
        parts, trainer = build_ours([*dataset_overrides, *extra])
        contenders[name] = trainer.train_epoch
        triples[name] = len(parts.task.objective.fit)
        dataset = parts.dataset
    dim = int(parts.model.dim)
    contenders["cornac 3.0.1 BPR"] = Cornac(dataset, dim).epoch
    contenders["implicit 0.7.3 BPR"] = Implicit(dataset, dim).epoch
    for run in contenders.values():  # warm-up: first-call allocations, lazy imports
        run()
    seconds = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for name, run in contenders.items():
            started = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - started)
    base = statistics.median(seconds["cornac 3.0.1 BPR"])
    rows = []
    for name, values in seconds.items():
        median = statistics.median(values)
        rows.append((name, f"{median:.4f}", f"{min(values):.4f}", f"{len(dataset.train) / median:,.0f}",
                     f"{median / base:.2f}x"))
    print(f"\n{dataset.name}: {dataset.n_users} users x {dataset.n_items} items, {len(dataset.train):,} training "
          f"interactions (lambdaopt trains {min(triples.values()):,}–{max(triples.values()):,} triples/epoch: λOpt "
          f"may hold some out), d = {dim}, batch "
          f"1024, 1 thread, median of {args.rounds} interleaved rounds\n")
    print_table(rows, ["contender", "s/epoch", "min s", "interactions/s", "vs cornac"])


# The strong fixed-λ baseline (README, Strong baselines: the grid's selected point on ML-100K temporal, its
# ≤ 400 epochs and patience 40), as one update per batch and as per-sample SGD (trainer.per_sample; the
# same point was selected on validation in a per-sample grid of lr {10, 25, 50, 100} × λ {1e-3, 3e-3, 1e-2}).
STRONG = ["optimizer.lr=10", "regularizer.lam=3e-3", "trainer.max_epochs=400", "trainer.patience=40"]
QUALITY = {"lambdaopt, batch step": STRONG, "lambdaopt, per-sample": [*STRONG, "trainer.per_sample=true"],
           # cornac's step: lr 50 per batch-mean loss is lr/B ≈ .049 per triple (second in that grid)
           "lambdaopt, per-sample lr 50": [*STRONG, "trainer.per_sample=true", "optimizer.lr=50"]}
CORNAC_QUALITY = "cornac BPR (lr .05, reg .01)"


def our_curve(overrides: list[str]):
    """Train with the trainer's own loop and selection (validation NDCG@10, smoothed, patience): the
    (training seconds so far, validation NDCG@10) after each epoch, and the selected model's value."""
    _, trainer = build_ours(overrides)
    result = trainer.fit()
    spent = np.cumsum([h["epoch_seconds"] for h in result.history])
    return [(t, h["valid/ndcg@10"]) for t, h in zip(spent, result.history)], result.best_valid["ndcg@10"]


def time_to_quality(args, dataset_overrides: list[str]) -> None:
    """Training seconds until validation NDCG@10 first reaches (a) the value of the model the strong
    baseline's run selects on validation (the issue's target) and (b) cornac's best, for our runs; cornac
    trains 400 epochs, scored after each, and is timed to its own best epoch (and to (a))."""
    for seed in range(args.quality_seeds):
        curves, selected = {}, {}
        for name, extra in QUALITY.items():
            curves[name], selected[name] = our_curve([*dataset_overrides, *extra, f"seed={seed}",
                                                      f"trainer.max_epochs={args.quality_epochs}"])
        parts, _ = build_ours([*dataset_overrides, f"seed={seed}"])
        peer, spent, curve = Cornac(parts.dataset, int(parts.model.dim), seed=seed), 0.0, []
        for _ in range(args.quality_epochs):
            started = time.perf_counter()
            peer.epoch()
            spent += time.perf_counter() - started
            curve.append((spent, parts.task.valid_evaluator(peer.scorer())["ndcg@10"]))
        curves[CORNAC_QUALITY] = curve
        cornac_best = max(v for _, v in curve)
        baseline = selected["lambdaopt, batch step"]  # the value of the model the tuned baseline selects
        targets = {f"baseline's selected {baseline:.4f}": baseline, f"cornac's best {cornac_best:.4f}": cornac_best}
        rows = []
        for name, curve in curves.items():
            row = [name, f"{max(v for _, v in curve):.4f}", str(len(curve))]
            for target in targets.values():
                reached = next(((t, e) for e, (t, v) in enumerate(curve, 1) if v >= target), None)
                row.append(f"{reached[0]:.1f} s (epoch {reached[1]})" if reached else "never")
            rows.append(row)
        print(f"\nseed {seed}: validation NDCG@10 after every epoch; training seconds (evaluation excluded) to reach")
        print_table(rows, ["run", "best valid", "epochs", *targets])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="lambdaopt overrides (default: dataset=ml-100k model.dim=128)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quality", action="store_true", help="also time each run to validation NDCG@10 targets")
    parser.add_argument("--quality-seeds", type=int, default=1)
    parser.add_argument("--quality-epochs", type=int, default=400, help="the most epochs of each quality run")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    overrides = args.overrides or ["dataset=ml-100k", "model.dim=128"]
    time_epochs(args, overrides)
    if args.quality:
        time_to_quality(args, overrides)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
