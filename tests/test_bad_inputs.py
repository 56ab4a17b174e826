"""A battery of bad inputs: config values, data files and command-line usage.

Each case must exit non-zero with a short message and no traceback: exactly one `error: ...` line for
lambdaopt's own checks; Hydra's and argparse's own short message for what they reject themselves
(unknown options and keys, values of the wrong type, bad override syntax, unknown flags): Hydra reports
and exits by itself before lambdaopt's code runs, so its message cannot be reworded from `run.py`; its
first line names the problem, later lines list e.g. the available options. And each must
leave nothing behind: no processed dataset in the cache and no MLflow run (so none left RUNNING).

The cases run in a module fixture, then are checked one test per case: in this pytest process (the entry
point's `main` with its arguments as `sys.argv`, in the case's own folder, stdout and stderr captured, Hydra's
and logging's global state put back after each), except one case per entry point and a usage error, which
run as separate Python processes so the real exit path is checked too. In process, the battery takes
seconds instead of 50 interpreter starts (~180 s of a worker).
"""
import gzip
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import ROOT, TINY, Outcome, empty_store_in, run_in_process

pytestmark = pytest.mark.slow

U_DATA_OK_LINE = "1\t2\t3\t881250949\n"
TOO_FEW_USERS = "".join(f"{u}\t{i}\t4\t{880000000 + 10 * u + i}\n" for u in range(1, 4) for i in range(1, 6))

# name: (entry point, arguments, data file content (text or bytes; None: no file written), needle, who reports)
# entry point: run.py, or data (python -m lambdaopt.data); {file}, {cache} and {cwd} are filled in per case.
REAL_ANY_PATH = ["dataset=ml-100k", "dataset.cache_dir={cache}", "model.dim=8", "trainer.max_epochs=1"]
REAL = [*REAL_ANY_PATH, "dataset.path={file}"]
CASES = {
    # ---- config values: ours, one line naming the key, the value and what is allowed
    "zero learning rate": ("run.py", [*TINY, "optimizer.lr=0"], None, "optimizer.lr=0.0 is not allowed: use a number > 0", "ours"),
    "negative dim": ("run.py", [*TINY, "model.dim=-3"], None, "model.dim=-3 is not allowed", "ours"),
    "Adam beta of 1": ("run.py", [*TINY, "optimizer=adam", "optimizer.betas=[0.9,1.0]"], None, "optimizer.betas=[0.9, 1.0]", "ours"),
    "zero epochs": ("run.py", [*TINY, "trainer.max_epochs=0"], None, "trainer.max_epochs=0", "ours"),
    "negative seed": ("run.py", [*TINY, "seed=-1"], None, "seed=-1 is not allowed: use an integer in [0, 2^32 - 1]", "ours"),
    "seed of 2^32": ("run.py", [*TINY, "seed=4294967296"], None, "seed=4294967296 is not allowed", "ours"),
    "data seed of 2^32": ("run.py", [*TINY, "dataset.seed=4294967296"], None, "dataset.seed=4294967296 is not allowed", "ours"),
    "infinite learning rate": ("run.py", [*TINY, "optimizer.lr=inf"], None, "optimizer.lr=inf is not allowed: use a finite", "ours"),
    "infinite λ": ("run.py", [*TINY, "regularizer.lam=inf"], None, "regularizer.lam=inf is not allowed", "ours"),
    "NaN init scale": ("run.py", [*TINY, "model.init_std=nan"], None, "model.init_std=nan is not allowed", "ours"),
    "zero threads": ("run.py", [*TINY, "num_threads=0"], None, "num_threads=0", "ours"),
    "unknown device": ("run.py", [*TINY, "device=tpu"], None, "device='tpu' is not allowed", "ours"),
    "cuda without a GPU": ("run.py", [*TINY, "device=cuda"], None, "no CUDA device is available", "ours"),
    "split ratio above 1": ("run.py", [*TINY, "dataset.split.test_ratio=1.5"], None, "dataset.split.test_ratio=1.5", "ours"),
    "unknown split method": ("run.py", [*TINY, "dataset.split.method=kfold"], None, "dataset.split.method='kfold'", "ours"),
    "unknown monitor": ("run.py", [*TINY, "trainer.monitor=precision"], None, "trainer.monitor='precision'", "ours"),
    "K above the catalogue": ("run.py", [*TINY, "evaluation.ks=[10,5000]"], None, "evaluation.ks=[10, 5000]", "ours"),
    "validation share 0": ("run.py", [*TINY, "regularizer=lambdaopt_dui", "regularizer.validation_share=0"], None,
                           "regularizer.validation_share=0", "ours"),
    "λOpt on matrix completion": ("run.py", ["dataset=lowrank", "model=deep_mf", "regularizer=lambdaopt_dui"], None,
                                  "works with implicit or explicit feedback, not completion", "ours"),
    "malformed resume": ("run.py", [*TINY, "resume=oops"], None, "resume='oops' is not allowed", "ours"),
    "resume with no runs": ("run.py", [*TINY, "resume=last"], None, "resume=last: there is no experiment", "ours"),
    "unknown tracking scheme": ("run.py", [*TINY, "tracking.uri=ftp://host/x"], None, "tracking.uri='ftp://host/x'", "ours"),
    "empty experiment name": ("run.py", [*TINY, "tracking.experiment=''"], None, "tracking.experiment=''", "ours"),
    "tracking server down": ("run.py", [*TINY, "tracking.uri=http://127.0.0.1:1"], None,
                             "tracking.uri=http://127.0.0.1:1: no MLflow server answers there", "ours"),
    "sweep against a dead server": ("run.py", ["-m", *TINY, "tracking.uri=http://127.0.0.1:1", "regularizer.lam=0,1"], None,
                                    "no MLflow server answers there", "ours"),
    "tracking file in a missing folder": ("run.py", [*TINY, "tracking.uri=sqlite:///{cwd}/no/such/x.db"], None,
                                          "no/such does not exist; create it", "ours"),
    "tracking file under /proc": ("run.py", [*TINY, "tracking.uri=sqlite:////proc/nonexistent/x.db"], None,
                                  "the folder /proc/nonexistent does not exist", "ours"),
    "artifacts under /proc": ("run.py", [*TINY, "tracking.artifact_location=/proc/x"], None,
                              "cannot create the artifact folder /proc/x", "ours"),
    # ---- config: what Hydra rejects while composing (its own short message)
    "unknown option": ("run.py", ["regularizer=nope"], None, "regularizer/nope", "hydra"),
    "unknown key": ("run.py", ["model.dimm=8"], None, "model.dimm", "hydra"),
    "wrong type": ("run.py", ["trainer.batch_size=abc"], None, "trainer.batch_size", "hydra"),
    # ---- command-line usage
    "bad override syntax": ("run.py", ["-m", "regularizer.lam=[0,"], None, "no viable alternative at input '[0,'", "hydra"),
    "unknown flag": ("run.py", ["--no-such-flag"], None, "unrecognized arguments: --no-such-flag", "argparse"),
    "data CLI without a command": ("data", [], None, "the following arguments are required", "argparse"),
    "data CLI unknown dataset": ("data", ["info", "ml-5m"], None, "invalid choice: 'ml-5m'", "argparse"),
    # ---- data files (dataset.path) through run.py and through the data CLI
    "missing data file": ("run.py", REAL, None, "file not found", "ours"),
    "data path is a folder": ("run.py", [*REAL_ANY_PATH, "dataset.path={cwd}"], None, "is a directory, not a rating file", "ours"),
    "data path is /dev/null": ("run.py", [*REAL_ANY_PATH, "dataset.path=/dev/null"], None, "/dev/null is not a regular file", "ours"),
    "gzip file named u.data": ("run.py", REAL, gzip.compress(U_DATA_OK_LINE.encode() * 3), "is gzip-compressed; unpack it", "ours"),
    "zip file named u.data": ("run.py", REAL, b"PK\x03\x04" + bytes(60), "is a zip archive", "ours"),
    "random bytes after a valid line": ("run.py", REAL, U_DATA_OK_LINE.encode() + bytes(range(128, 256)) * 8,
                                        "line 2: bytes that are not text", "ours"),
    "latin-1 byte in an id": ("run.py", REAL, U_DATA_OK_LINE.encode() * 2 + b"1\t2\xe9\t3\t4\n",
                              "line 3: bytes that are not text", "ours"),
    "latin-1 byte in a Reviews.csv": ("run.py", ["dataset=amazon-food", "dataset.path={file}", "dataset.cache_dir={cache}"],
                                      b"Id,ProductId,UserId,ProfileName,HelpfulnessNumerator,HelpfulnessDenominator,"
                                      b"Score,Time,Summary,Text\n1,B1,A\xe92,x,1,1,5,1300000000,s,t\n",
                                      "line 2: bytes that are not text", "ours"),
    "negative user id": ("run.py", REAL, U_DATA_OK_LINE + "-5\t2\t3\t881250950\n", "line 2: user id -5 is negative", "ours"),
    "empty data file": ("run.py", REAL, "", "is empty", "ours"),
    "too few fields": ("run.py", REAL, U_DATA_OK_LINE + "1\t3\n", "line 2: 2 fields instead of 4", "ours"),
    "non-numeric rating": ("run.py", REAL, U_DATA_OK_LINE + "1\t4\tgood\t6\n", "line 2", "ours"),
    "comma-separated file": ("run.py", REAL, "1,2,3,4\n", "line 1", "ours"),
    "filter leaves no users": ("run.py", [*REAL, "dataset.min_user_interactions=50"], TOO_FEW_USERS,
                               "no interactions left", "ours"),
    "data CLI bad file": ("data", ["info", "ml-100k", "--path", "{file}", "--cache-dir", "{cache}"],
                          "1\tx7\t3\t5\n", "item 'x7' is not an integer", "ours"),
}


# as separate processes (the rest in this one): one case per entry point, and argparse's usage error
IN_SUBPROCESS = {"zero learning rate", "data CLI bad file", "unknown flag"}


def run_in_subprocess(entry: str, args: list[str], cwd: Path, env: dict) -> Outcome:
    command = [str(ROOT / "run.py")] if entry == "run.py" else ["-m", "lambdaopt.data"]
    started = time.monotonic()
    result = subprocess.run([sys.executable, *command, *args], cwd=cwd, capture_output=True, text=True,
                            timeout=180, env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT), **env})
    return Outcome(result.returncode, result.stdout, result.stderr, time.monotonic() - started)


def run_case(name: str, base: Path) -> tuple[Outcome, Path]:
    entry, args, content, _, _ = CASES[name]
    cwd = base / re.sub(r"\W+", "_", name)
    cwd.mkdir()
    if entry == "run.py":  # (the check below then sees each store and that no run was added to it)
        empty_store_in(cwd)
    data_file = cwd / "u.data"
    if isinstance(content, bytes):
        data_file.write_bytes(content)
    elif content is not None:
        data_file.write_text(content)
    args = [a.format(file=data_file, cache=cwd / "cache", cwd=cwd) for a in args]
    run = run_in_subprocess if name in IN_SUBPROCESS else run_in_process
    return run(entry, args, cwd, {"LAMBDAOPT_CACHE": str(cwd / "cache")}), cwd


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    base = tmp_path_factory.mktemp("bad_inputs")
    with ThreadPoolExecutor(max_workers=1) as pool:  # the subprocess cases beside the in-process ones
        spawned = {name: pool.submit(run_case, name, base) for name in CASES if name in IN_SUBPROCESS}
        here = {name: run_case(name, base) for name in CASES if name not in IN_SUBPROCESS}
        return {name: here[name] if name in here else spawned[name].result() for name in CASES}


def test_the_battery_has_at_least_20_cases():
    assert len(CASES) >= 20


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_fails_cleanly_and_leaves_nothing_behind(outcomes, name):
    result, cwd = outcomes[name]
    needle, reporter = CASES[name][3], CASES[name][4]
    assert result.returncode != 0, result.stdout
    assert result.seconds < 60, f"took {result.seconds:.0f} s"  # no hang (a dead server once took 4 minutes)
    assert "Exception ignored" not in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    if reporter == "ours":
        assert len(errors) == 1 and errors[0].startswith("error: ") and needle in errors[0], result.stderr
        assert result.returncode == 2
    elif reporter == "argparse":
        assert len(errors) == 1 and needle in errors[0], result.stderr
        assert result.returncode == 2
    else:  # Hydra's composition/override errors: its message (first line names the problem), no traceback
        assert needle in result.stderr.strip().splitlines()[0], result.stderr
        assert "HYDRA_FULL_ERROR" in result.stderr and result.returncode == 1
    assert not (cwd / "no").exists()  # a folder named in tracking.uri is never created silently
    processed = cwd / "cache" / "processed"
    assert not processed.exists() or not any(processed.iterdir()), list(processed.iterdir())
    database = cwd / "mlflow.db"
    if database.exists():  # the store each case starts with: no run added to it, so none left RUNNING
        client = MlflowClient(tracking_uri=f"sqlite:///{database}")
        experiments = client.search_experiments()
        assert not client.search_runs([e.experiment_id for e in experiments]) if experiments else True
