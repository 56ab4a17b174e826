"""What a task is: a learning problem with its objective, its evaluators and its metric table.

A task owns everything that differs between ranking, rating regression and matrix completion, so
the experiment, the trainer, learned λ, config validation and the report ask it instead of switching
on `dataset.feedback`:

    metric_names(evaluation)   the validation metrics its evaluator reports (config validation)
    default_monitor(evaluation) what `trainer.monitor: auto` selects on
    LOWER_IS_BETTER            which of its metrics improve downward (trainer `mode: auto`, the report)
    build(cfg, dataset, ...)   objective + validation/test evaluators for one run

Subclasses register under the `dataset.feedback` value that selects them (`@register_task`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from omegaconf import DictConfig, OmegaConf

from lambdaopt.errors import ConfigError

TASKS: dict[str, type["Task"]] = {}


def register_task(feedback: str):
    def register(cls: type[Task]) -> type[Task]:
        cls.feedback = feedback
        TASKS[feedback] = cls
        return cls
    return register


def task_class(cfg: DictConfig) -> type["Task"]:
    """The task `dataset.feedback` names (implicit when the dataset has no such field)."""
    feedback = str(cfg.dataset.get("feedback", "implicit"))
    if feedback not in TASKS:
        raise ConfigError(f"dataset.feedback={feedback!r} is unknown: use one of {', '.join(TASKS)}")
    return TASKS[feedback]


class Task:
    """One run's objective and evaluators (`build`), plus the class-level metric table."""

    feedback: ClassVar[str] = ""
    # the metric table: what the validation evaluator reports, what `monitor: auto` selects on, and which
    # of them improve downward (the trainer's `mode: auto`, the report's selection and bold)
    METRICS: ClassVar[tuple[str, ...]] = ()
    DEFAULT_MONITOR: ClassVar[str] = ""
    LOWER_IS_BETTER: ClassVar[frozenset[str]] = frozenset()
    # optimizer=sparse_adam updates the rows of a minibatch: a full-batch task refuses it
    minibatch: ClassVar[bool] = True
    # trainer.per_sample: per-sample SGD through each batch (ranking's BPR triples only)
    per_sample: ClassVar[bool] = False
    # models computed once from the data (`models.base.SolvedModel`) complete a matrix: `solve` runs them
    solves_models: ClassVar[bool] = False

    def __init__(self, objective, valid_evaluator, test_evaluator, monitor: str, mode: str, description: str):
        self.objective, self.valid_evaluator, self.test_evaluator = objective, valid_evaluator, test_evaluator
        self.monitor, self.mode, self.description = monitor, mode, description

    # ------------------------------------------------------------------ the metric table
    @classmethod
    def metric_names(cls, evaluation: DictConfig) -> list[str]:
        return list(cls.METRICS)

    @classmethod
    def default_monitor(cls, evaluation: DictConfig) -> str:
        return cls.DEFAULT_MONITOR

    @classmethod
    def resolve_monitor(cls, cfg: DictConfig) -> tuple[str, str]:
        """(monitor, mode) with `auto` replaced by this task's default and the metric's direction."""
        monitor = cfg.trainer.monitor
        if monitor == "auto":
            monitor = cls.default_monitor(cfg.evaluation)
        mode = cfg.trainer.get("mode", "auto")
        if mode == "auto":
            mode = "min" if lower_is_better(monitor) else "max"
        return monitor, mode

    # ------------------------------------------------------------------ one run
    @classmethod
    def build(cls, cfg: DictConfig, dataset, device, regularizer) -> "Task":
        raise NotImplementedError

    def solve(self, model, tracker):
        """Models computed once (`models.base.SolvedModel`) are solved here instead of trained."""
        raise NotImplementedError

    def finish(self, tracker, title: str = "") -> None:
        """Artifacts written once at the end (the validation spectrum's trajectory, when tracked)."""
        if self.valid_evaluator.trajectory is not None:
            self.valid_evaluator.trajectory.log_to(tracker, title)


class ObservesSpectrum:
    """For an objective whose validation evaluator may keep a spectrum trajectory (rating, completion):
    the task sets `trajectory`, and each step calls `observe` before it is taken."""

    trajectory = None  # the evaluator's SpectrumTrajectory, when it keeps one
    steps_taken: int

    def observe(self, model) -> None:
        """The trajectory's snapshot of the model after steps_taken − 1 steps (this one is not taken yet)."""
        if self.trajectory is not None:
            self.trajectory.observe(model, self.steps_taken - 1)


@dataclass
class LambdaData:
    """Where a run's interactions go when a regularizer learns λ from held-out data (ranking and rating
    tasks alike): `fit` trains the model, `learn` is λ's look-ahead target (None: no learned λ),
    `select` selects the epoch, `select_excluded` is what the selection's ranking leaves out."""

    fit: object
    learn: object
    select: object
    select_excluded: object
    note: str = ""


def lambda_data(cfg: DictConfig, dataset, regularizer) -> LambdaData:
    """`regularizer.lambda_data` applied to `dataset` (data/splits.py): with "split", per user a share of
    the validation interactions, or the latest training interaction of a user with one (carved out of the
    training data); with "holdout", a share of each user's training interactions carved out of the
    training data (sized per split method), and model selection uses the whole validation split; with
    "validation", a random share of the validation interactions. Selection uses the validation
    interactions λ does not see, with λ's share excluded like training items (known to the user)."""
    from lambdaopt.data.splits import carve_holdout, lambda_data_split, split_validation

    source = regularizer.lambda_data
    parts = LambdaData(dataset.train, None, dataset.valid, dataset.train)
    method = OmegaConf.select(cfg, "dataset.split.method", default="temporal")
    data_seed = OmegaConf.select(cfg, "dataset.seed", default=0)
    if source == "split":
        fit, learn_valid, holdout, select = lambda_data_split(
            dataset.train, dataset.valid, dataset.n_users, method, regularizer.validation_share, data_seed)
        parts = LambdaData(fit, learn_valid.concat(holdout), select, dataset.train.concat(learn_valid),
                           f", λ learns from {len(learn_valid)} validation + {len(holdout)} held-out training "
                           f"interactions, {len(select)} select the epoch")
    elif source == "holdout":
        fit, learn = carve_holdout(dataset.train, dataset.n_users, method, regularizer.holdout_ratio, data_seed)
        parts = LambdaData(fit, learn, dataset.valid, dataset.train,
                           f", λ learns from {len(learn)} held-out training interactions")
    elif source == "validation":
        learn, select = split_validation(dataset.valid, regularizer.validation_share, cfg.seed)
        parts = LambdaData(dataset.train, learn, select,
                           dataset.train if select is learn else dataset.train.concat(learn))
    return parts


# Losses the trainer logs for every task, whichever task is running.
TRAINING_LOSSES = frozenset({"train_loss", "loss"})


def lower_is_better(metric: str) -> bool:
    """For a metric name as logged anywhere (`rmse`, `test/rmse`, `best_valid/ndcg@10_smoothed`): whether
    smaller is better, by the tables of the registered tasks (larger-better when no task lists it)."""
    name = metric.rsplit("/", 1)[-1].removesuffix("_smoothed")
    return name in TRAINING_LOSSES or any(name in task.LOWER_IS_BETTER for task in TASKS.values())
