"""Checks that must run before Hydra starts: it writes into the launch directory before any of our code."""
from __future__ import annotations

import os
import sys

# flags after which Hydra only prints, writing nothing
_PRINT_ONLY = ("--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "--shell-completion", "-sc")


def check_launch_dir(argv: list[str]) -> None:
    """Exit with one line if the working directory cannot be written and the command would write there:
    Hydra's `outputs/` (`multirun/` with -m) and the default `sqlite:///mlflow.db` go to it, and
    Hydra's own failure is a traceback. Output folders set on the command line are the user's choice."""
    if any(arg in _PRINT_ONLY for arg in argv):
        return
    cwd = os.getcwd()
    if os.access(cwd, os.W_OK):
        return
    multirun = "-m" in argv or "--multirun" in argv
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    if any(arg.startswith(key + "=") for arg in argv):
        return
    print(f"error: cannot write in the launch directory {cwd} ({'multirun/' if multirun else 'outputs/'} and "
          f"the default sqlite:///mlflow.db go there); run from a directory you can write, or set {key}=DIR and "
          "tracking.uri=sqlite:////DIR/mlflow.db", file=sys.stderr)
    sys.exit(2)
