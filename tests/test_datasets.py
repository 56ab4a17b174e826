"""Real-dataset loaders on small fixture files in each published format: parsing, preprocessing,
configs, and one clear error per kind of bad input (cache and fetching: test_data_cache_fetch.py)."""
import gzip
import logging
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from lambdaopt.config import validate
from lambdaopt.data.formats import (read_amazon_food, read_amazon_reviews_csv, read_amazon_snap,
                                    read_movielens_100k, read_movielens_dat, read_widedeep_parquet)
from lambdaopt.data.real import load_dataset
from lambdaopt.errors import ConfigError, DataError

from conftest import compose_config, one_error_line, run_in_process
from builders import SPLIT, nothing_cached, one_line_error, ratings_rows, write_u_data


def write_ratings_dat(path, rows):
    path.write_text("".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in rows))
    return path


KAGGLE_HEADER = "Id,ProductId,UserId,ProfileName,HelpfulnessNumerator,HelpfulnessDenominator,Score,Time,Summary,Text\n"


def write_reviews_csv(path, rows):
    """Kaggle Reviews.csv: quoted fields with commas, quotes and newlines in the free text."""
    lines = [KAGGLE_HEADER]
    for n, (u, i, r, t) in enumerate(rows, 1):
        lines.append(f'{n},B{i:09d},A{u:05d}X,"Name, {u}",1,2,{r},{t},"Sum ""{n}""","line one,\nline two"\n')
    path.write_text("".join(lines))
    return path


def snap_text(rows):
    return "".join(f"product/productId: B{i:09d}\nreview/userId: A{u:05d}X\nreview/profileName: Name: {u}\n"
                   f"review/helpfulness: 1/2\nreview/score: {r}.0\nreview/time: {t}\n"
                   f"review/summary: Good: {i}\nreview/text: Text with: colons\n\n" for u, i, r, t in rows)


def expected_frame(rows):
    return pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"])


# ----------------------------------------------------------------------------- parsing


def test_movielens_formats_parse_exactly(tmp_path):
    rows = ratings_rows()
    for frame in (read_movielens_100k(write_u_data(tmp_path / "u.data", rows)),
                  read_movielens_dat(write_ratings_dat(tmp_path / "ratings.dat", rows))):
        assert list(frame.dtypes.astype(str)) == ["int64", "int64", "float32", "int64"]
        pd.testing.assert_frame_equal(frame, expected_frame(rows), check_dtype=False)


def test_ml10m_half_star_ratings(tmp_path):
    path = tmp_path / "ratings.dat"
    path.write_text("1::122::4.5::838985046\n1::185::0.5::838983525\n")
    assert read_movielens_dat(path)["rating"].tolist() == [4.5, 0.5]


def test_amazon_formats_agree(tmp_path):
    rows = ratings_rows()
    csv = read_amazon_reviews_csv(write_reviews_csv(tmp_path / "Reviews.csv", rows))
    (tmp_path / "finefoods.txt").write_text(snap_text(rows))
    with gzip.open(tmp_path / "finefoods.txt.gz", "wt") as handle:
        handle.write(snap_text(rows))
    snap, snap_gz = read_amazon_snap(tmp_path / "finefoods.txt"), read_amazon_food(tmp_path / "finefoods.txt.gz")
    pd.testing.assert_frame_equal(csv, snap)
    pd.testing.assert_frame_equal(csv, snap_gz)
    assert len(csv) == len(rows) and csv["user"].nunique() == 12 and csv["item"].nunique() == len({r[1] for r in rows})
    assert (csv["rating"].to_numpy() == [r[2] for r in rows]).all()


def test_widedeep_parquet_columns(tmp_path):
    rows = ratings_rows()
    frame = pd.DataFrame(rows, columns=["user_id", "movie_id", "rating", "timestamp"])
    frame.to_parquet(tmp_path / "ml.parquet", compression="brotli")
    pd.testing.assert_frame_equal(read_widedeep_parquet(tmp_path / "ml.parquet"), expected_frame(rows),
                                  check_dtype=False)


# ----------------------------------------------------------------------------- preprocessing


def test_feedback_modes_and_threshold(tmp_path):
    rows = ratings_rows(per_user=10)
    path = write_u_data(tmp_path / "u.data", rows)
    implicit = load_dataset("ml-100k", path=str(path), cache_dir=str(tmp_path / "c"), split=SPLIT)
    explicit = load_dataset("ml-100k", path=str(path), cache_dir=str(tmp_path / "c"), feedback="explicit", split=SPLIT)
    assert all((part.ratings == 1).all() for part in (implicit.train, implicit.valid, implicit.test))
    explicit_all = np.concatenate([explicit.train.ratings, explicit.valid.ratings, explicit.test.ratings])
    assert sorted(explicit_all.tolist()) == sorted(float(r[2]) for r in rows)
    assert implicit.statistics()["n_interactions"] == len(rows)
    thresholded = load_dataset("ml-100k", path=str(path), cache_dir=str(tmp_path / "c"), implicit_threshold=3,
                               min_user_interactions=0, split=SimpleNamespace(method="leave_one_out",
                                                                              test_ratio=0.2, valid_ratio=0.25))
    assert thresholded.statistics()["n_interactions"] == sum(r[2] >= 3 for r in rows)
    with pytest.raises(ConfigError, match="implicit_threshold"):
        load_dataset("ml-100k", path=str(path), feedback="explicit", implicit_threshold=4, split=SPLIT)


def test_single_pass_versus_iterative_filter(tmp_path):
    # items 1..3 rated by users 1..3 (3 each); user 4 rates items 1 and 9; item 9 also rated by user 5.
    rows = [(u, i, 5, 10 * u + i) for u in (1, 2, 3) for i in (1, 2, 3)] + [(4, 1, 5, 1), (4, 9, 5, 2), (5, 9, 5, 3)]
    path = write_u_data(tmp_path / "u.data", rows)
    common = dict(path=str(path), cache_dir=str(tmp_path / "c"), min_user_interactions=2, min_item_interactions=2,
                  split=SimpleNamespace(method="leave_one_out", test_ratio=0.2, valid_ratio=0.25))
    # The single pass drops user 5 (1 item), keeping item 9 with one user left; the k-core then drops it
    # and user 4 with it. Users need ≥ 3 interactions to split, so check the filter through its counts.
    with pytest.raises(DataError, match="min_user_interactions"):
        load_dataset("ml-100k", iterative_filter=False, **common)
    dataset = load_dataset("ml-100k", iterative_filter=True, **common)
    assert (dataset.n_users, dataset.n_items) == (3, 3)


def test_split_is_deterministic_and_temporal(tmp_path):
    path = write_u_data(tmp_path / "u.data", ratings_rows(per_user=10))
    a = load_dataset("ml-100k", path=str(path), cache_dir=str(tmp_path / "a"), split=SPLIT)
    b = load_dataset("ml-100k", path=str(path), cache_dir=str(tmp_path / "b"), split=SPLIT)
    assert a.fingerprint == b.fingerprint
    for user in range(a.n_users):
        assert a.train.timestamps[a.train.users == user].max() <= a.test.timestamps[a.test.users == user].min()


# ----------------------------------------------------------------------------- bad input


BAD_U_DATA = {
    "empty": ("", ["is empty"]),
    "wrong separator": ("1,2,3,4\n5,6,7,8\n", ["line 1", "wrong separator", "tab-separated"]),
    "too few fields": ("1\t2\t3\t4\n1\t3\t3\t5\n2\t3\t4\n", ["line 3", "3 fields instead of 4"]),
    "too many fields": ("1\t2\t3\t4\n1\t3\t3\t5\t6\n", ["line 2", "5 fields instead of 4"]),
    "non-numeric id": ("1\t2\t3\t4\n1\tx7\t3\t5\n", ["line 2", "item 'x7' is not an integer"]),
    "non-numeric rating": ("1\t2\t3\t4\n1\t3\t3\t5\n1\t4\tgood\t6\n", ["line 3", "rating 'good' is not a number"]),
    "fractional id": ("1\t2.5\t3\t4\n", ["line 1", "item '2.5' is not an integer"]),
    "NaN timestamp": ("1\t2\t3\t4\n1\t3\t3\tnan\n", ["line 2", "timestamp is missing or NaN"]),
    "empty timestamp": ("1\t2\t3\t4\n1\t3\t3\t\n", ["line 2", "timestamp is missing or NaN"]),
}


BAD_DAT = {
    "wrong separator": ("1\t2\t3\t4\n", ["line 1", "wrong separator", "::"]),
    "too few fields": ("1::2::3::4\n1::2::3\n", ["line 2", "3 fields instead of 4"]),
    "non-numeric user": ("1::2::3::4\nu9::2::3::4\n", ["line 2", "user 'u9'"]),
    "NaN timestamp": ("1::2::3::4\n2::2::3::NaN\n", ["line 2", "timestamp is missing or NaN"]),
}


BAD_FILES = [("ml-100k", "u.data", case, *BAD_U_DATA[case]) for case in sorted(BAD_U_DATA)] + [
    ("ml-1m", "ratings.dat", case, *BAD_DAT[case]) for case in sorted(BAD_DAT)]


@pytest.mark.parametrize("dataset,filename,case,text,needles", BAD_FILES,
                         ids=[f"{d}-{c}" for d, _, c, _, _ in BAD_FILES])
def test_bad_rating_file_is_one_line_naming_file_and_line(tmp_path, dataset, filename, case, text, needles):
    path = tmp_path / filename
    path.write_text(text)
    with pytest.raises(DataError) as error:
        load_dataset(dataset, path=str(path), cache_dir=str(tmp_path / "c"), split=SPLIT)
    one_line_error(error, str(path), *needles)
    assert nothing_cached(tmp_path / "c")


def test_bad_amazon_files(tmp_path):
    rows = ratings_rows(n_users=3, per_user=2)
    csv = tmp_path / "Reviews.csv"
    write_reviews_csv(csv, rows)
    csv.write_text(csv.read_text().replace(f",{rows[2][3]},", ",soon,"))
    with pytest.raises(DataError) as error:
        read_amazon_food(csv)
    one_line_error(error, str(csv), "record 3", "Time 'soon' is not an integer")
    csv.write_text(KAGGLE_HEADER.replace("UserId", "User") + "1,B1,A1,n,1,1,5,1,s,t\n")
    with pytest.raises(DataError) as error:
        read_amazon_food(csv)
    one_line_error(error, "line 1", "no UserId column")
    snap = tmp_path / "finefoods.txt"
    snap.write_text(snap_text(rows[:1]) + snap_text(rows[1:2]).replace("review/helpfulness: 1/2\n", "", 1)
                    + snap_text(rows[2:]))
    with pytest.raises(DataError) as error:
        read_amazon_food(snap)
    one_line_error(error, f"{snap} line 10", "incomplete record")
    snap.write_text(snap_text(rows[:1]) + snap_text(rows[1:2]).replace(f"review/score: {rows[1][2]}.0", "review/score: five"))
    with pytest.raises(DataError) as error:
        read_amazon_food(snap)
    one_line_error(error, f"{snap} line 10", "review/score")
    snap.write_text("hello\n")
    with pytest.raises(DataError, match="neither a Reviews.csv header nor a SNAP record"):
        read_amazon_food(snap)


def test_data_cli_info_and_error(tmp_path, capsys):
    from lambdaopt.data.__main__ import main

    path = write_u_data(tmp_path / "u.data", ratings_rows(per_user=10))
    assert main(["info", "ml-100k", "--path", str(path), "--cache-dir", str(tmp_path / "c")]) == 0
    assert "n_users  12" in capsys.readouterr().out
    path.write_text("1\t2\n")
    assert main(["info", "ml-100k", "--path", str(path), "--cache-dir", str(tmp_path / "c2")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith(f"error: {path} line 1")


def test_missing_file(tmp_path):
    with pytest.raises(DataError) as error:
        load_dataset("ml-1m", path=str(tmp_path / "nowhere" / "ratings.dat"), split=SPLIT)
    one_line_error(error, str(tmp_path / "nowhere" / "ratings.dat"), "file not found", "ml-1m.zip")


def test_duplicates_are_dropped_with_a_warning(tmp_path, caplog):
    rows = ratings_rows(per_user=10)
    path = write_u_data(tmp_path / "u.data", rows + rows[:4])
    with caplog.at_level(logging.WARNING):
        dataset = load_dataset("ml-100k", path=str(path), cache_dir=str(tmp_path / "c"), split=SPLIT)
    assert dataset.statistics()["n_interactions"] == len(rows)
    assert any("dropped 4 duplicate" in record.getMessage() for record in caplog.records)


def test_dedupe_keeps_the_earliest_then_the_first_in_the_file(tmp_path):
    rows = [(1, 1, 5, 20), (1, 1, 4, 10), (1, 1, 3, 10), (1, 2, 2, 30), (1, 3, 1, 40), (1, 4, 1, 50)]
    path = write_u_data(tmp_path / "u.data", rows)
    dataset = load_dataset("ml-100k", path=str(path), cache_dir=str(tmp_path / "c"), feedback="explicit",
                           split=SimpleNamespace(method="leave_one_out", test_ratio=0.2, valid_ratio=0.25))
    assert dataset.train.ratings.tolist() == [4.0, 2.0]  # (1, 1) at t=10, first of the two in the file


def test_filter_that_leaves_no_users(tmp_path):
    path = write_u_data(tmp_path / "u.data", ratings_rows(per_user=10))
    with pytest.raises(DataError) as error:
        load_dataset("ml-100k", path=str(path), cache_dir=str(tmp_path / "c"), min_user_interactions=50,
                     split=SPLIT)
    one_line_error(error, "no interactions left", "dataset.min_user_interactions")
    assert nothing_cached(tmp_path / "c")


# ----------------------------------------------------------------------------- config and entry point


@pytest.mark.parametrize("name", ["ml-100k", "ml-1m", "ml-10m", "amazon-food"])
def test_dataset_configs_compose(name):
    cfg = compose_config([f"dataset={name}"])
    validate(cfg)
    assert cfg.dataset.name == name and cfg.dataset.implicit_threshold is None
    assert (cfg.dataset.min_user_interactions, cfg.dataset.min_item_interactions) == (
        (20, 20) if name == "amazon-food" else (3, 0))


@pytest.mark.parametrize("override,key", [
    ("dataset.implicit_threshold=-1", "dataset.implicit_threshold"),
    ("dataset.feedback=stars", "dataset.feedback"),
    ("dataset.min_item_interactions=-2", "dataset.min_item_interactions"),
])
def test_bad_dataset_options_name_the_key(override, key):
    cfg = compose_config(["dataset=ml-1m", override])
    with pytest.raises(ConfigError) as error:
        validate(cfg)
    assert str(error.value).startswith(key)


@pytest.mark.slow
@pytest.mark.parametrize("content,needle", [
    (None, "file not found"),
    ("1\t2\t3\t4\n1\t3\n", "line 2: 2 fields instead of 4"),
])
def test_run_py_prints_one_error_line_and_exits_2(tmp_path, content, needle):
    path = tmp_path / "u.data"
    if content is not None:
        path.write_text(content)
    result = run_in_process("run.py", ["dataset=ml-100k", f"dataset.path={path}",
                                       f"dataset.cache_dir={tmp_path / 'c'}", "tracking.enabled=false"], tmp_path, {})
    assert str(path) in one_error_line(result, needle) and nothing_cached(tmp_path / "c")
