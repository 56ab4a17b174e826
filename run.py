"""Entry point: `python run.py [overrides]` or `python run.py -m [sweep overrides]`."""
import hydra

from lambdaopt.experiment import hydra_task


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg):
    return hydra_task(cfg)


if __name__ == "__main__":
    main()
