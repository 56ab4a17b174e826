"""Epoch time of the λOpt paper's reference implementation beside lambdaopt's, on lambdaopt's ML-100K split.

The reference (github.com/yihong-chen/lambda-opt, at its HEAD 672a7ec) is not a dependency: `--reference DIR`
is a checkout of it, run by `--reference-python` (its own environment: torch, pandas, numpy, tensorboardX,
higher, GPUtil — its modules import them). A ratio to it is only ever printed from a measurement in this
run. The checkout needs exactly these two patches (bench/reference_speed.md), nothing else:

    --- a/src/factorizer/factorizer.py            (torch 2: load_state_dict no longer copies the state,
    +++ b/src/factorizer/factorizer.py             so the look-ahead stepped the live Adam moments)
    @@ -63,7 +63,7 @@ class BPR_Factorizer(object):
    -        self.optimizer.load_state_dict(new_factorizer.optimizer.state_dict())
    +        self.optimizer.load_state_dict(deepcopy(new_factorizer.optimizer.state_dict()))
    --- a/src/regularizer/regularizer.py          (the flag 672a7ec dropped with set_assumed_flag; without
    +++ b/src/regularizer/regularizer.py           it the λ update asserts on a missing Adam state)
    @@ -244,6 +244,7 @@ class MFAlterRegularizer(AlterRegularizer):
             factorizer = status['factorizer']
    +        factorizer.is_assumed = True  # flag to distinguish itself as assumed update

What runs: for each reference contender a fresh `--reference-python` process (OMP_NUM_THREADS=1,
torch.set_num_threads(1)) runs the reference's own training script — `src/train_ml1m_fixed.py` (fixed λ
1e-3) or `src/train_ml1m_alter.py` (λOpt, `regularizer='alter_mf'`, `lambda_network_type='dimension+user+item'`)
— with its settings as they are (MF d = 128, batch 1024, one negative per positive, Adam lr 1e-3, λ Adam
with AMSGrad) except: CPU (`use_cuda=False`), paths in a temporary folder, and `Engine.train` replaced by
one episode of its own loop `Engine.train_an_episode` in the reference's `partial` mode (no tensorboard
logging, no test evaluation) for 1 + `--epochs` epochs, the first untimed. An epoch is `num_batches_train`
(59) steps, as its engine counts them; a step is its whole loop body (copy of the model into the look-ahead
factorizer, for DUI the λ update, then the model update), timed from the start of one step to the next.
lambdaopt's fixed-λ (optimizer=adam) and λOpt-DUI (regularizer=lambdaopt_dui optimizer=adam) are built as
peers_speed.py builds them and timed through `Trainer.train_epoch` (warmed up by one epoch first). Each
round runs reference fixed, lambdaopt fixed, reference DUI, lambdaopt DUI in turn; the table shows the
median of every timed epoch over all rounds.

The data: lambdaopt's train / validation / test split is written as the reference's preprocessed file
(`filtered_data_path`, loaded with `reconstruct_data=False`: no filtering and no re-indexing, our ids as
they are) with the part as its date, and the reference's split function (`utils.data_loader.split_lro`,
which its scripts select) is replaced in its process by one that cuts off the last date — so it trains
on exactly our training interactions, and its λ on our validation split; the process reports a digest
of the (user, item) pairs it trains on, checked here. Differences that remain:
- negatives: both draw one uniform negative per positive outside the user's training items, fresh every
  pass; the reference does it with pandas merges and rejection, and its DataLoader collates triple by
  triple (part of its epoch, as lambdaopt's sampling and batching are of ours);
- the reference's DUI look-ahead draws its own training batch (so its sampler passes over the training
  data twice per epoch of model steps), and its λ learns from the whole validation split (lambdaopt's
  default `lambda_data=split`: half of it, plus the latest training interaction of users without one);
- learning rates differ (the reference's Adam lr 1e-3 and λ lr 1e-3, lambdaopt's 1e-2 and 1e-4) — no
  matter for time per epoch.

    python bench/lambdaopt_reference.py --reference /tmp/lopt --reference-python /tmp/loptvenv/bin/python
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import print_table  # noqa: E402
from peers_speed import build_ours  # noqa: E402

DATASET = ["dataset=ml-100k", "model.dim=128"]
OURS = {"lambdaopt fixed λ, Adam": ["optimizer=adam"],
        "lambdaopt λOpt-DUI, Adam": ["optimizer=adam", "regularizer=lambdaopt_dui"]}
REFERENCE = {"reference fixed λ, Adam": "train_ml1m_fixed.py", "reference λOpt-DUI, Adam": "train_ml1m_alter.py"}
PARTS = {"train": "2000-01-01", "valid": "2000-01-02", "test": "2000-01-03"}  # the part, as the row's date

# Run by --reference-python with argv: src folder, training script, data file, work folder, epochs.
DRIVER = '''
import hashlib, json, runpy, sys, time
import torch
src, script, data, folder, epochs = sys.argv[1:6]
sys.path.insert(0, src)
torch.set_num_threads(1)
import engine
from utils import data_loader


def split_last_date(ui_history, **_):
    """(earlier rows, rows of the last date): train+valid | test, then train | valid, as lambdaopt split."""
    last = ui_history["timestamp"] == ui_history["timestamp"].max()
    return ui_history[~last], ui_history[last]


class Timed(engine.Engine):
    def __init__(self, opt):
        opt.update(use_cuda=False, reconstruct_data=False, filtered_data_path=data, tensorboard=folder + "/runs",
                   eval_res_path=folder + "/res/{alias}/{epoch_idx}.csv")
        if opt.get("penalty_param_path"):
            opt["penalty_param_path"] = folder + "/penalty/{alias}/{epoch_idx}"
        super().__init__(opt)

    def train(self):
        if self._opt["regularizer"] == "fixed":
            self._regularizer.set_cur_lambda()  # its one candidate, as train_fixed_reg takes it
        self.mode = "partial"  # its episode without the tensorboard logging and the test evaluation
        stamps, copy = [], self._factorizer_assumed.copy
        def stamped(factorizer):  # the first call of every step
            stamps.append(time.perf_counter())
            return copy(factorizer)
        self._factorizer_assumed.copy = stamped
        steps = self._sampler.num_batches_train
        self.train_an_episode(max_steps=(int(epochs) + 1) * steps + 1)
        pairs = {}
        for part in ("train", "valid"):
            frame = getattr(self._sampler, part + "_ui_history")
            keys = (frame["userId"].to_numpy("int64") * self._sampler.num_items + frame["itemId"].to_numpy("int64"))
            keys.sort()
            pairs[part] = [len(keys), hashlib.sha1(keys.tobytes()).hexdigest()]
        seconds = [stamps[(e + 1) * steps] - stamps[e * steps] for e in range(int(epochs) + 1)]
        print("BENCH " + json.dumps({"seconds": seconds,
                                     "steps": steps, "users": self._sampler.num_users,
                                     "items": self._sampler.num_items, **pairs}), flush=True)


data_loader.split_lro = split_last_date  # the split its scripts select (train_test_split='lro')
engine.Engine = Timed  # what the script's `from engine import Engine` gets
runpy.run_path(src + "/" + script, run_name="__main__")
'''


def digest(part, n_items: int) -> list:
    keys = np.sort(part.users.astype(np.int64) * n_items + part.items.astype(np.int64))
    return [len(keys), hashlib.sha1(keys.tobytes()).hexdigest()]


def write_split(dataset, path: Path) -> None:
    frames = [pd.DataFrame({"userId": part.users, "itemId": part.items, "timestamp": date})
              for part, date in zip((dataset.train, dataset.valid, dataset.test), PARTS.values())]
    pd.concat(frames).to_csv(path, index=False)


def run_reference(args, script: str, folder: Path, expected: dict) -> list[float]:
    """Seconds of each timed epoch of one reference process (its warm-up epoch dropped)."""
    with tempfile.TemporaryDirectory(dir=folder) as work:
        result = subprocess.run(
            [args.reference_python, str(folder / "driver.py"), str(Path(args.reference).resolve() / "src"), script,
             str(folder / "ml-100k.csv"), work, str(args.epochs)],
            cwd=work, capture_output=True, text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"})
    line = next((x for x in result.stdout.splitlines() if x.startswith("BENCH ")), None)
    if result.returncode or line is None:
        raise SystemExit(f"the reference's {script} failed (is it patched? see this script's docstring):\n"
                         f"{(result.stdout + result.stderr)[-3000:]}")
    report = json.loads(line[len("BENCH "):])
    seen = {key: report[key] for key in expected}
    if seen != expected:
        raise SystemExit(f"the reference did not train on our split: {seen} != {expected}")
    return report["seconds"][1:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", required=True, help="a checkout of yihong-chen/lambda-opt, patched as above")
    parser.add_argument("--reference-python", default=sys.executable, help="the Python that runs the reference")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs of each contender per round")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    ours, triples = {}, {}
    for name, extra in OURS.items():
        parts, trainer = build_ours([*DATASET, *extra])
        ours[name], triples[name] = trainer.train_epoch, len(parts.task.objective.fit)
        trainer.train_epoch()  # warm-up
    dataset = parts.dataset
    expected = {"users": dataset.n_users, "items": dataset.n_items,
                "train": digest(dataset.train, dataset.n_items), "valid": digest(dataset.valid, dataset.n_items)}
    seconds = {name: [] for pair in zip(REFERENCE, OURS) for name in pair}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        write_split(dataset, folder / "ml-100k.csv")
        (folder / "driver.py").write_text(DRIVER)
        for round_ in range(args.rounds):
            for (reference, script), (name, epoch) in zip(REFERENCE.items(), ours.items()):
                seconds[reference] += run_reference(args, script, folder, expected)
                for _ in range(args.epochs):
                    started = time.perf_counter()
                    epoch()
                    seconds[name].append(time.perf_counter() - started)
            print(f"round {round_ + 1}: " + ", ".join(f"{n} {v[-1]:.3f} s" for n, v in seconds.items()), flush=True)
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    rows = [(name, f"{medians[name]:.4f}", f"{min(values):.4f}", f"{len(dataset.train) / medians[name]:,.0f}")
            for name, values in seconds.items()]
    print(f"\n{dataset.name}: {dataset.n_users} users x {dataset.n_items} items, {len(dataset.train):,} training "
          f"interactions (lambdaopt trains {min(triples.values()):,}–{max(triples.values()):,} triples/epoch), "
          f"d = 128, batch 1024, 1 thread; median of {args.rounds} round(s) x {args.epochs} epoch(s)\n")
    print_table(rows, ["contender", "s/epoch", "min s", "interactions/s"])
    print()
    for reference, name in zip(REFERENCE, OURS):
        print(f"{reference} / {name}: {medians[reference] / medians[name]:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
