"""Full-ranking evaluation time (AUC + HR/NDCG@{10,50,100}) on ML-100K-shaped data, and the sizes
it scales with.

    python bench/ranking_eval.py [--repeat 5] [--chunk-users 1024] [--device cuda]

Times `RankingEvaluator` on the test split (train ∪ validation excluded) of a d=128 MF, 1 thread (CPU
time; on CUDA wall time between synchronizations),
and prints the same for a 4× larger catalogue so growth with |I| is visible. Beside it, in the same
process, the floor of any exact full ranking done this way: the chunks' score products and row sorts
alone; "× floor" is how much the metrics add on top.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Clock, device_name, ml100k_shaped, peak_rss_mb, print_table  # noqa: E402

from lambdaopt.config.core import SplitConfig  # noqa: E402
from lambdaopt.data.synthetic import load_synthetic  # noqa: E402
from lambdaopt.evaluation.ranking import RankingEvaluator, sort_rows  # noqa: E402
from lambdaopt.models.mf import MatrixFactorization  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402


def seconds(work, repeat: int, clock: Clock) -> float:
    work()  # warm-up
    started = clock.now()
    for _ in range(repeat):
        work()
    return (clock.now() - started) / repeat


def time_evaluation(dataset, repeat: int, chunk_users: int, device) -> tuple[float, float]:
    """Seconds per evaluation, and per pass of the same chunks' score products and row sorts alone."""
    model = MatrixFactorization(dataset.n_users, dataset.n_items, dim=128, init_std=0.1).eval().to(device)
    evaluator = RankingEvaluator(dataset.n_users, dataset.n_items, dataset.test, dataset.train.concat(dataset.valid),
                                 ks=[10, 50, 100], chunk_users=chunk_users, device=device)
    clock = Clock(device)

    @torch.no_grad()
    def products_and_sorts():
        for start in range(0, len(evaluator.users), chunk_users):
            sort_rows(model.score_all(evaluator.users[start:start + chunk_users]))

    return seconds(lambda: evaluator(model), repeat, clock), seconds(products_and_sorts, repeat, clock)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--chunk-users", type=int, default=1024)
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    args = parser.parse_args()
    clock = Clock(args.device)
    torch.set_num_threads(1)
    rows = []
    for name, dataset in (("ML-100K-shaped (943 x 1682)", ml100k_shaped()),
                          ("4x items (943 x 6728)", load_synthetic(split=OmegaConf.structured(SplitConfig),
                                                                  n_users=943, n_items=6728, rank=16,
                                                                  mean_interactions=120, min_interactions=20))):
        evaluation, floor = time_evaluation(dataset, args.repeat, args.chunk_users, clock.device)
        rows.append((name, len(dataset.test), f"{evaluation:.4f}", f"{floor:.4f}", f"{evaluation / floor:.2f}",
                     f"{peak_rss_mb():.0f}"))
        print(*rows[-1], flush=True)
    print(f"\nfull ranking, AUC + HR/NDCG@{{10,50,100}}, MF d=128, chunk {args.chunk_users} users, "
          f"{device_name(clock.device)}, {clock.unit} per evaluation (mean of {args.repeat})\n")
    print_table(rows, ["data", "test interactions", "s/eval", "products + sorts s", "× floor", "peak RSS MB"])


if __name__ == "__main__":
    main()
