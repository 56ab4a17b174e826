"""Screenshots of what a person sees in the MLflow UI, taken with headless Chromium (Debian: `chromium`).

    python bench/mlflow_screenshots.py --uri sqlite:///mlflow.db --out screenshots/

Starts `mlflow ui -w 1` on a free port over the store, then captures: the experiment's run list (as a
fresh browser first opens it), the newest run's page through the link a run prints, and the newest sweep
parent's page. Prints each file and what it should show.
"""
from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from mlflow.tracking import MlflowClient

from lambdaopt.tracking import experiment_url, store_uri


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shoot(browser: str, url: str, path: Path) -> None:
    subprocess.run([browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1500,1000",
                    "--virtual-time-budget=15000", f"--screenshot={path}", url],
                   capture_output=True, timeout=120, check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uri", default="sqlite:///mlflow.db")
    parser.add_argument("--experiment", default="lambdaopt")
    parser.add_argument("--out", default="screenshots")
    args = parser.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        print("error: no chromium: install it (apt-get install chromium)", file=sys.stderr)
        return 2
    uri = store_uri(args.uri)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(args.experiment)
    if experiment is None:
        print(f"error: no experiment '{args.experiment}' at {uri}", file=sys.stderr)
        return 2
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=200)
    children = [r for r in runs if r.data.tags.get("sweep_role") != "parent"]
    parents = [r for r in runs if r.data.tags.get("sweep_role") == "parent"]
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "-w", "1",
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(60):
            try:
                urllib.request.urlopen(base + "/health", timeout=1)
                break
            except OSError:
                time.sleep(1)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        shots = [("run_list.png", experiment_url(base, experiment.experiment_id),
                  "the experiment's training runs (not the GenAI traces view), sweeps as expandable parents")]
        if children:
            url = experiment_url(base, experiment.experiment_id, children[0].info.run_id)
            shots.append(("run.png", url, f"run '{children[0].info.run_name}': name, description, selected metrics"))
        if parents:
            url = experiment_url(base, experiment.experiment_id, parents[0].info.run_id)
            shots.append(("sweep_parent.png", url, "the sweep's parent: swept keys, best child's metrics, table"))
        for name, url, what in shots:
            shoot(browser, url, out / name)
            print(f"{out / name}: {what}\n  {url}")
    finally:
        server.terminate()
        server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
