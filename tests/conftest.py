"""Shared helpers: compose the real configs, and run the real entry point on tiny data."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# Bytecode on, for this process and every one the tests start (xdist workers, jobs, servers): `.ci/run`
# installs with `--no-compile`, so the ~3,400 modules a job imports (of ~12,000 installed) are compiled
# once, by the first process that imports them, instead of all of them ahead of time (~30 s on 2 cores) —
# or, with PYTHONDONTWRITEBYTECODE set in the caller's environment, again in every job (~9 s each).
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False

import pytest  # noqa: E402
import lambdaopt  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = str(ROOT / "lambdaopt" / "conf")

# A synthetic set small enough that a whole run takes a couple of seconds.
TINY = [
    "dataset.n_users=150",
    "dataset.n_items=120",
    "dataset.mean_interactions=15",
    "model.dim=8",
    "trainer.max_epochs=3",
    "trainer.batch_size=256",
    "evaluation.ks=[5,10]",
]


def compose_config(overrides: list[str] | None = None):
    return lambdaopt.compose(overrides or [])


def run_cli(args: list[str], cwd: Path, timeout: int = 300, env: dict | None = None,
            script: Path = ROOT / "run.py") -> subprocess.CompletedProcess:
    """`python run.py ARGS` in `cwd` (so mlflow.db and outputs/ land there); `env` adds variables."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, str(script), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env)


def one_error_line(result, needle: str = "", returncode: int | None = 2) -> str:
    """A user error as the command must report it: exit status `returncode` (any non-zero when None),
    exactly one `error:` line on stderr, holding `needle`, and no traceback anywhere. `result`: a
    CompletedProcess or (returncode, stderr). Returns the line."""
    code, stderr = (result.returncode, result.stderr) if hasattr(result, "stderr") else result
    assert code == returncode if returncode is not None else code != 0, (code, stderr)
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], stderr
    return errors[0]


def fails_in_one_line(overrides: list[str], needle: str) -> str:
    """In process: `lambdaopt.run(overrides)` (tracking off) raises a user error holding `needle` whose message
    is one line — what the command prints after `error: ` (the CLI's formatting: test_bad_inputs.py)."""
    from lambdaopt.errors import LambdaoptError

    with pytest.raises(LambdaoptError) as error:
        lambdaopt.run([*overrides, "tracking.enabled=false"])
    message = str(error.value)
    assert needle in message and "\n" not in message, message
    return message


def run_in(folder: Path, overrides: list[str]):
    """In process: `lambdaopt.run(overrides)` logging where `python run.py OVERRIDES` run in `folder` logs
    (folder/mlflow.db — an empty store put there first if there is none —, artifacts beside it); the
    result, or the user error it raises."""
    return lambdaopt.run([*overrides, f"tracking.uri=sqlite:///{empty_store_in(folder)}",
                          f"tracking.artifact_location={folder}/mlartifacts"])


EMPTY_STORE: dict[str, Path] = {}
_EMPTY_STORE_LOCK = threading.Lock()  # test_bad_inputs.py runs cases from two threads


@pytest.fixture(scope="session", autouse=True)
def _empty_store_path(tmp_path_factory):
    EMPTY_STORE["path"] = tmp_path_factory.mktemp("empty_store") / "mlflow.db"  # made on first use


def empty_store_in(folder: Path) -> Path:
    """folder/mlflow.db: unless it exists, a copy of an empty MLflow store made (migrated) once per pytest
    process — a new SQLite store takes ~1.3 s of MLflow's schema migrations. For tests whose subject is
    not the store's creation (that one: test_run.py, test_mlflow_record.py, test_hostile.py)."""
    import shutil

    from mlflow.tracking import MlflowClient

    target, template = Path(folder) / "mlflow.db", EMPTY_STORE["path"]
    with _EMPTY_STORE_LOCK:
        if not target.exists():
            if not template.exists():
                MlflowClient(tracking_uri=f"sqlite:///{template}").search_experiments(max_results=1)
            shutil.copyfile(template, target)
    return target


class Outcome:
    def __init__(self, returncode: int, stdout: str, stderr: str, seconds: float):
        self.returncode, self.stdout, self.stderr, self.seconds = returncode, stdout, stderr, seconds


def run_in_process(entry: str, args: list[str], cwd: Path, env: dict) -> Outcome:
    """The entry point's main() here (`entry`: run.py, data or report), as the process would run it: sys.argv,
    the working directory and the environment set, output captured, an exit status from SystemExit (an
    escaping exception is printed as the traceback a process would show, status 1); Hydra's, logging's and
    MLflow's global state restored."""
    import contextlib
    import io
    import logging
    import traceback

    import mlflow
    from hydra.core.global_hydra import GlobalHydra

    from lambdaopt.cli import main as cli_main
    from lambdaopt.data.__main__ import main as data_main
    from lambdaopt.report.__main__ import main as report_main

    out, err = io.StringIO(), io.StringIO()
    saved = sys.argv, os.getcwd(), dict(os.environ), logging.getLogger().handlers[:], logging.getLogger().level
    os.chdir(cwd)
    os.environ.update(env)
    started, status = time.monotonic(), 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                if entry == "run.py":
                    sys.argv = [str(ROOT / "run.py"), *args]
                    cli_main()
                else:
                    sys.argv = [f"lambdaopt-{entry}", *args]
                    status = {"data": data_main, "report": report_main}[entry](args) or 0
            except SystemExit as exit_:
                status = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
            except BaseException:  # noqa: BLE001  (what the process would print before dying)
                traceback.print_exc()
                status = 1
            if mlflow.active_run() is not None:  # a run left open would be RUNNING forever in a real process
                print(f"Traceback: MLflow run {mlflow.active_run().info.run_id} left active", file=sys.stderr)
                mlflow.end_run("FAILED")
    finally:
        sys.argv = saved[0]
        os.chdir(saved[1])
        os.environ.clear()
        os.environ.update(saved[2])
        logging.getLogger().handlers[:] = saved[3]
        logging.getLogger().setLevel(saved[4])
        GlobalHydra.instance().clear()
        if "joblib.externals.loky" in sys.modules:  # a joblib sweep ran here (this costs ~1 ms when none is left)
            # joblib's loky workers outlive the sweep, in the working folder they started in: stop them as the
            # command's exit does, so that a later sweep in this process starts its own
            from joblib.externals.loky import get_reusable_executor

            get_reusable_executor().shutdown(wait=True)
    return Outcome(status, out.getvalue(), err.getvalue(), time.monotonic() - started)


def run_script(path: Path, *args: str) -> str:
    """What `python PATH ARGS` prints, run in this process (runpy, its sys.argv set, stdout captured; a non-zero
    exit fails): for scripts whose output is what a test checks, without ~5 s of imports in a process of its own."""
    import contextlib
    import io
    import runpy

    out, saved = io.StringIO(), (sys.argv, sys.path[:])
    sys.argv = [str(path), *args]
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_path(str(path), run_name="__main__")
    except SystemExit as exit_:
        assert exit_.code in (None, 0), exit_.code
    finally:
        sys.argv, sys.path[:] = saved
    return out.getvalue()


def tracked_runs(folder: Path, experiment: str = "lambdaopt", with_parents: bool = False):
    """(client, runs of `experiment` in folder/mlflow.db; sweep parents left out unless `with_parents`)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{folder}/mlflow.db")
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id]) if found else []
    return client, [r for r in runs if with_parents or r.data.tags.get("sweep_role") != "parent"]


# A multirun's jobs: tiny, 2 epochs, no model file.
FAST = [*TINY, "trainer.max_epochs=2", "tracking.log_model=false"]


def sweep_runs(where: Path | str, experiment: str = "lambdaopt"):
    """(client, parent runs, child runs) of `experiment` in `where`: a tracking URI, or a folder holding mlflow.db."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(where if isinstance(where, str) else f"sqlite:///{where}/mlflow.db")
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], max_results=50000) if found else []
    parents = [r for r in runs if r.data.tags.get("sweep_role") == "parent"]
    return client, parents, [r for r in runs if r.data.tags.get("sweep_role") != "parent"]


SERVICES_LOCK = os.path.join(tempfile.gettempdir(), "lambdaopt-test-services.lock")
# marker → the script that installs and starts what tests with that marker use
SERVICE_SCRIPTS = {"postgres": "local-postgres.sh", "slurm": "local-slurm.sh", "browser": "install-chromium.sh"}


def start_service(script: str) -> str:
    """Run scripts/SCRIPT (installs and starts a local service, a no-op when it is up); its last stdout line.

    One script at a time across pytest-xdist workers and the background preparation below: they install
    Debian packages, and two apt-get runs at once fail on dpkg's lock."""
    import fcntl

    with open(SERVICES_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = subprocess.run(["bash", str(ROOT / "scripts" / script)], capture_output=True, text=True,
                                timeout=900)
    assert result.returncode == 0, f"scripts/{script} failed:\n{result.stderr[-3000:]}"
    return (result.stdout.strip().splitlines() or [""])[-1]


def pytest_collection_finish(session):
    """Start the services the selected tests use in the background, as soon as collection knows them.

    On a fresh machine the scripts install Debian packages (~40 s); run by the first test that needs
    them, a worker would sit through that, here it overlaps the tests that run first. The background
    holds the services lock while it runs each script (`flock`, its `-o`: not inherited by the daemons
    they start), so a test's `start_service` waits for that script and then finds its service up (a
    no-op), or runs the script again and reports why it fails (as does a test that takes the lock
    before `flock` does); between scripts a waiting test gets its turn. Each xdist worker collects every
    test: the first to claim the run's marker file starts the preparation. Its output is dropped: a
    test's own run of a script reports a failure."""
    import shutil

    needed = [script for marker, script in SERVICE_SCRIPTS.items()
              if any(item.get_closest_marker(marker) for item in session.items)]
    if not needed or shutil.which("flock") is None:
        return
    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID")  # the same in every worker of one pytest run
    if run_id is not None:
        try:
            os.close(os.open(f"{SERVICES_LOCK}.{run_id}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:  # another worker started it
            return
    loop = 'for script; do flock -o "$LOCK" timeout 900 bash "$ROOT/scripts/$script"; done'
    subprocess.Popen(["bash", "-c", loop, "prepare", *needed],
                     env={**os.environ, "ROOT": str(ROOT), "LOCK": SERVICES_LOCK}, stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def pytest_sessionfinish(session):
    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if run_id is not None:  # the marker `pytest_collection_finish` claimed (each worker collected before this)
        Path(f"{SERVICES_LOCK}.{run_id}").unlink(missing_ok=True)


@pytest.fixture(scope="session")
def postgres_uri() -> str:
    """A PostgreSQL server on 127.0.0.1 (scripts/local-postgres.sh); the SQLAlchemy URL of its mlflow database."""
    return start_service("local-postgres.sh")


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """A one-node SLURM cluster on 127.0.0.1 (scripts/local-slurm.sh), its node idle."""
    start_service("local-slurm.sh")


@pytest.fixture(scope="session")
def dataset():
    """40 users × 30 items of synthetic implicit feedback: the hypergradient tests' problem (lookahead_setup.py)."""
    from omegaconf import OmegaConf

    from lambdaopt.config.core import SplitConfig
    from lambdaopt.data.synthetic import load_synthetic

    return load_synthetic(split=OmegaConf.structured(SplitConfig), n_users=40, n_items=30, rank=3,
                          mean_interactions=10, min_interactions=5, seed=1)


@pytest.fixture
def tiny_overrides():
    return list(TINY)


@pytest.fixture(autouse=True)
def _isolated_tracking_uri():
    """`mlflow.set_tracking_uri` (called by in-process runs) also sets MLFLOW_TRACKING_URI; keep one test's
    tracking database from becoming the next test's default, or that of a module fixture's subprocesses
    (which start before the next test's own fixtures): removed before and after every test."""
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield
    os.environ.pop("MLFLOW_TRACKING_URI", None)


# The longest files first (seconds on one worker, `-p` timeline of a whole run at 20302c8, 2026-12-03:
# optuna_sweeper 99, concurrency 80, slurm 71, resume 44, quality 42, bad_inputs 23, hostile 21, sweeps 21; the
# rest ≤ 17). Under `--dist loadfile` a file runs whole on one worker, and with `--no-loadscope-reorder`
# (pyproject) files are handed out in this order, so the two workers end close together; xdist's own order (most
# tests first) hands out these few-test files last, and one worker then ran the SLURM file alone for a minute at
# the end. Measured, two rounds alternating: the workers ended 3 and 5 s apart (xdist's order: 58 and 81 s), CPU
# utilization 87.0 / 87.3 % against 81.5 / 81.5 %. The SLURM file starts third: the background preparation
# (`pytest_collection_finish`) has had a minute to start its cluster.
LONGEST_FIRST = ["test_optuna_sweeper.py", "test_concurrency.py", "test_slurm.py", "test_resume.py",
                 "test_quality.py", "test_bad_inputs.py", "test_hostile.py", "test_sweeps.py"]


def pytest_collection_modifyitems(items):
    rank = {name: position for position, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
