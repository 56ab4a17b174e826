"""The bad-input battery of tests/test_bad_inputs.py as a table: case, exit status, the message, leftovers.

    python bench/bad_inputs_table.py > battery.md

Leftovers: processed cache entries, MLflow runs (by status) and temporaries (`.tmp-*`, `.download*`,
`*.part`) found in the case's folder afterwards. The tests assert the same; this prints what happened.
"""
from __future__ import annotations

import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from test_bad_inputs import CASES, run_case  # noqa: E402


def leftovers(cwd: Path) -> str:
    found = []
    processed = cwd / "cache" / "processed"
    if processed.exists() and any(processed.iterdir()):
        found.append(f"{len(list(processed.iterdir()))} cache entries")
    temporaries = [p for p in cwd.rglob("*") if p.name.startswith((".tmp-", ".download")) or p.name.endswith(".part")]
    if temporaries:
        found.append(f"{len(temporaries)} temporaries")
    database = cwd / "mlflow.db"
    if database.exists():
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=f"sqlite:///{database}")
        experiments = [e.experiment_id for e in client.search_experiments()]
        runs = client.search_runs(experiments) if experiments else []
        if runs:
            found.append(", ".join(f"run {r.info.status}" for r in runs))
    return "; ".join(found) or "none"


def main() -> None:
    base = Path(tempfile.mkdtemp(prefix="battery-"))
    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = dict(zip(CASES, pool.map(lambda name: run_case(name, base), CASES)))
    print("| case | exit | message | seconds | leftovers |\n|---|---|---|---|---|")
    for name, (result, cwd) in outcomes.items():
        lines = [line for line in result.stderr.splitlines() if "error" in line.lower() and line.strip()]
        message = (lines[0] if lines else (result.stderr.strip().splitlines() or ["(none)"])[0])[:140]
        traceback = " **traceback**" if "Traceback" in result.stderr else ""
        print(f"| {name} | {result.returncode} | `{message.replace('|', '/')}`{traceback} | {result.seconds:.0f} | "
              f"{leftovers(cwd)} |")


if __name__ == "__main__":
    main()
