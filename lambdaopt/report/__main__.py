"""`python -m lambdaopt.report --experiment NAME [--parent RUN_ID] [--tag KEY=VALUE] [--out DIR] [--search]`."""
from __future__ import annotations

import argparse
import os
import sys

from lambdaopt.errors import LambdaoptError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lambdaopt.report", description=(
        "Paper-style table (CSV + Markdown) and figures (PNG) from the MLflow runs of an experiment."))
    parser.add_argument("--experiment", default="lambdaopt", help="MLflow experiment (default: lambdaopt)")
    parser.add_argument("--parent", help="only the children of this sweep parent run; the report is logged to it")
    parser.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE", help="only runs with this tag")
    parser.add_argument("--uri", default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"),
                        help="tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    parser.add_argument("--out", help="output folder (default: reports/<experiment>/<parent or tags, or all>/)")
    parser.add_argument("--metrics", help="comma-separated test metrics, e.g. auc,hr@10,ndcg@10 (default: all)")
    parser.add_argument("--search", action="store_true", help=(
        "per seed: the best λ of a grid and of an Optuna search against λOpt, with their compute "
        "(runs of lambdaopt/conf/sweep/search_vs_lambdaopt*.yaml); search.md and search.csv"))
    args = parser.parse_args(argv)
    try:
        tags = []
        for item in args.tag:
            key, sep, value = item.partition("=")
            if not sep:
                raise LambdaoptError(f"--tag {item!r}: use KEY=VALUE")
            tags.append((key, value))
        from lambdaopt.report import search_report, write_report

        write = search_report if args.search else write_report
        write(args.uri, args.experiment, args.parent, tags, args.out, args.metrics.split(",") if args.metrics else None)
    except LambdaoptError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
