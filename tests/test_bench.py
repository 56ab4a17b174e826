"""The bench scripts still run end to end (smallest settings): their numbers live in bench/README.md."""
import pytest

from conftest import ROOT, run_script

pytestmark = pytest.mark.slow


def bench(script: str, *args: str) -> str:
    """What `python bench/SCRIPT ARGS` prints (run in this process; bench/scale.py still starts a process per
    setup: that is what it measures)."""
    return run_script(ROOT / "bench" / script, *args)


def test_lambdaopt_epoch_bench_prints_ratios_to_fixed():
    out = bench("lambdaopt_epoch.py", "--epochs", "1", "--dim", "16", "--only", "lambdaopt_dui,")
    table = out[out.index("\nsetup ") + 1:].splitlines()  # the table after the footer line
    assert table[1].split()[:1] == ["fixed"] and "1.00x" in table[1]
    assert any(line.startswith("lambdaopt_dui, update_every=4") for line in table)


def test_step_breakdown_times_each_compiled_pass_of_both_steps():
    """Each kernel a step takes shows in its column: fixed's BPR gradient and Adam; DUI's look-ahead, validation
    draw, λ's AMSGrad and the fused penalty + Adam (not fixed's passes: its model step reuses the look-ahead's
    fit)."""
    out = bench("step_breakdown.py", "--epochs", "1", "--dim", "16")
    header, *lines = out[out.index("\npiece ") + 1:].splitlines()
    fixed, dui = header.index("fixed"), header.index("λOpt-DUI")  # where each column starts
    cells = {line[:fixed].strip(): (line[fixed:dui].strip(), line[dui:].strip()) for line in lines if line.strip()}
    for kernel, (in_fixed, in_dui) in {"BPR gradient": (True, False), "Adam (model)": (True, False),
                                       "look-ahead": (False, True), "validation draw": (False, True),
                                       "AMSGrad (λ)": (False, True), "penalty + Adam (model)": (False, True)}.items():
        assert (bool(cells[kernel][0]), bool(cells[kernel][1])) == (in_fixed, in_dui), kernel
    assert float(cells["whole step (median epoch)"][1]) > float(cells["compiled passes, together"][1]) > 0
    assert "compiled passes alone" in out


def test_scale_bench_runs_each_setup_in_its_own_process(tmp_path):
    # the plainest setup and the one with the most options (SparseAdam for λ); the other two differ by one override
    out = bench("scale.py", "--sizes", "ml-100k", "--setups", "fixed", "dui_sparse_lambda", "--dim", "16",
                "--cache-dir", str(tmp_path))
    rows = [line.split() for line in out.splitlines() if line.startswith("ml-100k ")][-2:]  # the final table
    assert [row[3] for row in rows] == ["fixed", "dui_sparse_lambda"]
    assert all(float(row[-1].replace(",", "")) > 0 for row in rows)  # peak RSS of each child


@pytest.fixture(scope="module")
def peers_speed():
    """One run of bench/peers_speed.py (the epoch table, then with --quality the time to quality)."""
    return bench("peers_speed.py", "dataset=synthetic", "dataset.n_users=80", "dataset.n_items=60",
                 "dataset.mean_interactions=15", "model.dim=8", "evaluation.ks=[5,10]", "--rounds", "2",
                 "--quality", "--quality-epochs", "12")


def test_peers_speed_bench_times_every_contender_against_cornac(peers_speed):
    out = peers_speed
    table = out[out.index("contender"):out.index("seed 0:")].splitlines()[1:]
    names = [line.split("  ")[0] for line in table if line.strip()]
    assert names[-2:] == ["cornac 3.0.1 BPR", "implicit 0.7.3 BPR"] and len(names) == 8
    ratios = {line.split("  ")[0]: line.split()[-1] for line in table if line.strip()}
    assert ratios["cornac 3.0.1 BPR"] == "1.00x" and "lambdaopt fixed λ, SGD per-sample" in ratios
    assert all(float(ratio.rstrip("x")) > 0 for ratio in ratios.values())


def test_peers_speed_quality_times_each_run_to_both_targets(peers_speed):
    out = peers_speed
    table = out[out.index("seed 0:"):].splitlines()
    assert "baseline's selected" in table[1] and "cornac's best" in table[1]
    rows = {line.split("  ")[0]: line for line in table[2:] if line.strip()}
    assert set(rows) == {"lambdaopt, batch step", "lambdaopt, per-sample", "lambdaopt, per-sample lr 50",
                         "cornac BPR (lr .05, reg .01)"}
    assert " s (epoch " in rows["cornac BPR (lr .05, reg .01)"]  # cornac reaches its own best


def test_deep_mf_bench_reaches_a_loose_target():
    out = bench("deep_mf_convergence.py", "--target", "0.5", "--check-every", "20")
    assert "error" in out.splitlines()[0] and float(out.splitlines()[0].rsplit("error ", 1)[1]) <= 0.5
    steps = [line for line in out.splitlines() if line.startswith("lambdaopt ")]
    assert steps and float(steps[0].split("median ")[1].split(" s")[0]) > 0


def test_lambdaopt_reference_bench_hands_the_reference_exactly_our_split(dataset, tmp_path, monkeypatch):
    """What the reference trains on (bench/lambdaopt_reference.py): our split written as its preprocessed file
    and cut by date, as its patched split function cuts it, is our split again — and its digest, computed as the
    reference's process computes it, is the one the script expects."""
    import hashlib

    import numpy as np
    import pandas as pd

    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import lambdaopt_reference

    lambdaopt_reference.write_split(dataset, tmp_path / "split.csv")
    frame = pd.read_csv(tmp_path / "split.csv")
    assert len(frame) == len(dataset.train) + len(dataset.valid) + len(dataset.test)
    for name, date in lambdaopt_reference.PARTS.items():
        rows, part = frame[frame["timestamp"] == date], getattr(dataset, name)
        np.testing.assert_array_equal(rows["userId"].to_numpy(), part.users)
        np.testing.assert_array_equal(rows["itemId"].to_numpy(), part.items)
        keys = np.sort(rows["userId"].to_numpy("int64") * dataset.n_items + rows["itemId"].to_numpy("int64"))
        expected = lambdaopt_reference.digest(part, dataset.n_items)
        assert [len(keys), hashlib.sha1(keys.tobytes()).hexdigest()] == expected
