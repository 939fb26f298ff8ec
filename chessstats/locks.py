"""Cross-process file locks (``fcntl.flock``): released by the kernel when the holder dies.

Used by the scheduler (one scheduler per data dir, no overlapping job runs) and by services (one
worker imports a tournament while the others wait for it). A crash never leaves a lock set.

A lock needs no disk space: the holder's pid written into the file is informational only, so a
full disk never keeps a lock from being taken, and no error path leaves a descriptor open (a lock
is held exactly while :attr:`FileLock.held` is True).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chessstats.redisconn import RedisBackend, RedisLock

log = logging.getLogger(__name__)


class FileLock:
    """A non-blocking exclusive ``flock`` on ``path``.

    Two ``FileLock`` objects on one path exclude each other even inside one process (each has
    its own open file description).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> bool:
        """Try to take the lock without waiting; True when held (already or now), False when another
        holder has it.

        The pid is then written into the file, best effort: when that fails (disk full, read-only)
        the lock is still held and True is returned.

        Raises:
            OSError: the lock file cannot be created or opened (missing permissions, read-only or
                full file system); no descriptor is left open and the lock is not held.
        """
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd  # held from here on: release() closes it whatever happens below
        try:
            pid = f"{os.getpid()}\n".encode()
            os.pwrite(fd, pid, 0)  # over the previous holder's pid: needs no new block on a full disk
            os.ftruncate(fd, len(pid))
        except OSError as exc:
            log.debug("lock %s taken, but its pid could not be written: %s", self.path, exc)
        return True

    def release(self) -> None:
        """Release the lock and close its descriptor (idempotent; never raises)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            except OSError:
                pass  # closing the descriptor below releases the lock anyway
            finally:
                os.close(fd)


@asynccontextmanager
async def hold(path: str | Path, *, timeout_s: float, poll_s: float = 0.02) -> AsyncIterator[bool]:
    """Hold the lock at ``path`` for the block, waiting (without blocking the event loop) up to
    ``timeout_s`` seconds for another process to release it.

    Yields True when the lock is held, False when the wait timed out or the lock file cannot be
    created (disk full, read-only): the block then runs unlocked, since a lock is an optimisation
    here, never a reason to fail a request. The lock is always released after the block.
    """
    lock = FileLock(path)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if lock.acquire():
                break
        except OSError as exc:
            log.warning("lock %s unavailable (%s): running without it", path, exc)
            break
        if time.monotonic() >= deadline:
            break
        await asyncio.sleep(poll_s)
    try:
        yield lock.held
    finally:
        lock.release()


class SharedLock:
    """A non-blocking ``flock`` on ``path`` taken shared (many holders) or exclusive (one holder, no
    shared ones): every process that uses a data dir holds ``server.lock`` shared; a restore takes it
    exclusive, so it sees whether any process uses the data dir and keeps new ones out meanwhile."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self, *, exclusive: bool = False) -> bool:
        """Try to take the lock without waiting; True when held, False when a conflicting holder has it.

        Raises:
            OSError: the lock file cannot be created or opened (no descriptor is left open).
        """
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    def release(self) -> None:
        """Release the lock (idempotent; never raises)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the only descriptor of this open file description releases the flock


class Locks:
    """Named cross-process locks of one deployment: ``flock`` files in ``directory`` (one host), or,
    with a Redis ``backend`` (``[cache] url``), leased locks in Redis shared by every host.

    Both kinds have the interface of :class:`FileLock` (``acquire()`` without waiting, ``release()``,
    ``held``); ``acquire`` raises :class:`OSError` when the lock cannot be asked for at all (a lock
    file that cannot be created, Redis down), and callers then run unlocked or skip, as they choose.
    """

    def __init__(self, directory: str | Path, backend: RedisBackend | None = None) -> None:
        self.directory = Path(directory)
        self.backend = backend

    @property
    def shared(self) -> bool:
        """Whether the locks hold across hosts (Redis), not only across the processes of one data dir."""
        return self.backend is not None

    def lock(self, name: str) -> FileLock | RedisLock:
        """The lock ``name`` (``fetch-007``, ``import-03``, ``job-cleanup``): ``<directory>/<name>.lock``
        or the Redis key ``<prefix>lock:<name>``."""
        if self.backend is not None:
            return self.backend.lock(name)
        return FileLock(self.directory / f"{name}.lock")


def as_locks(locks: Locks | str | Path) -> Locks:
    """``locks`` itself, or flock files in the directory ``locks``."""
    return locks if isinstance(locks, Locks) else Locks(locks)
