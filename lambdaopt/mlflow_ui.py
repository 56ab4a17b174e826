"""The MLflow UI as a person sees it: an MLflow server over a store on a free port, pages rendered by
headless Chromium (its DOM after the single-page app has run, or a screenshot). Used by
tests/test_mlflow_ui.py and bench/mlflow_screenshots.py; Chromium comes from scripts/install-chromium.sh."""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

from lambdaopt.tracking import store_uri

# Virtual time Chromium gives the app to fetch runs and render before the DOM or the picture is taken:
# with less, the page is still MLflow's "loading" shell.
VIRTUAL_TIME_MS = 15000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@contextlib.contextmanager
def served(uri: str, artifacts: Path | None = None, cwd: Path | None = None, timeout_s: float = 90) -> Iterator[str]:
    """`mlflow server -w 1` on 127.0.0.1 over the store at `uri` on a free port (with `artifacts`: stored
    there and proxied to clients); yields its base URL once /health answers and stops it, with the worker
    processes it started (its process group), after. RuntimeError when it does not come up in `timeout_s`."""
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
               "--backend-store-uri", store_uri(uri)]
    if artifacts is not None:
        command += ["--artifacts-destination", str(artifacts), "--serve-artifacts"]
    # Without MLflow's job runner: by default `mlflow server` also starts 7 huey consumer processes for its
    # GenAI jobs, each importing MLflow (~5 s of CPU apiece, ~3 s longer to /health here); browsing and
    # logging runs need none of them. A value set in the environment wins.
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}
    server = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              start_new_session=True, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                urllib.request.urlopen(base + "/health", timeout=2).read()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mlflow server did not start on {base}: {server.stderr.read()[-2000:]}") from None
                time.sleep(0.5)
        yield base
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def _chromium_args(browser: str, virtual_ms: int = VIRTUAL_TIME_MS) -> list[str]:
    # software WebGL (SwiftShader), not --disable-gpu: MLflow draws its charts with WebGL, which headless
    # Chromium without a GPU otherwise leaves as empty placeholders
    return [browser, "--headless=new", "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
            "--window-size=1500,1000", f"--virtual-time-budget={virtual_ms}"]


def dump_dom(browser: str, url: str) -> str:
    """The page's DOM after the app has rendered it."""
    done = subprocess.run([*_chromium_args(browser), "--dump-dom", url], capture_output=True, text=True,
                          timeout=180, check=True)
    return done.stdout


def screenshot(browser: str, url: str, path: Path, height: int = 1000) -> None:
    """A PNG of the page; 30 s of virtual time, which chart pages need to fetch every history and draw."""
    args = [a if not a.startswith("--window-size") else f"--window-size=1500,{height}"
            for a in _chromium_args(browser, 2 * VIRTUAL_TIME_MS)]
    subprocess.run([*args, f"--screenshot={path}", url], capture_output=True, timeout=180, check=True)
