"""Screenshots of what a person sees in the MLflow UI, taken with headless Chromium
(scripts/install-chromium.sh installs it).

    python bench/mlflow_screenshots.py --uri sqlite:///mlflow.db --out screenshots/ [--run RUN_ID]

Starts `mlflow ui -w 1` on a free port over the store, then captures through the links lambdaopt prints:
the experiment's run list (as a fresh browser first opens it), one run's Overview (its description with the
selected epoch's table, metrics, dataset, logged model), its metric charts, system metrics, artifacts, the
experiment's Models tab, and the newest sweep parent's page. Prints each file and what it should show.
MLflow draws its charts with WebGL: Chromium runs here with software WebGL (SwiftShader, lambdaopt/mlflow_ui.py);
with --disable-gpu the charts stayed empty placeholders.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

from lambdaopt.mlflow_ui import chromium, screenshot, served
from lambdaopt.tracking import experiment_url, store_uri


def pages(client, experiment_id: str, base: str, run_id: str | None) -> list[tuple[str, str, str, int]]:
    """(file, url, what it shows, window height) for every page worth a look."""
    runs = client.search_runs([experiment_id], order_by=["attributes.start_time DESC"], max_results=200)
    children = [r for r in runs if r.data.tags.get("sweep_role") != "parent"]
    parents = [r for r in runs if r.data.tags.get("sweep_role") == "parent"]
    shots = [("run_list.png", experiment_url(base, experiment_id),
              "the experiment's training runs (not the GenAI traces view): names, Dataset column, sweeps as "
              "expandable parents", 1000)]
    run = next((r for r in children if r.info.run_id == run_id), children[0] if children else None)
    if run is not None:
        page = lambda tab: experiment_url(base, experiment_id, f"{run.info.run_id}{tab}")  # noqa: E731
        name = run.info.run_name
        shots += [("run_overview.png", page(""), f"run '{name}': description with the selected epoch's table, "
                   "metrics, dataset (name, digest), logged model", 2000),
                  ("run_charts.png", page("/model-metrics"), "its charts: valid/* per epoch, test/* and "
                   "best_valid/* as one point at the selected epoch", 1600),
                  ("run_artifacts.png", page("/artifacts"), "its artifacts: figures (PNG + PDF), config, "
                   "model.pt", 1000)]
        if any(k.startswith("system/") for k in run.data.metrics):
            shots.append(("run_system_metrics.png", page("/system-metrics"), "CPU and memory over the run", 1200))
        shots.append(("models.png", f"{base}/#/experiments/{experiment_id}/models?workflowType=machine_learning",
                      "the experiment's logged models (the pyfunc top-K recommenders)", 1000))
    if parents:
        shots.append(("sweep_parent.png", experiment_url(base, experiment_id, parents[0].info.run_id),
                      "the sweep's parent: swept keys, best child's metrics, the report table", 2000))
    return shots


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uri", default="sqlite:///mlflow.db")
    parser.add_argument("--experiment", default="lambdaopt")
    parser.add_argument("--run", default=None, help="the run whose pages to capture (default: the newest)")
    parser.add_argument("--out", default="screenshots")
    args = parser.parse_args()
    browser = chromium()
    if browser is None:
        print("error: no chromium: install it with scripts/install-chromium.sh", file=sys.stderr)
        return 2
    uri = store_uri(args.uri)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(args.experiment)
    if experiment is None:
        print(f"error: no experiment '{args.experiment}' at {uri}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with served(uri) as base:
        for name, url, what, height in pages(client, experiment.experiment_id, base, args.run):
            screenshot(browser, url, out / name, height)
            print(f"{out / name}: {what}\n  {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
