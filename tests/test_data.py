"""Split invariants, negative sampling, preprocessing and the synthetic generator."""
import numpy as np
import pytest

from lambdaopt.data.interactions import Interactions, gini
from lambdaopt.data.preprocess import dedupe, filter_min_interactions, remap_ids
from lambdaopt.data.sampling import NegativeSampler, bpr_triples
from lambdaopt.data.splits import split_per_user
from lambdaopt.data.synthetic import generate_implicit
from lambdaopt.errors import DataError

from builders import pairs, random_log


@pytest.mark.parametrize("method", ["temporal", "random", "leave_one_out"])
def test_split_is_a_disjoint_per_user_partition(method):
    log = random_log()
    train, valid, test = split_per_user(log, 60, method, 0.2, 0.25, seed=3)
    assert len(train) + len(valid) + len(test) == len(log)
    assert pairs(train) | pairs(valid) | pairs(test) == pairs(log)
    assert not (pairs(train) & pairs(valid) or pairs(train) & pairs(test) or pairs(valid) & pairs(test))
    for part in (train, valid, test):  # every user appears in every split
        assert set(part.users.tolist()) == set(range(60))


@pytest.mark.parametrize("method", ["temporal", "leave_one_out"])
def test_temporal_split_keeps_per_user_time_order(method):
    train, valid, test = split_per_user(random_log(), 60, method)
    for user in range(60):
        t_train = train.timestamps[train.users == user]
        t_valid = valid.timestamps[valid.users == user]
        t_test = test.timestamps[test.users == user]
        assert t_train.max() <= t_valid.min() and t_valid.max() <= t_test.min()


def test_ratio_split_counts():
    log = random_log()
    train, valid, test = split_per_user(log, 60, "temporal", 0.2, 0.25)
    n = np.bincount(log.users)
    n_test = np.maximum(1, np.rint(0.2 * n))
    n_valid = np.maximum(1, np.rint(0.25 * (n - n_test)))
    assert (np.bincount(test.users) == n_test).all()
    assert (np.bincount(valid.users) == n_valid).all()
    assert abs(len(test) / len(log) - 0.2) < 0.03 and abs(len(valid) / len(log) - 0.2) < 0.03


def test_leave_one_out_counts():
    train, valid, test = split_per_user(random_log(), 60, "leave_one_out")
    assert (np.bincount(test.users) == 1).all() and (np.bincount(valid.users) == 1).all()


def test_user_too_short_to_split_is_a_clear_error():
    log = Interactions.from_arrays([0, 0, 0, 0, 1], [0, 1, 2, 3, 0], [1, 2, 3, 4, 5])
    with pytest.raises(DataError, match="min_user_interactions"):
        split_per_user(log, 2, "temporal")


@pytest.mark.parametrize("lookup", ["bitmap", "sorted"])
def test_sampler_never_returns_a_known_positive(lookup):
    log = random_log(seed=1)
    sampler = NegativeSampler(60, 80, log, lookup=lookup)
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(60), 500)
    negatives = sampler.sample(users, rng)
    known = pairs(log)
    assert not any((u, j) in known for u, j in zip(users.tolist(), negatives.tolist()))
    # uniform over the user's unknown items: every one of them is drawn for a busy user
    user0_unknown = set(range(80)) - {i for u, i in known if u == 0}
    assert set(negatives[users == 0].tolist()) == user0_unknown


def test_compiled_draws_are_numpys_draws():
    """The bitmap sampler's compiled draws (data/sampling_kernel.py, numba's Generator) give the negatives and
    the triples drawn with replacement that NumPy's rounds give, and leave the generator in the same state —
    with rounds of redraws taken, and for a generator that has drawn before."""
    log = random_log(seed=4)
    pool = Interactions.from_arrays(log.users[::3], log.items[::3])  # strided views, as a slice gives
    users = np.random.default_rng(1).integers(0, 60, 5000)
    results = []
    for compiled in (True, False):
        sampler = NegativeSampler(60, 80, log, "bitmap")
        assert sampler.kernels is not None
        if not compiled:
            sampler.kernels = None
        rng = np.random.default_rng(0)
        draws = [sampler.sample(users, rng)] + [a for size in (1, 7, 1024) for a in sampler.triples(pool, size, rng)]
        results.append((draws, rng.bit_generator.state))
    (compiled, state), (reference, reference_state) = results
    assert state == reference_state
    assert all(a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(compiled, reference))
    first = np.random.default_rng(0).integers(0, 80, len(users))
    assert sampler.is_known(users, first).sum() > 100  # rounds of redraws were taken
    known = pairs(log)
    assert not any((u, j) in known for u, j in zip(compiled[-3].tolist(), compiled[-1].tolist()))
    assert set(zip(compiled[-3].tolist(), compiled[-2].tolist())) <= set(zip(pool.users.tolist(), pool.items.tolist()))


def test_bitmap_and_sorted_lookups_agree_on_every_cell():
    log = random_log(seed=3)
    users, items = np.repeat(np.arange(61), 81), np.tile(np.arange(81), 61)  # one past each edge: bytes end there
    bitmap, keys = NegativeSampler(61, 81, log, "bitmap"), NegativeSampler(61, 81, log, "sorted")
    assert bitmap.bits is not None and keys.known_keys is not None
    known = bitmap.is_known(users, items)
    assert (known == keys.is_known(users, items)).all()
    assert set(zip(users[known].tolist(), items[known].tolist())) == pairs(log)


def test_bpr_triples_cover_each_positive_once():
    log = random_log(seed=2)
    users, positives, negatives = bpr_triples(log, NegativeSampler(60, 80, log), np.random.default_rng(0))
    assert sorted(zip(users.tolist(), positives.tolist())) == sorted(zip(log.users.tolist(), log.items.tolist()))


def test_sampler_rejects_a_user_who_saw_everything():
    log = Interactions.from_arrays([0, 0, 1], [0, 1, 0])
    with pytest.raises(DataError, match="every item"):
        NegativeSampler(2, 2, log)


def test_dedupe_keeps_earliest_and_kcore_reaches_fixed_point():
    log = Interactions.from_arrays([0, 0, 0, 1], [5, 5, 6, 5], [9, 3, 4, 1])
    deduped = dedupe(log)
    assert sorted(zip(deduped.users.tolist(), deduped.items.tolist(), deduped.timestamps.tolist())) == [
        (0, 5, 3), (0, 6, 4), (1, 5, 1)]
    # user 1 has 1 item → removed; then item 5 has 1 user → removed with k=2 iterated; single pass keeps it
    log = Interactions.from_arrays([0, 0, 1, 2, 2], [0, 1, 0, 1, 2])
    assert len(filter_min_interactions(log, 2, 2, iterative=True)) == 0
    assert len(filter_min_interactions(log, 2, 2, iterative=False)) == 2
    remapped, n_users, n_items = remap_ids(Interactions.from_arrays([10, 30], [7, 3]))
    assert (n_users, n_items) == (2, 2) and remapped.users.tolist() == [0, 1] and remapped.items.tolist() == [1, 0]


def test_synthetic_is_seeded_long_tailed_and_in_range():
    a = generate_implicit(n_users=300, n_items=200, mean_interactions=20, seed=4)
    b = generate_implicit(n_users=300, n_items=200, mean_interactions=20, seed=4)
    assert all((x == y).all() for x, y in zip(a.astuple(), b.astuple()))
    assert a.users.max() < 300 and a.items.max() < 200 and len(set(zip(a.users, a.items))) == len(a)
    per_user = np.bincount(a.users)
    assert per_user.min() >= 5 and abs(per_user.mean() - 20) < 3
    assert gini(np.bincount(a.items, minlength=200)) > 0.3  # popularity skew
    assert set(np.unique(a.ratings).tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}
