"""The Python API, for notebooks and scripts: the CLI's configs and training loop without a shell.

    import lambdaopt
    cfg = lambdaopt.compose(["dataset=ml-100k", "regularizer=lambdaopt_dui"])   # the CLI's overrides
    result = lambdaopt.run(cfg)            # trains, selects on validation, tests, logs to MLflow
    result.test["ndcg@10"], result.run_id, result.model                       # the selected model
    lambdaopt.evaluate(scores, heldout, excluded)   # full-ranking metrics of any score matrix

`compose` reads the same packaged configs and schemas as the command line, so defaults and range
checks are the same in both (the schemas: lambdaopt/config/, lambdaopt/registry.py).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from omegaconf import DictConfig


def compose(overrides: Sequence[str] = (), config_name: str = "config") -> "DictConfig":
    """The config `lambdaopt OVERRIDES` would run (Hydra's compose API over lambdaopt/conf/).

    Works inside and outside a running Hydra app and leaves Hydra's global state as it found it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    import lambdaopt.config  # noqa: F401  (registers the schemas the YAML options extend)

    hydra = GlobalHydra.instance()
    previous = hydra.hydra if hydra.is_initialized() else None
    hydra.clear()
    try:
        with initialize_config_module("lambdaopt.conf", version_base="1.3"):
            return hydra_compose(config_name=config_name, overrides=list(overrides))
    finally:
        if previous is not None:
            hydra.initialize(previous.config_loader)  # hand a running Hydra app its state back


def run(cfg: "DictConfig | Sequence[str]" = ()):
    """Train and evaluate one configuration (a composed config, or overrides to compose): an
    `experiment.ExperimentResult` with the test metrics at the validation-selected epoch, the
    validation metrics there, the MLflow run id and the selected model.

    `resume=<run id>` continues that run with the config stored in its checkpoint. Given as overrides,
    each of them is checked against it as on the command line (one that differs is a ConfigError); a
    composed config no longer says what was overridden, so only its `tracking` settings are used."""
    from omegaconf import DictConfig

    from lambdaopt import experiment

    if isinstance(cfg, DictConfig):
        return experiment.run(cfg)
    overrides = list(cfg)
    return experiment.run(compose(overrides), overrides=overrides)


def evaluate(scores, heldout, excluded=None, ks: Sequence[int] = (10, 50, 100)) -> dict[str, float]:
    """Full-ranking AUC, HR@K and NDCG@K of a score matrix (users × items; numpy or torch) on held-out
    interactions, ranking every item except `excluded` ones (e.g. the training interactions); ties are
    broken pessimistically (evaluation/ranking.py). `heldout`/`excluded`: `Interactions` or
    (users, items) arrays."""
    import numpy as np
    import torch

    from lambdaopt.data.interactions import Interactions
    from lambdaopt.evaluation.ranking import RankingEvaluator

    matrix = torch.as_tensor(np.asarray(scores) if not isinstance(scores, torch.Tensor) else scores)

    def interactions(pairs) -> Interactions:
        if pairs is None:
            return Interactions.from_arrays(np.zeros(0, np.int64), np.zeros(0, np.int64))
        return pairs if isinstance(pairs, Interactions) else Interactions.from_arrays(*map(np.asarray, pairs))

    class _Scores:
        def score_all(self, users: torch.Tensor) -> torch.Tensor:
            return matrix[users.to(matrix.device)]

    n_users, n_items = matrix.shape
    return RankingEvaluator(n_users, n_items, interactions(heldout), interactions(excluded), ks=ks,
                            device=matrix.device)(_Scores())
