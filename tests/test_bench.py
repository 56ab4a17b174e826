"""The bench scripts still run end to end (smallest settings): their numbers live in bench/README.md."""
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow


def bench(*args, timeout=300):
    result = subprocess.run([sys.executable, str(ROOT / "bench" / args[0]), *args[1:]], capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_lambdaopt_epoch_bench_prints_ratios_to_fixed():
    out = bench("lambdaopt_epoch.py", "--epochs", "1", "--dim", "16", "--only", "lambdaopt_dui,")
    table = out[out.index("setup"):].splitlines()
    assert table[1].split()[:1] == ["fixed"] and "1.00x" in table[1]
    assert any(line.startswith("lambdaopt_dui, update_every=4") for line in table)


def test_scale_bench_runs_each_setup_in_its_own_process(tmp_path):
    out = bench("scale.py", "--sizes", "ml-100k", "--dim", "16", "--cache-dir", str(tmp_path))
    rows = [line.split() for line in out.splitlines() if line.startswith("ml-100k ")]
    assert [row[3] for row in rows[-4:]] == ["fixed", "fixed_sparse", "dui", "dui_sparse_lambda"]
    assert all(float(row[-1].replace(",", "")) > 0 for row in rows[-4:])  # peak RSS of each child
