"""Entry point: `python run.py [overrides]` or `python run.py -m [sweep overrides]`."""
import sys

import hydra

from lambdaopt.experiment import hydra_task
from lambdaopt.launch import check_launch_dir


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg):
    return hydra_task(cfg)


if __name__ == "__main__":
    check_launch_dir(sys.argv[1:])
    main()
