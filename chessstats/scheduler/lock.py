"""Process-lifetime file locks (``fcntl.flock``): released by the kernel when the process dies.

* ``<data dir>/scheduler.lock``: whoever holds it is the one scheduler of the data dir.
* ``<data dir>/locks/job-<name>.lock``: held while a job runs (scheduler or ``jobs run``), so
  two runs of one job never overlap, even across processes; a run found ``active`` whose lock
  is free belongs to a dead process.

A crash never leaves a lock set: there is no flag to clear. The lock file holds the holder's
pid (informational only).
"""

from __future__ import annotations

from pathlib import Path

from chessstats.locks import FileLock
from chessstats.resources import DataDir

__all__ = ["FileLock", "job_lock", "scheduler_lock"]


def scheduler_lock(data_dir: Path) -> FileLock:
    """The scheduler lock of a data dir (its path comes from :class:`~chessstats.resources.DataDir`)."""
    return FileLock(DataDir(data_dir).scheduler_lock)


def job_lock(data_dir: Path, job: str) -> FileLock:
    """The run lock of one job."""
    return FileLock(DataDir(data_dir).job_lock(job))
