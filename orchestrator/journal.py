"""The sweep's Optuna journal file, robust to a driver killed while it held the journal's lock.

Optuna's default file lock is a bare symlink: after a `kill -9` at the wrong moment it stays, and
the next process waits out a 30 s grace period (with warnings) before breaking it. Our lock is an
exclusive file naming its holder (``host pid``), so a lock whose holder is gone from this host is
broken at once; a lock of another host (a shared file system) or of an unknown holder (Optuna's
own symlink) is broken after its grace period, as Optuna would. Both use the same lock path, so
medsweep and plain Optuna processes still exclude each other. An entry a killed writer left half
written at the end of the file is cut off before the journal is used (it was never acknowledged).
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid
from pathlib import Path

from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

LOCK_SUFFIX = ".lock"  # Optuna's own, so both kinds of lock exclude each other


class HolderFileLock(JournalFileOpenLock):
    """An exclusive lock file holding ``host pid``; stale locks are broken (see module doc)."""

    def __init__(self, journal: str, grace_period: int = 30) -> None:
        super().__init__(journal, grace_period)
        self._lock_file = journal + LOCK_SUFFIX
        self.grace_period: int = grace_period

    def acquire(self) -> bool:
        delay = 0.001
        while True:
            try:
                fd = os.open(self._lock_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if self.stale():
                    self._break()
                    continue
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(f"{socket.gethostname()} {os.getpid()}\n")
            return True

    def release(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._lock_file)

    def stale(self) -> bool:
        """True when the lock's holder is a dead process of this host, or the lock is older than
        the grace period (an unknown holder or one on another host)."""
        try:
            info = os.lstat(self._lock_file)
        except FileNotFoundError:
            return False
        holder = _holder(Path(self._lock_file))
        if holder is not None and holder[0] == socket.gethostname():
            return not _alive(holder[1])
        return time.time() - info.st_mtime > self.grace_period

    def _break(self) -> None:
        """Remove a stale lock; renaming first means two breakers cannot both remove a new one."""
        aside = f"{self._lock_file}.{uuid.uuid4().hex}.stale"
        with contextlib.suppress(FileNotFoundError):
            os.rename(self._lock_file, aside)
            os.unlink(aside)


def _holder(lock: Path) -> tuple[str, int] | None:
    if lock.is_symlink():
        return None
    try:
        host, pid = lock.read_text().split()
        return host, int(pid)
    except (OSError, ValueError):
        return None  # being written, or not ours


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def open_backend(path: Path) -> JournalFileBackend:
    """The journal backend of a sweep: stale lock broken, a half-written last entry cut off."""
    lock = HolderFileLock(str(path))
    backend = JournalFileBackend(str(path), lock_obj=lock)
    lock.acquire()
    try:
        _cut_partial_entry(path)
    finally:
        lock.release()
    return backend


def _cut_partial_entry(path: Path) -> None:
    """Entries end with a newline; a tail without one was never completed."""
    with path.open("rb+") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size == 0:
            return
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return
        step, end = 4096, size
        while end > 0:  # find the last newline, reading backwards
            start = max(0, end - step)
            fh.seek(start)
            chunk = fh.read(end - start)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                fh.truncate(start + cut + 1)
                return
            end = start
        fh.truncate(0)
