#!/usr/bin/env bash
# Headless Chromium for tests/test_mlflow_ui.py and bench/mlflow_screenshots.py, from the distribution's
# packages (Debian: chromium). Idempotent: nothing happens when a chromium is already on PATH.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: no chromium on PATH and no apt-get to install it: install Chromium with this system's package manager" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends chromium
