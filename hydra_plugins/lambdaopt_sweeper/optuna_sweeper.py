"""`hydra/sweeper=optuna_study`: an Optuna study, persisted, whose trials run through any Hydra launcher.

    hydra:
      sweeper:
        study_name: optuna_lambda
        storage: sqlite:///optuna.db          # any SQLAlchemy URL, or journal:/shared/path/study.log
        n_trials: 20                          # the study's total: a search started again runs what is missing
        n_jobs: 2                             # trials asked, launched together, then told
        sampler: {name: TPESampler, seed: 0}  # any optuna.samplers class, its keyword arguments beside
        pruner: {name: MedianPruner, n_warmup_steps: 10}   # any optuna.pruners class, or null
        params:
          regularizer.lam: {type: float, low: 1e-6, high: 10, log: true}

Each batch is ask → launch (basic, joblib, submitit: the configured launcher) → tell. A job returns the
validation value its run was selected on (`lambdaopt/experiment.py`, never test); a job that failed is
told FAIL, one stopped by the pruner PRUNED. Jobs report every evaluated epoch to the same storage
(`lambdaopt/search.py`). The study's direction follows `trainer.monitor` (ndcg: maximize, rmse: minimize),
so it cannot contradict the metric. A command-line override that sweeps (`seed=0,1,2`) runs one study per
value (`optuna_lambda[seed=0]`, ...); one that sets a searched key fixes it.
It lives in `hydra_plugins/` because Hydra only instantiates sweepers from that package.
"""

import contextlib
import logging
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from omegaconf import OmegaConf

log = logging.getLogger(__name__)


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.lambdaopt_sweeper.optuna_sweeper.OptunaSweeper"
    study_name: str = "lambdaopt"
    storage: str = "sqlite:///optuna.db"
    n_trials: int = 20
    n_jobs: int = 2
    sampler: Any = field(default_factory=lambda: {"name": "TPESampler"})
    pruner: Any = None
    params: Dict[str, Any] = field(default_factory=dict)


ConfigStore.instance().store(group="hydra/sweeper", name="optuna_study", node=OptunaSweeperConf, provider="lambdaopt")


def override_value(value: Any) -> str:
    """A sampled value as Hydra override text: strings quoted unless plain words."""
    if isinstance(value, str) and not re.fullmatch(r"[\w.\-]+", value):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return repr(value) if isinstance(value, float) else str(value)


class OptunaSweeper(Sweeper):
    def __init__(self, study_name: str, storage: str, n_trials: int, n_jobs: int, sampler: Any = None,
                 pruner: Any = None, params: Optional[Dict[str, Any]] = None) -> None:
        to_plain = lambda node: OmegaConf.to_container(node) if OmegaConf.is_config(node) else node  # noqa: E731
        self.study_name, self.storage, self.n_trials, self.n_jobs = study_name, storage, n_trials, n_jobs
        self.sampler, self.pruner, self.params = to_plain(sampler), to_plain(pruner), to_plain(params) or {}
        self.job_idx = 0

    def setup(self, *, hydra_context, task_function, config) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context,
                                                                task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> Any:
        from lambdaopt.errors import LambdaoptError
        from lambdaopt.search import open_storage, search_space, storage_url

        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        parsed = parser.parse_overrides(list(arguments))
        fixed_keys = {o.get_key_element().lstrip("+~") for o in parsed}
        try:
            if self.n_trials < 1 or self.n_jobs < 1:
                raise LambdaoptError(f"hydra.sweeper.n_trials={self.n_trials}, n_jobs={self.n_jobs}: use integers >= 1")
            space = search_space(self.params, leave_out=fixed_keys)
            self.storage = storage_url(self.storage)
            storage = open_storage(self.storage)
            [combinations] = BasicSweeper.split_arguments(parsed, None)  # one study per swept value
            swept = [o for o in parsed if o.is_sweep_override()]
            Path(self.config.hydra.sweep.dir).mkdir(parents=True, exist_ok=True)
            OmegaConf.save(self.config, Path(self.config.hydra.sweep.dir) / "multirun.yaml")
            studies = []
            for combination in combinations:
                suffix = [text for text in combination if any(text.startswith(o.key_or_group + "=") for o in swept)]
                name = self.study_name + (f"[{','.join(suffix)}]" if suffix else "")
                studies.append((name, combination))
            for name, combination in studies:
                self._optimize(name, storage, space, combination)
        except LambdaoptError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)

    def _direction(self, overrides: List[str]) -> str:
        """maximize or minimize, the way the run's monitored metric improves (trainer.monitor, mode)."""
        from lambdaopt.tasks import task_class

        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        return "minimize" if task_class(cfg).resolve_monitor(cfg)[1] == "min" else "maximize"

    def _optimize(self, name: str, storage, space: Dict[str, Any], overrides: List[str]) -> None:
        import optuna
        from optuna.trial import TrialState

        from lambdaopt.errors import LambdaoptError
        from lambdaopt.search import build_plugin, job_environment

        direction = self._direction(overrides)
        study = optuna.create_study(study_name=name, storage=storage, sampler=build_plugin("sampler", self.sampler),
                                    pruner=build_plugin("pruner", self.pruner), direction=direction, load_if_exists=True)
        if study.direction.name.lower() != direction:
            raise LambdaoptError(f"study '{name}' in {self.storage} was created to {study.direction.name.lower()}, but "
                                 f"trainer.monitor asks to {direction}: set hydra.sweeper.study_name to a new name")
        # Trials another process is running count too: several sweeps can work on one study.
        counted = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)
        log.info("Optuna study '%s' (%s, %s): %d of %d trials there", name, self.storage, direction,
                 len(study.get_trials(deepcopy=False, states=counted)), self.n_trials)
        while (missing := self.n_trials - len(study.get_trials(deepcopy=False, states=counted))) > 0:
            try:
                trials = [study.ask(space) for _ in range(min(self.n_jobs, missing))]
            except ValueError as error:  # a sampler that cannot draw from this space (BruteForce on a float range)
                raise LambdaoptError(f"hydra.sweeper.sampler={self.sampler}: {error}") from None
            batch = [list(overrides) + [f"{key}={override_value(value)}" for key, value in trial.params.items()]
                     + [f"++hydra.job.env_set.{k}={override_value(v)}" for k, v in
                        job_environment(self.storage, name, trial.number, self.pruner).items()]
                     for trial in trials]
            exhausted, told = False, set()
            try:
                results = self.launcher.launch(batch, initial_job_idx=self.job_idx)
                for trial, result in zip(trials, results):
                    exhausted = self._tell(study, trial, result) or exhausted
                    told.add(trial.number)
            finally:  # interrupted (Ctrl-C, a launcher error): the batch's trials must not stay RUNNING
                for trial in trials:
                    if trial.number not in told:
                        with contextlib.suppress(RuntimeError):
                            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            self.job_idx += len(batch)
            if exhausted:
                log.info("study '%s': the sampler has tried its whole search space", name)
                break
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if complete:
            best = study.best_trial
            log.info("study '%s': best trial %d, value %.6g, %s", name, best.number, best.value, best.params)

    @staticmethod
    def _tell(study, trial, result) -> bool:
        """The job's outcome to the study: its validation value, or PRUNED, or FAIL (an exception, a user
        error's {"status": "FAILED"} dict, or anything but the dict `hydra_task` returns to a search).
        Returns True when the sampler has no point left (GridSampler, BruteForceSampler)."""
        from optuna.trial import TrialState

        value = None if result.status == JobStatus.FAILED else result.return_value
        status = value.get("status") if isinstance(value, dict) else None
        if isinstance(value, dict) and value.get("run_id"):
            trial.set_user_attr("mlflow_run_id", value["run_id"])
        if status == "COMPLETE":
            told = dict(values=float(value["value"]))
        elif status == "PRUNED":
            told = dict(state=TrialState.PRUNED)
        else:
            reason = value.get("error") if isinstance(value, dict) else result._return_value
            log.warning("trial %d failed: %s", trial.number, reason)
            trial.set_user_attr("error", str(reason)[:1000])
            told = dict(state=TrialState.FAIL)
        try:
            study.tell(trial, **told)
        except RuntimeError as error:
            # A sampler whose space is exhausted calls `study.stop()`, which Optuna allows only inside
            # `optimize`; the trial is recorded by then. Stop asking instead.
            if "Study.stop" not in str(error):
                raise
            return True
        return False
