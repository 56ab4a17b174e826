"""Temporary files and directories in the cache, and the clean-up of those a killed process left.

Everything written into the cache goes first to a hidden sibling whose name carries the writer's
pid and host (`.tmp-ml-100k-ab12.4711@node1.x8k2`), then is renamed into place. A process killed
with SIGKILL leaves that sibling behind; the next writer removes it once its owner is gone: same
host and no such pid, or (another host sharing the cache, or a name without an owner) older than
`MAX_AGE` seconds. A live writer's temporaries are never touched.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import time
from pathlib import Path

log = logging.getLogger(__name__)

MAX_AGE = 24 * 3600
_OWNER = re.compile(r"\.(\d+)@([A-Za-z0-9-]+)\.")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname().split(".")[0]) or "host"


def owner_tag() -> str:
    """`.PID@HOST.`: put it in every temporary name so that `remove_stale` can tell whose it is."""
    return f".{os.getpid()}@{_host()}."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def is_stale(path: Path, now: float | None = None) -> bool:
    match = _OWNER.search(path.name)
    if match and match.group(2) == _host():
        return not _alive(int(match.group(1)))
    try:
        return (now or time.time()) - path.lstat().st_mtime > MAX_AGE
    except OSError:
        return False


def remove_stale(directory: Path, prefixes: tuple[str, ...]) -> None:
    """Delete the temporaries (names starting with one of `prefixes`) in `directory` whose writer is gone."""
    try:
        entries = list(directory.iterdir())
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith(prefixes) and is_stale(entry):
            log.info("removing %s, left by a process that no longer runs", entry)
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                try:
                    entry.unlink()
                except OSError:
                    pass
