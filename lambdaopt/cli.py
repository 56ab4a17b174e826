"""The command line, one entry point for `lambdaopt [overrides]` (the console script), `python -m lambdaopt`
and `python run.py` in a checkout: Hydra composes `lambdaopt/conf/` (shipped inside the package, so an
installed lambdaopt runs from any directory) and hands the config to `experiment.hydra_task`."""
from __future__ import annotations

import sys

import hydra

from lambdaopt.experiment import hydra_task
from lambdaopt.launch import check_launch_dir
from lambdaopt.startup import collect_garbage_rarely


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def _main(cfg):
    return hydra_task(cfg)


def main() -> None:
    collect_garbage_rarely()  # before Hydra composes (startup.py)
    check_launch_dir(sys.argv[1:])
    _main()
