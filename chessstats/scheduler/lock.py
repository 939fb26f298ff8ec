"""Process-lifetime locks of the scheduler: ``flock`` files in the data dir, or leased locks in Redis.

* ``<data dir>/scheduler.lock`` (Redis: ``<prefix>lock:scheduler``): whoever holds it is the one
  scheduler of the data dir (with Redis: of every host sharing it).
* ``<data dir>/locks/job-<name>.lock`` (Redis: ``<prefix>lock:job-<name>``): held while a job runs
  (scheduler or ``jobs run``), so two runs of one job never overlap, even across processes; a run
  found ``active`` whose lock is free belongs to a dead process.

A crash never leaves a lock set: the kernel releases a dead process's ``flock``; a Redis lease is
no longer extended and runs out after ``[cache] lock_lease_s`` seconds. A lock file holds the
holder's pid, a Redis lock ``host:pid:token`` (informational only).
"""

from __future__ import annotations

from pathlib import Path

from chessstats.locks import FileLock, Locks
from chessstats.redisconn import RedisLock
from chessstats.resources import DataDir

__all__ = ["FileLock", "job_lock", "scheduler_lock"]


def scheduler_lock(data_dir: Path, locks: Locks | None = None) -> FileLock | RedisLock:
    """The scheduler lock of a data dir (its path comes from :class:`~chessstats.resources.DataDir`),
    or the Redis one when ``locks`` are shared across hosts."""
    if locks is not None and locks.shared:
        return locks.lock("scheduler")
    return FileLock(DataDir(data_dir).scheduler_lock)


def job_lock(data_dir: Path, job: str, locks: Locks | None = None) -> FileLock | RedisLock:
    """The run lock of one job (in ``locks`` when given)."""
    if locks is not None and locks.shared:
        return locks.lock(f"job-{job}")
    return FileLock(DataDir(data_dir).job_lock(job))
