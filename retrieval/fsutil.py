"""Crash-safe file writes and a per-collection writer lock.

An index file is either the old one or the new one, never half of each: write a temp file in the same
folder, fsync it, rename it over the target (atomic on POSIX), then fsync the folder so the rename itself
survives a power cut. The lock is an `flock` on a file: the kernel drops it when the holder dies, even by
SIGKILL, so a crashed ingest never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from ember.retrieval.errors import CollectionBusyError


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` to fill a temp file beside `path`, fsync it and rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    def write(tmp: Path) -> None:
        tmp.write_bytes(data)

    atomic_write(path, write)


def remove_stale_temps(folder: Path) -> None:
    """Temp files a killed writer left behind (they were never renamed, so nothing refers to them)."""
    if folder.is_dir():
        for tmp in folder.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def writer_lock(folder: Path, what: str) -> Iterator[None]:
    """Exclusive, non-blocking: a second writer fails at once with a message instead of waiting."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CollectionBusyError(f"{what} is being written by another process",
                                      hint="Wait for the other ingest, re-embed or delete to finish.") from None
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
