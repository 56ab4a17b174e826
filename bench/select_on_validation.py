"""Pick the best run of a sweep on validation for each seed, and compare with the popularity ranking on test.

    python run.py -m dataset=ml-100k model.dim=128 regularizer.lam=0,1e-4,1e-3,1e-2,1e-1 \
        tracking.uri=sqlite:///ml100k.db
    python bench/select_on_validation.py --uri sqlite:///ml100k.db [--monitor ndcg@10] [--param regularizer.lam]

Reads the FINISHED runs of the experiment (those of the newest sweep_dir, unless --all-sweeps),
prints one row per run (seed, the swept parameter, the validation metric, test AUC / HR@K / NDCG@K),
marks the run with the best validation metric *within each seed* (a seed is a repetition: selecting
across seeds would pick the luckiest draw), prints the selected runs' test mean ± std over seeds, and
adds the popularity ranking evaluated on the same test split (the dataset rebuilt from a selected
run's overrides, so the same cache entry).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uri", default="sqlite:///mlflow.db")
    parser.add_argument("--experiment", default="lambdaopt")
    parser.add_argument("--monitor", default="ndcg@10", help="validation metric to select on (higher is better)")
    parser.add_argument("--param", default="regularizer.lam", help="the swept parameter to show")
    parser.add_argument("--ks", default="50,100", help="test cut-offs to show")
    parser.add_argument("--all-sweeps", action="store_true")
    args = parser.parse_args()

    from hydra.utils import instantiate
    from mlflow.tracking import MlflowClient

    import lambdaopt
    from lambdaopt.evaluation.ranking import RankingEvaluator
    from lambdaopt.models.popularity import Popularity
    from lambdaopt.tracking import mlflow_key

    client = MlflowClient(tracking_uri=args.uri)
    experiment = client.get_experiment_by_name(args.experiment)
    if experiment is None:
        print(f"error: no experiment {args.experiment!r} at {args.uri}", file=sys.stderr)
        return 2
    runs = [r for r in client.search_runs([experiment.experiment_id], max_results=10_000)
            if r.info.status == "FINISHED"]
    if not args.all_sweeps and runs:
        newest = max(runs, key=lambda r: r.info.start_time).data.tags.get("sweep_dir")
        runs = [r for r in runs if r.data.tags.get("sweep_dir") == newest]
    if not runs:
        print("error: no finished runs", file=sys.stderr)
        return 2
    monitor = f"best_valid/{mlflow_key(args.monitor)}"
    if all(f"{monitor}_smoothed" in r.data.metrics for r in runs):
        monitor += "_smoothed"  # what each run's epoch was selected on (trainer.smoothing), as the report does
    by_seed: dict[str, list] = {}
    for run in runs:
        by_seed.setdefault(run.data.params.get("seed", "0"), []).append(run)
    selected = {seed: max(group, key=lambda r: r.data.metrics.get(monitor, float("-inf")))
                for seed, group in by_seed.items()}
    chosen = {r.info.run_id for r in selected.values()}
    ks = [int(k) for k in args.ks.split(",")]
    columns = ["auc"] + [f"{m}@{k}" for k in ks for m in ("hr", "ndcg")]

    def test_values(run):
        return [run.data.metrics.get(f"test/{mlflow_key(c)}", float("nan")) for c in columns]

    print(f"{'seed':>5} {args.param:>16} {('valid ' + args.monitor):>14}" + "".join(f"{'test ' + c:>14}" for c in columns))
    for run in sorted(runs, key=lambda r: (r.data.params.get("seed", "0"), float(r.data.params.get(args.param, "nan")))):
        mark = " *" if run.info.run_id in chosen else ""
        print(f"{run.data.params.get('seed', '0'):>5} {run.data.params.get(args.param, '?'):>16} "
              f"{run.data.metrics.get(monitor, float('nan')):>14.4f}"
              + "".join(f"{v:>14.4f}" for v in test_values(run)) + mark)
    values = np.array([test_values(r) for r in selected.values()])
    spread = values.std(axis=0) if len(values) > 1 else None
    print(f"{'selected':>5} {'(per seed)':>16} {'':>14}" + "".join(
        f"{m:>14.4f}" if spread is None else f"{m:>8.4f}±{s:.3f}" for m, s in
        zip(values.mean(axis=0), spread if spread is not None else values.mean(axis=0))))
    best = next(iter(selected.values()))
    overrides = [o for o in best.data.tags.get("overrides", "").split() if not o.startswith(("tracking.", "hydra."))]
    cfg = lambdaopt.compose(overrides)
    dataset = instantiate(cfg.dataset)
    evaluator = RankingEvaluator(dataset.n_users, dataset.n_items, dataset.test, dataset.train.concat(dataset.valid),
                                 ks=ks)
    popularity = evaluator(Popularity(dataset.n_items, dataset.train))
    print(f"{'':>5} {'popularity':>16} {'':>14}" + "".join(f"{popularity[c]:>14.4f}" for c in columns))
    print(f"\nselected on validation {args.monitor}, per seed: " + ", ".join(
        f"seed {seed}: {args.param}={run.data.params.get(args.param)}" for seed, run in sorted(selected.items()))
          + f"; dataset {dataset.name} hash {dataset.fingerprint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
