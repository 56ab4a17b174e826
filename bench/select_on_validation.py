"""Pick the best run of a sweep on validation, and compare it with the popularity ranking on test.

    python run.py -m dataset=ml-100k model.dim=128 regularizer.lam=0,1e-4,1e-3,1e-2,1e-1 \
        tracking.uri=sqlite:///ml100k.db
    python bench/select_on_validation.py --uri sqlite:///ml100k.db [--monitor ndcg@10] [--param regularizer.lam]

Reads the FINISHED runs of the experiment (those of the newest sweep_dir, unless --all-sweeps),
prints one row per run (the swept parameter, the validation metric, test AUC / HR@K / NDCG@K),
marks the run with the best validation metric, and adds the popularity ranking evaluated on the
same test split (the dataset rebuilt from the selected run's overrides, so the same cache entry).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

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

    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from mlflow.tracking import MlflowClient

    import lambdaopt.config  # noqa: F401  (registers the schemas)
    from lambdaopt.metrics import RankingEvaluator
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
    best = max(runs, key=lambda r: r.data.metrics.get(monitor, float("-inf")))
    ks = [int(k) for k in args.ks.split(",")]
    columns = ["auc"] + [f"{m}@{k}" for k in ks for m in ("hr", "ndcg")]

    header = f"{args.param:>16} {('valid ' + args.monitor):>14}" + "".join(f"{'test ' + c:>14}" for c in columns)
    print(header)
    for run in sorted(runs, key=lambda r: float(r.data.params.get(args.param, "nan"))):
        test = [run.data.metrics.get(f"test/{mlflow_key(c)}", float("nan")) for c in columns]
        mark = " *" if run.info.run_id == best.info.run_id else ""
        print(f"{run.data.params.get(args.param, '?'):>16} {run.data.metrics.get(monitor, float('nan')):>14.4f}"
              + "".join(f"{v:>14.4f}" for v in test) + mark)

    overrides = [o for o in best.data.tags.get("overrides", "").split() if not o.startswith(("tracking.", "hydra."))]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    dataset = instantiate(cfg.dataset)
    evaluator = RankingEvaluator(dataset.n_users, dataset.n_items, dataset.test, dataset.train.concat(dataset.valid),
                                 ks=ks)
    popularity = evaluator(Popularity(dataset.n_items, dataset.train))
    print(f"{'popularity':>16} {'':>14}" + "".join(f"{popularity[c]:>14.4f}" for c in columns))
    print(f"\nselected on validation {args.monitor}: {args.param}={best.data.params.get(args.param)} "
          f"(run {best.info.run_id}); dataset {dataset.name} hash {dataset.fingerprint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
