"""Reaching the MLflow tracking store before any data work: checks that fail in one line, and a lock
around creating the store.

- **Creation under a lock.** MLflow's tracking store creates and migrates an empty SQLite file on first
  use without a lock (3.17 locks only its jobs/workspace stores), so two runs started together in a
  fresh directory both run the migrations and can leave the file half-migrated for good. Every process
  opens the store under one exclusive `flock` per store URI (a file in the temp directory, the way MLflow
  locks its other stores), so exactly one creates it and the others find it complete.
- **Dead servers fail fast.** MLflow's client retries a refused connection for minutes; `/health` is
  asked first with a short timeout.
- **Paths.** A SQLite file in a directory that does not exist is refused (never created silently), and
  an unwritable database directory or artifact location is named with the key to change.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote, urlparse

from lambdaopt.console import route_mlflow_logs
from lambdaopt.errors import ConfigError
from lambdaopt.tracking import is_server, store_uri

HEALTH_TIMEOUT_S = 5.0
SQLITE = "sqlite:///"


@contextlib.contextmanager
def creation_lock(uri: str) -> Iterator[None]:
    """Hold an exclusive inter-process lock for `uri` (no-op where fcntl does not exist)."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock
        yield
        return
    digest = hashlib.sha256(uri.encode()).hexdigest()[:16]
    # The empty lock file stays: removing it after unlocking would let a process that opened the old file
    # and one that creates a new one both hold "the" lock (MLflow leaves its db_init_lock files the same way).
    path = Path(tempfile.gettempdir()) / f"lambdaopt-store-{digest}.lock"
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def check_server(uri: str, timeout: float = HEALTH_TIMEOUT_S) -> None:
    """ConfigError unless an MLflow server answers `uri`/health within `timeout` seconds."""
    health = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(health, timeout=timeout) as response:
            if response.status == 200:
                return
            reason = f"HTTP {response.status}"
    except urllib.error.HTTPError as error:
        reason = f"HTTP {error.code} from {health}"
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = str(getattr(error, "reason", error))
    raise ConfigError(f"tracking.uri={uri}: no MLflow server answers there ({reason}); start it "
                      "(mlflow server --host HOST --port PORT), or log locally with tracking.uri=sqlite:///mlflow.db, "
                      "or set tracking.enabled=false")


def check_sqlite(uri: str) -> None:
    """ConfigError unless the SQLite file of `uri` can be created or written where it is."""
    path = Path(uri[len(SQLITE):])
    folder = path.parent
    if not folder.is_dir():
        what = "is not a directory" if folder.exists() else "does not exist"
        raise ConfigError(f"tracking.uri={uri}: the folder {folder} {what}; create it (mkdir -p {folder}) or "
                          "point tracking.uri at a file in an existing folder")
    if path.exists() and not path.is_file():
        raise ConfigError(f"tracking.uri={uri}: {path} is not a file; point tracking.uri at a SQLite file")
    # SQLite writes a journal beside the database, so the folder must be writable too
    for target in (folder, path) if path.exists() else (folder,):
        if not os.access(target, os.W_OK):
            raise ConfigError(f"tracking.uri={uri}: no permission to write {target}; make it writable or point "
                              "tracking.uri at a writable place (e.g. sqlite:///$HOME/mlflow.db)")


def local_artifact_dir(location: str | None) -> Path | None:
    """The local folder behind an artifact location (a plain path or `file://` URI); None for a remote
    store: any other scheme, e.g. a server's proxied `mlflow-artifacts:/1`, which as a path would be a
    folder named `mlflow-artifacts:` in the working directory."""
    if not location:
        return None
    parsed = urlparse(location)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):  # C:\... is a path
        return Path(location)
    return None


def check_artifact_dir(folder: Path, key: str) -> None:
    """ConfigError unless `folder` exists or can be created, and is writable."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"{key}: cannot create the artifact folder {folder} ({error.strerror or error}); "
                          "set tracking.artifact_location to a writable folder") from None
    if not os.access(folder, os.W_OK):
        raise ConfigError(f"{key}: no permission to write the artifact folder {folder}; set "
                          "tracking.artifact_location to a writable folder")


def _store_failure(uri: str, error: Exception) -> ConfigError:
    first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
    advice = (f"if a crash left it half-created, move {uri[len(SQLITE):]} aside (or run `mlflow db upgrade {uri}`)"
              if uri.startswith(SQLITE) else "check the server and the database behind it")
    return ConfigError(f"tracking.uri={uri}: the tracking store cannot be opened ({type(error).__name__}: {first}); "
                       f"{advice}")


def check_store(uri: str):
    """Check `uri` (server alive, SQLite path usable), create the store if it is new (under the lock);
    return an MlflowClient on it. Every failure is a one-line ConfigError naming the URI or path."""
    from mlflow.tracking import MlflowClient

    route_mlflow_logs()  # "Creating initial MLflow database tables..." in the job's log format and file
    uri = store_uri(uri)
    if is_server(uri):
        check_server(uri)
    elif uri.startswith(SQLITE):
        check_sqlite(uri)
    try:
        with creation_lock(uri):
            client = MlflowClient(tracking_uri=uri)
            client.search_experiments(max_results=1)  # opens (creates, migrates) the store
        return client
    except Exception as error:  # MLflow, SQLAlchemy and alembic errors: the store itself is unusable
        raise _store_failure(uri, error) from None


def open_store(uri: str, experiment: str, artifact_location: str) -> str:
    """`check_store`, then `open_experiment`: the id of experiment `experiment` at `uri`."""
    return open_experiment(check_store(uri), experiment, artifact_location)


def open_experiment(client, experiment: str, artifact_location: str) -> str:
    """Experiment `experiment` in the store `check_store` returned `client` for: created if missing, its
    artifact folder checked; its id."""
    from lambdaopt.tracking import EXPERIMENT_KIND, experiment_id

    try:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            if not is_server(client.tracking_uri) and (folder := local_artifact_dir(artifact_location)) is not None:
                check_artifact_dir(folder.resolve(), f"tracking.artifact_location={artifact_location}")
            return experiment_id(client, experiment, artifact_location)
        if EXPERIMENT_KIND not in found.tags:  # created before the kind was set: open it in the runs view too
            client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND, "custom_model_development")
        if (folder := local_artifact_dir(found.artifact_location)) is not None:
            check_artifact_dir(folder, f"experiment '{experiment}' keeps its artifacts in {folder}; use another "
                                       "tracking.experiment, or fix that folder")
        return found.experiment_id
    except ConfigError:
        raise
    except Exception as error:
        raise _store_failure(client.tracking_uri, error) from None
