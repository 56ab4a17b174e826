"""`python tests/run_cases.py < CASES`: the lambdaopt command for each case in one process — what a test that
must run without root's rights (tests/test_hostile.py, through `setpriv`) pays one interpreter start for,
instead of one per case. CASES: a JSON list of [working directory, [override, ...]]; prints a JSON list of
[exit status, stdout, stderr, seconds], the command as a process would end (conftest.run_in_process)."""
import json
import sys
from pathlib import Path

from conftest import run_in_process

outcomes = [run_in_process("run.py", args, Path(cwd), {}) for cwd, args in json.load(sys.stdin)]
print(json.dumps([[o.returncode, o.stdout, o.stderr, o.seconds] for o in outcomes]))
