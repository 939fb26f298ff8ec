"""Cross-process file locks (``fcntl.flock``): released by the kernel when the holder dies.

Used by the scheduler (one scheduler per data dir, no overlapping job runs) and by services (one
worker imports a tournament while the others wait for it). A crash never leaves a lock set.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path


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
        """Try to take the lock without waiting; True when held (already or now)."""
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except OSError:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        """Release the lock (idempotent)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)


@asynccontextmanager
async def hold(path: str | Path, *, timeout_s: float, poll_s: float = 0.02) -> AsyncIterator[bool]:
    """Hold the lock at ``path`` for the block, waiting (without blocking the event loop) up to
    ``timeout_s`` seconds for another process to release it.

    Yields True when the lock is held, False when the wait timed out (the block then runs
    unlocked: a lock is an optimisation here, never a reason to fail a request).
    """
    lock = FileLock(path)
    deadline = time.monotonic() + timeout_s
    while not lock.acquire():
        if time.monotonic() >= deadline:
            break
        await asyncio.sleep(poll_s)
    try:
        yield lock.held
    finally:
        lock.release()
