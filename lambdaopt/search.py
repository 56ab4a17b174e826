"""Optuna search (`hydra/sweeper=optuna_study`): the study's storage, its search space, samplers and
pruners by name, and the trial a job reports its per-epoch validation values to.

The sweeper process (`hydra_plugins/lambdaopt_sweeper/optuna_sweeper.py`) asks the study for trials and
launches them; each job learns its trial through the environment (set per job with Hydra's
`hydra.job.env_set`, so nothing enters the run's config or params) and reports every evaluated epoch to
the same storage, where the study's pruner decides whether to stop it. Optuna is imported lazily: a
plain run never needs it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lambdaopt.errors import ConfigError

STORAGE_ENV = "LAMBDAOPT_OPTUNA_STORAGE"
STUDY_ENV = "LAMBDAOPT_OPTUNA_STUDY"
TRIAL_ENV = "LAMBDAOPT_OPTUNA_TRIAL"
PRUNER_ENV = "LAMBDAOPT_OPTUNA_PRUNER"
JOURNAL_PREFIX = "journal:"
SPACE_TYPES = {"float": ("low", "high", "log", "step"), "int": ("low", "high", "log", "step"),
               "categorical": ("choices",)}


def storage_url(url: str) -> str:
    """`url` with a relative SQLite or journal path made absolute: jobs may run in another directory
    (submitit), and must reach the same study."""
    for prefix in ("sqlite:///", JOURNAL_PREFIX):
        path = url[len(prefix):]
        if url.startswith(prefix) and path and not path.startswith("/"):
            return prefix + str(Path(path).resolve())
    return url


def open_storage(url: str):
    """An Optuna storage for `url`: `journal:PATH` is a JournalStorage on a file (for file systems where
    SQLite's locking fails, e.g. NFS), anything else an RDBStorage (SQLAlchemy URL: sqlite:///FILE,
    postgresql://..., mysql://...). An unreachable or unusable storage raises ConfigError."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    url = storage_url(url)
    prefix = next((p for p in (JOURNAL_PREFIX, "sqlite:///") if url.startswith(p)), None)
    if prefix is not None and not (folder := Path(url[len(prefix):]).parent).is_dir():  # a file storage's
        raise ConfigError(f"hydra.sweeper.storage={url}: the folder {folder} does not exist; "
                          "create it or give another path")
    try:
        if prefix == JOURNAL_PREFIX:
            return JournalStorage(JournalFileBackend(url[len(JOURNAL_PREFIX):]))
        return optuna.storages.RDBStorage(url)
    except Exception as error:  # SQLAlchemy's errors (no server, no driver, bad URL) span several classes
        first = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise ConfigError(f"hydra.sweeper.storage={url}: cannot open the Optuna storage ({first}); use a "
                          "reachable SQLAlchemy URL (sqlite:///optuna.db, postgresql://USER:PASS@HOST/DB) or "
                          "journal:/path/to/study.log") from None


def build_plugin(kind: str, spec: Any):
    """A sampler or pruner (`kind`: 'sampler' | 'pruner') from `{name: TPESampler, seed: 0, ...}` or a bare
    name: Optuna's own class of that name with the other keys as keyword arguments; None for null."""
    import optuna

    if spec is None:
        return None
    spec = {"name": spec} if isinstance(spec, str) else dict(spec)
    name = spec.pop("name", None)
    module = optuna.samplers if kind == "sampler" else optuna.pruners
    known = sorted(n for n in dir(module) if n.endswith(kind.capitalize()) and not n.startswith("Base"))
    if name not in known:
        raise ConfigError(f"hydra.sweeper.{kind}.name={name!r} is not an Optuna {kind}: use one of {', '.join(known)}")
    try:
        return getattr(module, name)(**spec)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"hydra.sweeper.{kind}: {name}({', '.join(f'{k}={v!r}' for k, v in spec.items())}) "
                          f"fails: {error}; see Optuna's documentation of {name}") from None


def search_space(params: dict[str, Any], leave_out: set[str] = frozenset()) -> dict[str, Any]:
    """{key: Optuna distribution} from the sweep YAML:
        regularizer.lam: {type: float, low: 1e-6, high: 10, log: true}
        model.dim: {type: int, low: 8, high: 64, step: 8}
        regularizer.granularity: {type: categorical, choices: [d, du, dui]}
    Keys in `leave_out` (set on the command line) are not searched."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    hint = "e.g. {type: float, low: 1e-6, high: 10, log: true} or {type: categorical, choices: [a, b]}"
    space = {}
    for key, spec in _dotted(params).items():
        if key in leave_out:
            continue
        if not isinstance(spec, dict) or spec.get("type") not in SPACE_TYPES:
            raise ConfigError(f"hydra.sweeper.params.{key}={spec!r} is not a search space: use a mapping with "
                              f"type: float | int | categorical, {hint}")
        kind, options = spec["type"], {k: v for k, v in spec.items() if k != "type"}
        unknown = sorted(set(options) - set(SPACE_TYPES[kind]))
        if unknown:
            raise ConfigError(f"hydra.sweeper.params.{key}: unknown option {unknown[0]!r} for type {kind}: "
                              f"use {', '.join(SPACE_TYPES[kind])}")
        try:
            if kind == "categorical":
                space[key] = CategoricalDistribution(list(options["choices"]))
            else:
                cast = float if kind == "float" else int
                low, high = cast(options["low"]), cast(options["high"])
                step = options.get("step")
                distribution = FloatDistribution if kind == "float" else IntDistribution
                space[key] = distribution(low, high, log=bool(options.get("log", False)),
                                          step=None if step is None and kind == "float" else cast(step or 1))
        except (KeyError, TypeError, ValueError) as error:
            reason = f"missing {error}" if isinstance(error, KeyError) else str(error)
            raise ConfigError(f"hydra.sweeper.params.{key}: {reason}; {hint}") from None
    if not space:
        raise ConfigError("hydra.sweeper.params is empty: give the search space, " + hint.replace("e.g. ", "e.g. KEY: "))
    return space


def _dotted(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{optimizer: {lr: SPEC}} → {"optimizer.lr": SPEC}: a key added on the command line
    (`+hydra.sweeper.params.optimizer.lr=...`) arrives nested, one in the YAML as a dotted name."""
    flat = {}
    for key, spec in params.items():
        if isinstance(spec, dict) and "type" not in spec and spec and all(isinstance(v, dict) for v in spec.values()):
            flat.update(_dotted(spec, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = spec
    return flat


def job_environment(storage: str, study: str, trial_number: int, pruner: Any) -> dict[str, str]:
    """What a job needs to find its trial (passed with `hydra.job.env_set`)."""
    return {STORAGE_ENV: storage, STUDY_ENV: study, TRIAL_ENV: str(trial_number), PRUNER_ENV: json.dumps(pruner)}


class TrialReporter:
    """The job's side of a trial: `report(epoch, value)` writes the epoch's validation value to the
    study's storage and returns True when the study's pruner says to stop (Optuna's `should_prune`)."""

    def __init__(self, storage_url: str, study: str, trial_number: int, pruner: Any):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.study_name, storage = study, open_storage(storage_url)
        loaded = optuna.load_study(study_name=study, storage=storage, pruner=build_plugin("pruner", pruner))
        trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study), trial_number)
        self.trial = optuna.trial.Trial(loaded, trial_id)

    @classmethod
    def from_environment(cls) -> "TrialReporter | None":
        if not os.environ.get(TRIAL_ENV):
            return None
        return cls(os.environ[STORAGE_ENV], os.environ[STUDY_ENV], int(os.environ[TRIAL_ENV]),
                   json.loads(os.environ.get(PRUNER_ENV) or "null"))

    def report(self, epoch: int, value: float) -> bool:
        self.trial.report(value, step=epoch)
        return self.trial.should_prune()

    def tags(self) -> dict[str, str]:
        """Tags of the job's MLflow run: a study's runs are found by tag across sweeps that resumed it."""
        return {"optuna_study": self.study_name, "optuna_trial": str(self.trial.number)}
