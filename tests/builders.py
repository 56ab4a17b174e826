"""Small data the tests build for themselves: rating logs and files in the published formats, random
interaction logs, hand-made MLflow run tables; and checks shared by several test modules."""
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from lambdaopt.data.interactions import Interactions


SPLIT = SimpleNamespace(method="temporal", test_ratio=0.2, valid_ratio=0.25)


def ratings_rows(n_users=12, n_items=15, per_user=6, seed=0):
    """(user, item, rating, timestamp) rows: every user rates `per_user` distinct items."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(1, n_users + 1):
        for item in rng.choice(np.arange(1, n_items + 1), per_user, replace=False):
            rows.append((user, int(item), int(rng.integers(1, 6)), int(rng.integers(8.7e8, 8.9e8))))
    return rows


def write_u_data(path, rows):
    path.write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows))
    return path


def one_line_error(error, *needles):
    message = str(error.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, message
    return message


def nothing_cached(cache_dir):
    processed = Path(cache_dir) / "processed"
    return not processed.exists() or not any(processed.iterdir())


def random_log(seed=0, n_users=60, n_items=80, min_per_user=5):
    rng = np.random.default_rng(seed)
    users, items = [], []
    for user in range(n_users):
        chosen = rng.choice(n_items, size=rng.integers(min_per_user, 40), replace=False)
        users += [user] * len(chosen)
        items += chosen.tolist()
    timestamps = rng.integers(0, 50, len(users))  # coarse: many equal timestamps
    return Interactions.from_arrays(users, items, timestamps)


def pairs(part):
    return set(zip(part.users.tolist(), part.items.tolist()))


def fake_runs() -> pd.DataFrame:
    rows = []
    for seed in (0, 1, 2):
        for lam, valid, test in ((0.0, 0.10, 0.30), (1e-2, 0.20 + seed / 100, 0.25), (1.0, 0.05, 0.40)):
            rows.append({"tags.regularizer": "FixedL2", "params.regularizer.lam": str(lam), "lam_valid": valid,
                         "metrics.test/ndcg_at_10": test + seed / 1000, "metrics.best_valid/ndcg_at_10": valid})
        rows.append({"tags.regularizer": "LambdaOpt", "params.regularizer.granularity": "dui",
                     "metrics.test/ndcg_at_10": 0.27 + seed / 1000, "metrics.best_valid/ndcg_at_10": 0.3})
    runs = pd.DataFrame(rows)
    runs["seed"] = None
    runs["params.seed"] = [str(s) for s in (0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2)]
    runs["params.regularizer.seed"] = runs["params.seed"]
    runs["params.trainer.monitor"] = "ndcg@10"
    runs["tags.model"], runs["tags.dataset"] = "MatrixFactorization", "synthetic"
    runs["metrics.train_seconds"] = 1.0
    runs["run_id"] = [f"run{i}" for i in range(len(runs))]
    return runs.drop(columns=["seed", "lam_valid"])
