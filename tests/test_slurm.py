"""`hydra/launcher=submitit_slurm` on a real SLURM cluster: one node on 127.0.0.1, started by
scripts/local-slurm.sh (installs slurmctld, slurmd, slurmdbd, munge). A 4-job sweep ends with 4 FINISHED
child runs under one parent, and a job stopped with `scancel` ends KILLED and resumes to FINISHED."""
import subprocess
import sys
import time

import pytest

from conftest import FAST, ROOT, TINY, empty_store_in, run_in_process, sweep_runs

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

# array_parallelism: at most 2 jobs of the array at once, one per core of the node
SLURM = ["hydra/launcher=submitit_slurm", "hydra.launcher.partition=debug", "hydra.launcher.timeout_min=10",
         "hydra.launcher.cpus_per_task=1", "hydra.launcher.array_parallelism=2"]


def slurm_states(sweep_dir) -> dict[str, str]:
    """{SLURM job id: final state} of the jobs submitit submitted for the sweep in `sweep_dir`."""
    ids = sorted({p.name.split("_")[0] for p in (sweep_dir / ".submitit").glob("*_*") if p.is_dir()})
    assert ids, f"no submitit job folders in {sweep_dir}/.submitit"
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(ids)],
                         capture_output=True, text=True, check=True).stdout
    return dict(line.split("|", 1) for line in out.split())


def test_four_job_sweep_runs_on_slurm(tmp_path, slurm_cluster):
    empty_store_in(tmp_path)
    # the sweep and its launcher in this process; the jobs are SLURM's
    result = run_in_process("run.py", ["-m", *FAST, *SLURM, "regularizer.lam=0,1e-3,1e-2,1e-1"], tmp_path, {})
    assert result.returncode == 0, result.stderr
    _, parents, children = sweep_runs(tmp_path)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.tags["launcher"] == "SlurmLauncher"
    assert len(children) == 4 and all(c.info.status == "FINISHED" for c in children)
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert sorted(float(c.data.params["regularizer.lam"]) for c in children) == [0, 1e-3, 1e-2, 1e-1]
    [sweep_dir] = [p.parent for p in tmp_path.glob("multirun/*/*/mlflow_parent_run_id")]
    deadline, states = time.monotonic() + 60, slurm_states(sweep_dir)
    # a task's result reaches the launcher while its job is still exiting (RUNNING, then COMPLETING)
    while {"PENDING", "RUNNING", "COMPLETING"} & set(states.values()) and time.monotonic() < deadline:
        time.sleep(0.5)
        states = slurm_states(sweep_dir)
    assert sorted(states.values()) == ["COMPLETED"] * 4, states  # one array of 4 tasks, run by SLURM


def test_scancel_ends_the_run_killed_and_it_resumes_to_finished(tmp_path, slurm_cluster):
    # many small steps per epoch and no early stop: the job is still training when it is cancelled
    job = [*TINY, "trainer.max_epochs=100", "trainer.batch_size=32", "optimizer.lr=1.5", "trainer.patience=0",
           "trainer.stop_loss=0", "tracking.log_model=false"]
    empty_store_in(tmp_path)
    sweep = subprocess.Popen([sys.executable, str(ROOT / "run.py"), "-m", *job, *SLURM], cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline, run = time.monotonic() + 180, None
        while run is None:  # until the job's run has logged two epochs
            assert time.monotonic() < deadline and sweep.poll() is None, "the SLURM job did not start training"
            time.sleep(1)
            if list(tmp_path.glob("multirun/*/*/mlflow_parent_run_id")):  # the sweep has created the store
                client, _, children = sweep_runs(tmp_path)
                if children and len(client.get_metric_history(children[0].info.run_id, "train_loss")) >= 2:
                    run = children[0]
        job_ids = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True).stdout.split()
        assert len(job_ids) == 1, job_ids
        subprocess.run(["scancel", job_ids[0]], check=True)  # SIGTERM, then SIGKILL after KillWait
        deadline = time.monotonic() + 120
        while subprocess.run(["squeue", "-h", "-j", job_ids[0]], capture_output=True, text=True).stdout.strip():
            assert time.monotonic() < deadline, "the cancelled job did not leave the queue"
            time.sleep(0.5)
        killed = client.get_run(run.info.run_id)
        assert killed.info.status == "KILLED" and "interrupted by SIGTERM" in killed.data.tags["failure_reason"]
        epochs_before = len(client.get_metric_history(run.info.run_id, "train_loss"))
        assert 2 <= epochs_before < 100
        # The sweep learns of the cancelled job only at submitit's next sacct poll (2, 4, 8, 16, 32 s after
        # submitting): the job is gone, so resume it meanwhile, again through SLURM (launched from this process)
        resume = run_in_process("run.py", ["-m", *SLURM, f"resume={run.info.run_id}"], tmp_path, {})
        _, stderr = sweep.communicate(timeout=180)
    finally:
        sweep.kill()
    assert sweep.returncode != 0 and "UncompletedJobError" in stderr  # the launcher reports the cancelled job
    assert client.get_run(run.data.tags["mlflow.parentRunId"]).info.status == "FAILED"
    assert resume.returncode == 0, resume.stderr
    finished = client.get_run(run.info.run_id)
    assert finished.info.status == "FINISHED" and finished.data.tags["resumed_at_epoch"] == str(epochs_before)
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert sorted(m.step for m in history) == list(range(1, 101))  # every epoch once, none lost or repeated
    assert len(sweep_runs(tmp_path)[2]) == 1  # the same run went on; no new one
