"""The vectorized full-ranking metrics against their brute-force definitions (ties included)."""
import math

import numpy as np
import pytest
import torch

from lambdaopt.data.interactions import Interactions
from lambdaopt.evaluation.ranking import RankingEvaluator, count_below


class FixedScores:
    def __init__(self, scores):
        self.scores = torch.as_tensor(scores, dtype=torch.float32)

    def score_all(self, users):
        return self.scores[users]


def brute_force(scores, heldout, excluded, ks):
    """Sort candidates by (−score, negatives before held-out, item id) and read metrics off the list."""
    per_user = {name: [] for name in ["auc"] + [f"{m}@{k}" for k in ks for m in ("hr", "ndcg")]}
    for user, positives in heldout.items():
        if not positives:
            continue
        candidates = [i for i in range(scores.shape[1]) if i not in excluded.get(user, set())]
        negatives = [i for i in candidates if i not in positives]
        ranked = sorted(candidates, key=lambda i: (-scores[user, i], i in positives, i))
        rank = {item: position + 1 for position, item in enumerate(ranked)}
        pairs = [(1.0 if scores[user, p] > scores[user, n] else 0.5 if scores[user, p] == scores[user, n] else 0.0)
                 for p in positives for n in negatives]
        per_user["auc"].append(np.mean(pairs) if pairs else np.nan)
        for k in ks:
            hits = [p for p in positives if rank[p] <= k]
            per_user[f"hr@{k}"].append(len(hits) / len(positives))
            dcg = sum(1 / math.log2(1 + rank[p]) for p in hits)
            idcg = sum(1 / math.log2(1 + r) for r in range(1, min(k, len(positives)) + 1))
            per_user[f"ndcg@{k}"].append(dcg / idcg)
    return {name: float(np.nanmean(values)) for name, values in per_user.items()}


def random_problem(seed, n_users=25, n_items=40, tie_levels=None):
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(n_users, n_items))
    if tie_levels:  # coarse values → many ties between held-out items and negatives
        scores = np.round(scores * tie_levels) / tie_levels
    heldout, excluded, pairs_h, pairs_e = {}, {}, [], []
    for user in range(n_users):
        items = rng.permutation(n_items)
        n_excluded, n_heldout = rng.integers(0, 15), rng.integers(0, 8)  # some users have no held-out items
        excluded[user] = set(items[:n_excluded].tolist())
        heldout[user] = set(items[n_excluded:n_excluded + n_heldout].tolist())
        pairs_e += [(user, i) for i in excluded[user]]
        pairs_h += [(user, i) for i in heldout[user]]
    to_log = lambda pairs: Interactions.from_arrays([u for u, _ in pairs], [i for _, i in pairs])
    return scores.astype(np.float32), heldout, excluded, to_log(pairs_h), to_log(pairs_e)


@pytest.fixture(params=[False, True], ids=["subnormals", "flushed"])
def flush_denormal(request):
    """Both CPU modes: a training run sets subnormals to be flushed to zero for the whole process
    (experiment.py), and an evaluation once broke there (the float32 above 0 then compares equal to 0).
    The process's mode is put back after (torch has no getter: read off a subnormal's comparison)."""
    flushed_before = not bool(torch.tensor([1e-45]) > 0)
    torch.set_flush_denormal(request.param)
    yield
    torch.set_flush_denormal(flushed_before)


@pytest.mark.parametrize("seed,tie_levels,chunk", [(0, None, 1024), (1, 2, 7), (2, 1, 3), (3, 4, 1)])
def test_ranking_metrics_equal_brute_force(seed, tie_levels, chunk, flush_denormal):
    scores, heldout, excluded, heldout_log, excluded_log = random_problem(seed, tie_levels=tie_levels)
    ks = [1, 3, 10, 40]
    evaluator = RankingEvaluator(scores.shape[0], scores.shape[1], heldout_log, excluded_log, ks=ks, chunk_users=chunk)
    got = evaluator(FixedScores(scores))
    want = brute_force(scores, heldout, excluded, ks)
    for name in want:
        assert got[name] == pytest.approx(want[name], abs=1e-9), name


@pytest.mark.parametrize("right", [False, True])
def test_count_below_is_searchsorted_within_each_run(right):
    """Runs of 0..9 values with many ties, several values per run, values below, between, at and above."""
    rng = np.random.default_rng(0)
    runs = [np.sort(rng.integers(0, 4, size=rng.integers(0, 10))).astype(np.float32) for _ in range(30)]
    bounds = np.cumsum([0] + [len(r) for r in runs])
    run_of, values, want = [], [], []
    for i, r in enumerate(runs):
        for v in rng.integers(-1, 5, size=rng.integers(0, 6)) + rng.choice([0.0, 0.5], size=1):
            run_of.append(i), values.append(v)
            want.append(np.searchsorted(r, np.float32(v), side="right" if right else "left"))
    run_of = torch.tensor(run_of)
    got = count_below(torch.from_numpy(np.concatenate(runs)), torch.from_numpy(bounds)[run_of],
                      torch.from_numpy(bounds)[run_of + 1], torch.tensor(values, dtype=torch.float32), right)
    assert got.tolist() == want


def test_constant_scores_are_not_rewarded(flush_denormal):
    """All-equal scores: pessimistic ties put every negative first, AUC is exactly 0.5."""
    scores = np.zeros((3, 10), np.float32)
    heldout = Interactions.from_arrays([0, 1, 2], [0, 5, 9])
    evaluator = RankingEvaluator(3, 10, heldout, Interactions.from_arrays([], []), ks=[5])
    got = evaluator(FixedScores(scores))
    assert got["auc"] == 0.5 and got["hr@5"] == 0.0 and got["ndcg@5"] == 0.0


def test_perfect_ranking_scores_one():
    scores = np.tile(np.arange(10, dtype=np.float32)[::-1], (2, 1))  # item 0 best
    heldout = Interactions.from_arrays([0, 0, 1], [0, 1, 0])
    evaluator = RankingEvaluator(2, 10, heldout, Interactions.from_arrays([], []), ks=[2])
    assert evaluator(FixedScores(scores)) == {"auc": 1.0, "hr@2": 1.0, "ndcg@2": 1.0}


def test_excluded_items_do_not_count_as_negatives():
    scores = np.array([[5, 4, 3, 2, 1]], np.float32)  # items 0, 1 outrank the held-out item 2
    heldout = Interactions.from_arrays([0], [2])
    excluded = Interactions.from_arrays([0, 0], [0, 1])  # ... but the user already saw them
    evaluator = RankingEvaluator(1, 5, heldout, excluded, ks=[1])
    assert evaluator(FixedScores(scores)) == {"auc": 1.0, "hr@1": 1.0, "ndcg@1": 1.0}


def test_nan_scores_raise():
    evaluator = RankingEvaluator(1, 3, Interactions.from_arrays([0], [0]), Interactions.from_arrays([], []), ks=[1])
    with pytest.raises(FloatingPointError):
        evaluator(FixedScores([[np.nan, 0, 0]]))
