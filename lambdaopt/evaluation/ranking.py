"""Full-ranking evaluation: AUC, HR@K (recall in the top K) and NDCG@K over all items.

For a user u with held-out items H_u and excluded items E_u (what the user already saw in the
splits before the evaluated one), the candidates are all items not in E_u and the negatives
are the candidates not in H_u. Items are ordered by score, descending; ties are broken
*pessimistically*: a negative that ties a held-out item is placed before it, and tied held-out
items keep their id order. The rank of a held-out item p in that order is

    rank_p = 1 + #{n ∈ negatives: s_n ≥ s_p} + #{q ∈ H_u: s_q > s_p, or s_q = s_p and q before p}

and with it, averaged over users with ≥ 1 held-out item,

    HR@K_u   = #{p: rank_p ≤ K} / |H_u|                       (recall of H_u in the top-K list)
    NDCG@K_u = Σ_{p: rank_p ≤ K} 1/log2(1 + rank_p)  /  Σ_{r=1}^{min(K, |H_u|)} 1/log2(1 + r)
    AUC_u    = mean over (p, n) ∈ H_u × negatives of [s_p > s_n] + ½[s_p = s_n].

Everything is computed per chunk of users with one sort of the score matrix and a vectorized binary
search per held-out item (`count_below`), so the cost is O(chunk · n_items · log n_items) with no
Python loop over users or items.
"""
from __future__ import annotations

import logging
from typing import Protocol, Sequence

import numpy as np
import torch

from lambdaopt.data.interactions import Interactions
from lambdaopt.memory import release_free_heap

log = logging.getLogger(__name__)

# Chunks between giving freed heap pages back (lambdaopt/memory.py; also once before the first chunk).
# Each chunk's buffers differ in size (its users' held-out counts), so unreturned holes pile up: on
# ML-10M one evaluation's peak above its start was 1,091 MB without, 603 MB every 4 chunks at no
# measurable cost, 345 MB every chunk at +23 % time (the pages given back are faulted in again by the
# next chunk). An evaluation of at most 4 chunks does not release at all: one release before ML-100K's
# single chunk made it 10–25 % slower, for nothing.
RELEASE_EVERY_CHUNKS = 4


class Scorer(Protocol):
    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """Scores of `users` for every item, shape (len(users), n_items)."""


def metric_names(ks: Sequence[int]) -> list[str]:
    return ["auc"] + [f"{m}@{k}" for k in ks for m in ("hr", "ndcg")]


def gather_rows(indptr: torch.Tensor, indices: torch.Tensor, rows: torch.Tensor):
    """For CSR (indptr, indices) and a vector of row ids: (position of each entry's row in `rows`,
    position within its row, column) for every entry of those rows, without a Python loop."""
    starts, stops = indptr[rows], indptr[rows + 1]
    counts = stops - starts
    row_of_entry = torch.repeat_interleave(torch.arange(len(rows), device=rows.device), counts)
    offsets = torch.cumsum(counts, 0) - counts
    within_row = torch.arange(int(counts.sum()), device=rows.device) - offsets[row_of_entry]
    return row_of_entry, within_row, indices[starts[row_of_entry] + within_row]


def sort_rows(scores: torch.Tensor) -> torch.Tensor:
    """Each row sorted ascending. On CPU NumPy's vectorized sort (x86-simd-sort) is ≈4.5× faster than
    torch.sort for 1024 × 10k float32 rows here, and the sort is most of an evaluation at ML-10M size."""
    if scores.device.type == "cpu":
        return torch.from_numpy(np.sort(scores.numpy(), axis=1))
    return torch.sort(scores, dim=1).values


def _csr(interactions: Interactions, n_users: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    indptr, items = interactions.csr(n_users)
    return torch.as_tensor(indptr, device=device), torch.as_tensor(items, device=device)


class RankingEvaluator:
    """Scores held-out items against all candidates. Build once per split; call with a model (anything with `score_all`)."""

    log_prefix = "valid"
    trajectory = None  # no spectrum tracked for ranking

    def __init__(self, n_users: int, n_items: int, heldout: Interactions, excluded: Interactions,
                 ks: Sequence[int] = (10, 50, 100), chunk_users: int = 1024, device="cpu"):
        self.n_items = n_items
        self.ks = [int(k) for k in ks]
        self.chunk_users = chunk_users
        self.device = torch.device(device)
        self.heldout_indptr, self.heldout_items = _csr(heldout, n_users, self.device)
        self.excluded_indptr, self.excluded_items = _csr(excluded, n_users, self.device)
        counts = self.heldout_indptr[1:] - self.heldout_indptr[:-1]
        self.users = torch.nonzero(counts > 0).flatten()
        max_k = max(self.ks)
        discounts = 1.0 / torch.log2(torch.arange(2, max_k + 2, dtype=torch.float64, device=self.device))
        self.ideal_dcg = torch.cumsum(discounts, 0)  # IDCG@k for k = 1..max K
        self._warned = False

    @torch.no_grad()
    def per_user(self, model: Scorer) -> dict[str, torch.Tensor]:
        """Metric values per evaluated user (float64 tensors aligned with `self.users`)."""
        parts: dict[str, list[torch.Tensor]] = {name: [] for name in metric_names(self.ks)}
        # Only a long evaluation gives pages back: a short one would fault them in again at once.
        release = len(self.users) > RELEASE_EVERY_CHUNKS * self.chunk_users
        if release:
            release_free_heap()  # the caller's freed buffers first, so the chunks can reuse their pages
        for n, start in enumerate(range(0, len(self.users), self.chunk_users), start=1):
            chunk = self.users[start:start + self.chunk_users]
            for name, values in self._chunk_metrics(chunk, model.score_all(chunk)).items():
                parts[name].append(values)
            if release and n % RELEASE_EVERY_CHUNKS == 0:
                release_free_heap()
        return {name: torch.cat(values) if values else torch.empty(0, dtype=torch.float64)
                for name, values in parts.items()}

    def __call__(self, model: Scorer) -> dict[str, float]:
        """Metrics averaged over users with held-out items (AUC over users with ≥ 1 negative). A metric
        no user defines (AUC when every candidate is held out; all of them without held-out items) is
        left out with a warning, never reported as NaN."""
        result, undefined = {}, []
        for name, values in self.per_user(model).items():
            defined = values[~torch.isnan(values)]
            if len(defined):
                result[name] = float(defined.mean())
            else:
                undefined.append(name)
        if undefined and not self._warned:
            self._warned = True
            why = ("no user has held-out items" if len(self.users) == 0 else
                   "no user has a candidate item that is not held out, so nothing ranks below a held-out item")
            log.warning("%s undefined on this split (%s): left out of the results", ", ".join(undefined), why)
        return result

    def _chunk_metrics(self, users: torch.Tensor, scores: torch.Tensor) -> dict[str, torch.Tensor]:
        scores = scores.to(self.device, torch.float32).clone()
        low, high = torch.aminmax(scores)  # one pass, no mask: NaN propagates into both, ±inf shows in one
        if not (torch.isfinite(low) and torch.isfinite(high)):
            raise FloatingPointError("the model produced NaN/Inf scores")
        n_chunk, n_items = scores.shape
        # The chunk's held-out entries, flat and grouped by row in CSR order (`slot` = place within the row).
        # Every count below is per entry: padding each row to the longest (150 vs a mean of 7.5 on the
        # default validation split) cost more than the sort.
        row, slot, item = gather_rows(self.heldout_indptr, self.heldout_items, users)
        n_pos = torch.bincount(row, minlength=n_chunk)
        first_entry = torch.cumsum(n_pos, 0) - n_pos
        heldout = scores[row, item]

        excl_row, _, excl_item = gather_rows(self.excluded_indptr, self.excluded_items, users)
        scores[excl_row, excl_item] = -torch.inf  # excluded items fall below every real score
        n_excluded = torch.bincount(excl_row, minlength=n_chunk)

        # Candidates (held-out items included) scoring ≥ / > each held-out score s: those not < s and those
        # not ≤ s in its sorted row, one search for both. (Not "< the next float32 above s": with subnormals
        # flushed to zero, as a training run sets them (experiment.py), the float above 0 compares equal to 0.)
        row_start = torch.cat([row, row]) * n_items
        or_equal = torch.arange(2 * len(row), device=self.device) >= len(row)
        below = count_below(sort_rows(scores).reshape(-1), row_start, row_start + n_items, heldout.repeat(2), or_equal)
        cand_ge, cand_gt = n_items - below[:len(row)], n_items - below[len(row):]
        # The held-out items ahead of each one, and those scoring ≥ / > it: its place in its row's entries
        # sorted by descending score, ties in CSR order (stable sorts), and the bounds of its run of ties.
        order = torch.sort(heldout, descending=True, stable=True).indices
        order = order[torch.sort(row[order], stable=True).indices]
        place = torch.arange(len(order), device=self.device)
        in_row, score = row[order], heldout[order]
        row_first = first_entry[in_row]
        new_run = torch.ones(len(order), dtype=torch.bool, device=self.device)
        new_run[1:] = (in_row[1:] != in_row[:-1]) | (score[1:] != score[:-1])
        run_first = torch.cummax(torch.where(new_run, place, 0), 0).values
        last_of_run = torch.ones_like(new_run)
        last_of_run[:-1] = new_run[1:]
        run_last = torch.flip(torch.cummin(torch.flip(torch.where(last_of_run, place, len(order)), (0,)), 0).values, (0,))
        pos_before, pos_gt, pos_ge = (torch.empty_like(place) for _ in range(3))
        pos_before[order] = place - row_first
        pos_gt[order] = run_first - row_first
        pos_ge[order] = run_last + 1 - row_first
        neg_ge, neg_gt = cand_ge - pos_ge, cand_gt - pos_gt
        rank = (1 + neg_ge + pos_before).to(torch.float64)

        n_pos64 = n_pos.to(torch.float64)
        n_neg = (n_items - n_excluded - n_pos).to(torch.float64)
        # a sum of halves: exact in float64 in any order (float32 stops being exact past 2^23)
        wrong_pairs = torch.zeros(n_chunk, dtype=torch.float64, device=self.device).index_add_(
            0, row, neg_gt.to(torch.float64) + 0.5 * (neg_ge - neg_gt))
        auc = torch.where(n_neg > 0, 1.0 - wrong_pairs / (n_pos64 * n_neg.clamp(min=1)), torch.nan)
        result = {"auc": auc}
        gain = 1.0 / torch.log2(rank + 1.0)
        # DCG is a sum of irrationals: summed along a zero-padded row, so its order (and every bit of the
        # result) is fixed, on CUDA too (an index_add_ there adds in whatever order its threads run)
        gains = torch.zeros((n_chunk, int(n_pos.max())), dtype=torch.float64, device=self.device)
        for k in self.ks:
            hit = rank <= k
            result[f"hr@{k}"] = torch.bincount(row[hit], minlength=n_chunk) / n_pos64
            gains.zero_()
            gains[row, slot] = torch.where(hit, gain, 0.0)
            ideal = self.ideal_dcg[torch.clamp(n_pos, max=k) - 1]
            result[f"ndcg@{k}"] = gains.sum(1) / ideal
        return result


def count_below(flat_sorted: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, values: torch.Tensor,
                or_equal: torch.Tensor | bool = False) -> torch.Tensor:
    """For each value, how many elements of its ascending run `flat_sorted[lo:hi]` are < it, or ≤ it where
    `or_equal` (`lo`, `hi`, `or_equal` per value): `torch.searchsorted(run, value, right=or_equal)` for any
    number of values per run, with no padding. Binary lifting: the elements below a value are a prefix of
    its run, grown by 2^j, ..., 2, 1 where the element ending the longer prefix is still below;
    ⌈log2(longest run + 1)⌉ vectorized steps."""
    count = torch.zeros_like(lo)
    or_equal = torch.as_tensor(or_equal, device=values.device)
    last = len(flat_sorted) - 1
    step = 1 << (int((hi - lo).max()).bit_length() - 1) if len(lo) else 0
    while step:
        longer = count + step
        end = lo + longer  # one past the longer prefix
        element = flat_sorted[(end - 1).clamp_(max=last)]
        below = (end <= hi) & torch.where(or_equal, element <= values, element < values)
        count = torch.where(below, longer, count)
        step >>= 1
    return count
