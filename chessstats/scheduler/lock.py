"""Process-lifetime file locks (``fcntl.flock``): released by the kernel when the process dies.

* ``<data dir>/scheduler.lock``: whoever holds it is the one scheduler of the data dir.
* ``<data dir>/locks/job-<name>.lock``: held while a job runs (scheduler or ``jobs run``), so
  two runs of one job never overlap, even across processes; a run found ``active`` whose lock
  is free belongs to a dead process.

A crash never leaves a lock set: there is no flag to clear. The lock file holds the holder's
pid (informational only).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

SCHEDULER_LOCK = "scheduler.lock"


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


def scheduler_lock(data_dir: Path) -> FileLock:
    """The scheduler lock of a data dir."""
    return FileLock(data_dir / SCHEDULER_LOCK)


def job_lock(data_dir: Path, job: str) -> FileLock:
    """The run lock of one job."""
    return FileLock(data_dir / "locks" / f"job-{job}.lock")
