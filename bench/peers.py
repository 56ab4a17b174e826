"""Peer libraries on lambdaopt's own splits: cornac's and implicit's BPR, tuned on validation and scored
by lambdaopt's `RankingEvaluator`, printed beside the lambdaopt rows of a sweep.

    pip install -e ".[peers]"
    python bench/peers.py dataset=ml-100k                                  # both peers, 3 seeds
    python bench/peers.py dataset=ml-100k dataset.split.method=leave_one_out \
        --parent <a sweep's MLflow parent run id> --uri sqlite:///mlflow.db  # + the sweep's rows

Positional arguments are Hydra overrides of lambdaopt's config: the dataset and its split are built
exactly as `run.py` builds them (same cache entry, same fingerprint), and `model.dim` is the peers'
number of factors.

Protocol, per peer and seed (stated budget: the grid below, `--max-iter` epochs, an evaluation every
`--eval-every` epochs): every (learning rate, regularization) pair is trained once from its own seeded
init; after every `--eval-every` epochs the model is scored on validation (candidates: all items but the
user's training items, as lambdaopt's own validation); the (lr, reg, epochs) with the best validation
`--monitor` is kept and only that model is scored on test (candidates exclude train ∪ validation).
Test is never looked at for selection.

What the peers do differently from lambdaopt (their own defaults, unchanged):
- cornac `BPR`: per-sample SGD over positives drawn with replacement, uniform negatives (a drawn known
  positive is skipped), an item bias, L2 `lambda_reg` on every touched row and bias at every update,
  init uniform(−0.5, 0.5)/k.
- implicit `BayesianPersonalizedRanking`: per-sample SGD whose negatives are drawn from the stream of
  all interactions (popularity-proportional), item bias as an extra factor, `verify_negative_samples`.
Items with no training interaction cannot be learned by either library (cornac does not know them,
implicit leaves them at zero): here both rank them last (`COLD`), which ties them pessimistically
with each other under lambdaopt's evaluator.
"""
from __future__ import annotations

import argparse
import itertools
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# The documented tuning grid (issue-level budget: 12 (lr, reg) pairs × up to 200 epochs per seed).
GRIDS = {
    "cornac": {"lr": [0.01, 0.05, 0.1], "reg": [1e-4, 1e-3, 1e-2, 1e-1]},
    "implicit": {"lr": [0.01, 0.05, 0.1], "reg": [1e-4, 1e-3, 1e-2, 1e-1]},
}


COLD = -1e30  # the score of an item the peer cannot score: last, tied with the other such items


class FactorScorer:
    """`score_all` over numpy factors for lambdaopt's evaluator; `cold` items score COLD (below any
    learned score: the evaluator refuses ±inf)."""

    def __init__(self, users: np.ndarray, items: np.ndarray, item_bias: np.ndarray | None = None,
                 cold: np.ndarray | None = None):
        self.users = torch.as_tensor(np.ascontiguousarray(users, dtype=np.float32))
        self.items = torch.as_tensor(np.ascontiguousarray(items, dtype=np.float32))
        bias = np.zeros(len(items), np.float32) if item_bias is None else item_bias.astype(np.float32)
        if cold is not None:
            bias = np.where(cold, COLD, bias).astype(np.float32)
        self.bias = torch.as_tensor(bias)

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self.users[users.cpu()] @ self.items.T + self.bias


@dataclass
class Trial:
    """One peer fit: its grid point, the validation curve, the selected point and its scorer."""
    peer: str
    lr: float
    reg: float
    seed: int
    curve: list[tuple[int, float]] = field(default_factory=list)  # (epochs, validation monitor)
    best_epochs: int = 0
    best_valid: dict = field(default_factory=dict)
    best_scorer: FactorScorer | None = None
    train_seconds: float = 0.0


def train_cornac(dataset, dim: int, lr: float, reg: float, seed: int, max_iter: int, eval_every: int, on_eval):
    """cornac BPR, `eval_every` epochs at a time (a second `fit` continues from the current factors)."""
    import warnings

    import cornac

    warnings.filterwarnings("ignore", "Model is already fitted")  # a second fit continues, which is the point
    train = dataset.train
    data = list(zip(train.users.tolist(), train.items.tolist(), [1.0] * len(train)))
    train_set = cornac.data.Dataset.build(data, fmt="UIR", seed=seed)
    model = cornac.models.BPR(k=dim, max_iter=eval_every, learning_rate=lr, lambda_reg=reg, seed=seed,
                              num_threads=1, verbose=False)
    seconds = 0.0
    for epochs in range(eval_every, max_iter + 1, eval_every):
        started = time.process_time()
        model.fit(train_set)
        seconds += time.process_time() - started
        on_eval(epochs, cornac_scorer(model, train_set, dataset))
    return seconds


def cornac_scorer(model, train_set, dataset) -> FactorScorer:
    """A cornac BPR's factors in lambdaopt's id space (items it never saw are `cold`: ranked last)."""
    user_index = np.array([train_set.uid_map.get(u, -1) for u in range(dataset.n_users)])
    item_index = np.array([train_set.iid_map.get(i, -1) for i in range(dataset.n_items)])
    cold = item_index < 0
    users = np.zeros((dataset.n_users, model.k), np.float32)
    users[user_index >= 0] = model.u_factors[user_index[user_index >= 0]]
    items = np.zeros((dataset.n_items, model.k), np.float32)
    items[~cold] = model.i_factors[item_index[~cold]]
    bias = np.zeros(dataset.n_items, np.float32)
    bias[~cold] = model.i_biases[item_index[~cold]]
    return FactorScorer(users, items, bias, cold)


def train_implicit(dataset, dim: int, lr: float, reg: float, seed: int, max_iter: int, eval_every: int, on_eval):
    """implicit BPR for `max_iter` epochs, scored through its per-epoch callback (whose time is excluded)."""
    import scipy.sparse as sp
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    train = dataset.train
    matrix = sp.csr_matrix((np.ones(len(train), np.float32), (train.users, train.items)),
                           shape=(dataset.n_users, dataset.n_items))
    cold = np.bincount(train.items, minlength=dataset.n_items) == 0
    model = BayesianPersonalizedRanking(factors=dim, learning_rate=lr, regularization=reg, iterations=max_iter,
                                        num_threads=1, random_state=seed)
    spent = [0.0]

    def callback(iteration, *_):
        if (iteration + 1) % eval_every == 0:
            started = time.process_time()
            # user factors end in a constant 1 and item factors in the item bias: a plain dot product
            on_eval(iteration + 1, FactorScorer(model.user_factors, model.item_factors, None, cold))
            spent[0] += time.process_time() - started

    started = time.process_time()
    model.fit(matrix, show_progress=False, callback=callback)
    return time.process_time() - started - spent[0]


PEERS = {"cornac": train_cornac, "implicit": train_implicit}


def tune(peer: str, dataset, dim: int, seed: int, grid: dict, max_iter: int, eval_every: int, valid_eval,
         monitor: str) -> tuple[Trial, list[Trial]]:
    """Every grid point of `peer` for one seed; the trial with the best validation `monitor`."""
    trials = []
    for lr, reg in itertools.product(grid["lr"], grid["reg"]):
        trial = Trial(peer, lr, reg, seed)

        def on_eval(epochs, scorer, trial=trial):
            valid = valid_eval(scorer)
            trial.curve.append((epochs, valid[monitor]))
            if not trial.best_valid or valid[monitor] > trial.best_valid[monitor]:
                trial.best_epochs, trial.best_valid, trial.best_scorer = epochs, valid, scorer

        trial.train_seconds = PEERS[peer](dataset, dim, lr, reg, seed, max_iter, eval_every, on_eval)
        trials.append(trial)
    best = max(trials, key=lambda t: t.best_valid.get(monitor, -np.inf))
    return best, trials


def summarize(rows: dict[str, list[dict]], metrics: list[str]) -> list[dict]:
    """{row: per-seed test metrics} → one record per row with mean and std (no std for one seed)."""
    table = []
    for row, per_seed in rows.items():
        record = {"row": row, "seeds": len(per_seed)}
        for metric in metrics:
            values = np.array([s[metric] for s in per_seed if metric in s], dtype=float)
            record[metric] = (values.mean(), values.std() if len(values) > 1 else None) if len(values) else None
        record["compute_s"] = sum(s.get("compute_s", 0.0) for s in per_seed)
        record["selected"] = "; ".join(s["selected"] for s in per_seed if s.get("selected"))
        table.append(record)
    return table


def to_markdown(table: list[dict], metrics: list[str]) -> str:
    header = ["", *(m.upper() for m in metrics), "seeds", "compute", "selected (per seed)"]
    best = {m: max((r for r in table if r[m] is not None), key=lambda r: r[m][0])["row"] for m in metrics
            if any(r[m] is not None for r in table)}
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for record in table:
        cells = [record["row"]]
        for metric in metrics:
            value = record[metric]
            cell = "–" if value is None else f"{value[0]:.4f}" + ("" if value[1] is None else f" ± {value[1]:.4f}")
            cells.append(f"**{cell}**" if best.get(metric) == record["row"] else cell)
        cells += [str(record["seeds"]), f"{record['compute_s']:.0f} s", record["selected"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def lambdaopt_rows(uri: str, experiment: str, parent: str, fingerprint: str, metrics: list[str]) -> dict:
    """The rows of a lambdaopt sweep (the report's own selection: grid points picked per seed on
    validation), as {row: per-seed test metrics}; refuses runs on another split."""
    from lambdaopt.errors import ReportError
    from lambdaopt.report.runs import label_runs, load_runs
    from lambdaopt.report.table import select_grid_points, tuned_point
    from lambdaopt.tracking import mlflow_key

    runs = label_runs(load_runs(uri, experiment, parent))
    hashes = set(runs.get("tags.dataset_hash", []))
    if hashes != {fingerprint}:
        raise ReportError(f"the runs under parent {parent} were trained on split(s) {sorted(hashes)}, not on this "
                          f"one ({fingerprint}): pass the same dataset overrides as the sweep")
    selected = select_grid_points(runs)
    rows: dict[str, list[dict]] = {}
    for row, group in selected.groupby("row", sort=False):
        for position, (_, run) in enumerate(group.iterrows()):
            entry = {m: run.get(f"metrics.test/{mlflow_key(m)}") for m in metrics}
            entry = {k: float(v) for k, v in entry.items() if v is not None and np.isfinite(v)}
            # the whole grid behind the row (all seeds, every grid point), counted once
            entry["compute_s"] = float(run["row_seconds"]) if position == 0 else 0.0
            entry["selected"] = tuned_point(run, runs) if run["is_grid"] else ""
            rows.setdefault(f"lambdaopt {row}", []).append(entry)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of lambdaopt's config (dataset=..., model.dim=)")
    parser.add_argument("--peers", nargs="+", default=list(PEERS), choices=list(PEERS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--max-iter", type=int, default=200, help="epochs per grid point")
    parser.add_argument("--eval-every", type=int, default=10, help="epochs between validation evaluations")
    parser.add_argument("--lr", type=float, nargs="+", help="replace the grid's learning rates")
    parser.add_argument("--reg", type=float, nargs="+", help="replace the grid's regularization values")
    parser.add_argument("--monitor", default="ndcg@10", help="validation metric to select on (higher is better)")
    parser.add_argument("--metrics", nargs="+", default=["ndcg@10", "hr@100", "auc"], help="test metrics to print")
    parser.add_argument("--parent", help="an MLflow parent run: its sweep's rows are printed beside the peers")
    parser.add_argument("--uri", default="sqlite:///mlflow.db")
    parser.add_argument("--experiment", default="lambdaopt")
    parser.add_argument("--out", help="also write the table (Markdown) to this file")
    args = parser.parse_args(argv)

    from hydra.utils import instantiate

    import lambdaopt
    from lambdaopt.config import validate
    from lambdaopt.errors import LambdaoptError
    from lambdaopt.evaluation.ranking import RankingEvaluator

    torch.set_num_threads(1)
    grids = {p: {"lr": args.lr or GRIDS[p]["lr"], "reg": args.reg or GRIDS[p]["reg"]} for p in args.peers}
    try:
        cfg = lambdaopt.compose(args.overrides)
        validate(cfg)
        dataset = instantiate(cfg.dataset)
        ks = sorted({int(m.split("@")[1]) for m in [*args.metrics, args.monitor] if "@" in m})
        valid_eval = RankingEvaluator(dataset.n_users, dataset.n_items, dataset.valid, dataset.train, ks=ks)
        test_eval = RankingEvaluator(dataset.n_users, dataset.n_items, dataset.test,
                                     dataset.train.concat(dataset.valid), ks=ks)
        print(f"{dataset.name} ({cfg.dataset.split.method} split, fingerprint {dataset.fingerprint}): "
              f"{dataset.n_users} users, {dataset.n_items} items, {len(dataset.train)}/{len(dataset.valid)}/"
              f"{len(dataset.test)} train/valid/test; d = {cfg.model.dim}", flush=True)
        rows: dict[str, list[dict]] = {}
        for peer in args.peers:
            grid = grids[peer]
            label = f"{peer} BPR"
            for seed in args.seeds:
                best, trials = tune(peer, dataset, cfg.model.dim, seed, grid, args.max_iter, args.eval_every,
                                    valid_eval, args.monitor)
                test = test_eval(best.best_scorer)
                rows.setdefault(label, []).append({
                    **test, "compute_s": sum(t.train_seconds for t in trials),
                    "selected": f"lr {best.lr:g} reg {best.reg:g} {best.best_epochs} ep"})
                print(f"  {label} seed {seed}: lr {best.lr:g}, reg {best.reg:g}, {best.best_epochs} epochs → valid "
                      f"{args.monitor} {best.best_valid[args.monitor]:.4f}, test " +
                      ", ".join(f"{m} {test[m]:.4f}" for m in args.metrics), flush=True)
        if args.parent:
            rows.update(lambdaopt_rows(args.uri, args.experiment, args.parent, dataset.fingerprint, args.metrics))
    except LambdaoptError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    markdown = to_markdown(summarize(rows, args.metrics), args.metrics)
    print()
    print(markdown)
    pairs = ", ".join(f"{p} {len(g['lr']) * len(g['reg'])} (lr, reg) pairs" for p, g in grids.items())
    print(f"\nbudget per peer and seed: {pairs} × "
          f"≤ {args.max_iter} epochs, validation every {args.eval_every}; selected on validation {args.monitor}; "
          "compute = summed training CPU seconds of every grid point (all seeds)")
    if args.out:
        Path(args.out).write_text(markdown + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
