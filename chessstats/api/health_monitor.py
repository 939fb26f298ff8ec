"""The slow parts of ``/health``, kept off the request path.

* :class:`HealthMonitor` runs ``PRAGMA quick_check`` of the database every
  ``[storage] quick_check_interval_s`` (10 minutes; the first at start) on its own read-only
  connection in a thread, and keeps the result: ``/health`` reads it and never waits for a check.
* :func:`fs_write_probe` creates and removes one tiny file in the data dir (at most every
  :data:`FS_PROBE_INTERVAL_S`): a read-only or full file system shows even when the database's own
  files are still open for writing.
* :meth:`HealthMonitor.maybe_probe_upstream`: an upstream whose last outcome was a failure more than
  :data:`UPSTREAM_PROBE_INTERVAL_S` ago gets one probe request through its gate (so it honours a
  429 pause and the breaker), at most one per upstream per minute across the worker processes (a
  stamp file per upstream in ``<data dir>/locks``, claimed under a lock); never awaited by the
  request. A healthy or never-used upstream is not probed: a health poller spends no upstream budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chessstats.locks import FileLock

log = logging.getLogger(__name__)

#: At most one file-system write probe per this many seconds (per process).
FS_PROBE_INTERVAL_S = 10.0
#: At most one probe per upstream per this many seconds (per process), and only when its last
#: outcome (in any process) is at least this old and was a failure.
UPSTREAM_PROBE_INTERVAL_S = 60.0
#: Seconds between two samples of the upstream gates' counters (for the status page's last hour).
SAMPLE_INTERVAL_S = 60.0
#: The window of :meth:`HealthMonitor.upstream_window` (seconds).
WINDOW_S = 3600.0
#: Problems of a failed quick_check kept for ``/health``.
MAX_PROBLEMS = 5

_FS_REASONS = {errno.EROFS: "read-only", errno.EACCES: "read-only", errno.EPERM: "read-only",
               errno.ENOSPC: "disk full", errno.EDQUOT: "disk full", errno.EIO: "I/O error"}


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def quick_check(path: Path, busy_timeout_ms: int = 5000) -> dict[str, Any]:
    """``PRAGMA quick_check`` of the database at ``path`` on a new read-only connection (blocking).

    Returns ``{"status": "ok"|"corrupt"|"unavailable", "checkedAt", "durationMs", "problems"?, "error"?}``:
    ``corrupt`` when the check lists problems or SQLite says the file is malformed, ``unavailable``
    when the check could not run (file missing, locked, unreadable). Never raises.
    """
    started = time.perf_counter()
    result: dict[str, Any] = {"checkedAt": _iso(time.time())}
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            rows = [str(r[0]) for r in conn.execute(f"PRAGMA quick_check({MAX_PROBLEMS})").fetchall()]
        finally:
            conn.close()
        if rows == ["ok"]:
            result["status"] = "ok"
        else:
            result["status"], result["problems"] = "corrupt", rows[:MAX_PROBLEMS]
    except sqlite3.OperationalError as exc:  # cannot open, locked, I/O: not a verdict on the pages
        result["status"], result["error"] = "unavailable", str(exc)
    except sqlite3.DatabaseError as exc:  # "database disk image is malformed", "file is not a database"
        result["status"], result["problems"] = "corrupt", [str(exc)]
    result["durationMs"] = round((time.perf_counter() - started) * 1000, 1)
    return result


def fs_write_probe(directory: Path) -> str | None:
    """Create, write and remove one tiny file in ``directory``; None when that worked, else the reason
    (``read-only``, ``disk full``, ``I/O error``, or the OS's message). Never raises."""
    path = directory / f".write-probe-{os.getpid()}"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"1")
        finally:
            os.close(fd)
        os.unlink(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            path.unlink()
        return _FS_REASONS.get(exc.errno or 0, exc.strerror or str(exc))
    return None


class HealthMonitor:
    """One per server process: the background quick_check, the file-system probe, the upstream probes.

    Args:
        db_path: the database file (None: the store is on PostgreSQL; no quick_check).
        data_dir: the data dir (the write probe's folder).
        interval_s: seconds between two quick_checks.
        busy_timeout_ms: the check connection's busy timeout.
    """

    def __init__(self, db_path: Path | None, data_dir: Path, *, interval_s: float = 600.0,
                 busy_timeout_ms: int = 5000, stamp_dir: Path | None = None) -> None:
        self.stamp_dir = stamp_dir
        self.db_path = db_path
        self.data_dir = data_dir
        self.interval_s = interval_s
        self.busy_timeout_ms = busy_timeout_ms
        self.started_at = time.time()
        self.quick: dict[str, Any] = {"status": "pending"}
        self.fs_error: str | None = None
        self._fs_probe_at = 0.0
        self._probed_at: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._sampler: asyncio.Task[None] | None = None
        self.gates: dict[str, Any] = {}
        self._samples: list[tuple[float, dict[str, dict[str, float]]]] = []
        self._probes: set[asyncio.Task[Any]] = set()
        self._wake = asyncio.Event()

    def start(self, gates: dict[str, Any] | None = None) -> None:
        """Start the periodic quick_check (the first one now) and the sampling of ``gates``
        (``{name: UpstreamGate}``) for :meth:`upstream_window`."""
        self.gates = dict(gates or {})
        loop = asyncio.get_running_loop()
        if self._task is None:
            self._task = loop.create_task(self._run(), name="health-quick-check")
        if self._sampler is None and self.gates:
            self._sampler = loop.create_task(self._sample_loop(), name="health-gate-samples")

    def _counters(self) -> dict[str, dict[str, float]]:
        out = {}
        for name, gate in self.gates.items():
            with contextlib.suppress(Exception):
                stats = gate.stats()
                out[name] = {"calls": stats["calls"], "responses429": stats["responses429"],
                             "pauseSeconds": stats["pauseSeconds"], "errors": stats["callsByStatus"].get("5xx", 0)
                             + stats["callsByStatus"].get("none", 0)}
        return out

    async def _sample_loop(self) -> None:
        while True:
            now = time.monotonic()
            self._samples.append((now, self._counters()))
            self._samples = [s for s in self._samples if now - s[0] <= WINDOW_S + SAMPLE_INTERVAL_S]
            await asyncio.sleep(SAMPLE_INTERVAL_S)

    def upstream_window(self) -> tuple[float, dict[str, dict[str, float]]]:
        """``(seconds covered, {upstream: {calls, responses429, pauseSeconds, errors}})``: this worker's
        upstream counters over the last hour (since start when it runs for less than an hour)."""
        now = time.monotonic()
        current = self._counters()
        base_at, base = now, {}
        for at, counters in self._samples:
            if now - at <= WINDOW_S:
                base_at, base = at, counters
                break
        if not base:
            base_at = now - (time.time() - self.started_at)
        out = {}
        for name, values in current.items():
            before = base.get(name, {})
            out[name] = {k: round(v - before.get(k, 0), 1) for k, v in values.items()}
        return min(now - base_at, WINDOW_S), out

    async def stop(self) -> None:
        """Stop the background work (a check in its thread finishes on its own)."""
        tasks = [t for t in (self._task, self._sampler, *self._probes) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._task = self._sampler = None

    def check_soon(self) -> None:
        """Run the next quick_check now (e.g. after SQLite reported a malformed page)."""
        self._wake.set()

    async def check_now(self) -> dict[str, Any]:
        """Run one quick_check (in a thread) and keep its result; ``skipped`` when ``db_path`` is None
        (the store is on PostgreSQL: the check is SQLite's own)."""
        if self.db_path is None:
            self.quick = {"status": "skipped", "checkedAt": _iso(time.time()),
                          "reason": "the store is on PostgreSQL (PRAGMA quick_check is SQLite's)"}
            return self.quick
        result = await asyncio.to_thread(quick_check, self.db_path, self.busy_timeout_ms)
        if result["status"] != "ok" and result["status"] != self.quick.get("status"):
            log.error("database quick_check: %s %s", result["status"], result.get("problems") or result.get("error"))
        self.quick = result
        return result

    async def _run(self) -> None:
        while True:
            try:
                await self.check_now()
            except Exception as exc:  # never let the monitor die
                log.exception("quick_check failed: %s", exc)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s)

    def fs_check(self) -> str | None:
        """The data dir's write-probe result, probed at most every :data:`FS_PROBE_INTERVAL_S` seconds."""
        now = time.monotonic()
        if now >= self._fs_probe_at:
            self._fs_probe_at = now + FS_PROBE_INTERVAL_S
            self.fs_error = fs_write_probe(self.data_dir)
        return self.fs_error

    def _claim(self, name: str) -> bool:
        """Whether this process may probe ``name`` now: no process of the data dir probed it within
        :data:`UPSTREAM_PROBE_INTERVAL_S` (the stamp file's mtime), claimed under a lock. False when
        the stamp cannot be written (no probe is better than one per worker)."""
        if self.stamp_dir is None:
            return True
        lock = FileLock(self.stamp_dir / f"health-probe-{name}.lock")
        stamp = self.stamp_dir / f"health-probe-{name}.stamp"
        try:
            if not lock.acquire():
                return False
            try:
                with contextlib.suppress(FileNotFoundError):
                    if time.time() - stamp.stat().st_mtime < UPSTREAM_PROBE_INTERVAL_S:
                        return False
                stamp.touch()
                os.utime(stamp)
                return True
            finally:
                lock.release()
        except OSError:
            return False

    def maybe_probe_upstream(self, name: str, health: dict[str, Any], probe: Any) -> bool:
        """Start ``probe()`` (a coroutine function: one cheap request through the upstream's gate) in the
        background when the upstream's last outcome was a failure at least a minute ago and this
        process has not probed it for a minute. Returns whether a probe was started."""
        if health.get("status") not in ("degraded", "open"):
            return False
        ago = health.get("lastOutcomeAgoS")
        now = time.monotonic()
        if ago is None or ago < UPSTREAM_PROBE_INTERVAL_S:
            return False
        if now - self._probed_at.get(name, -UPSTREAM_PROBE_INTERVAL_S) < UPSTREAM_PROBE_INTERVAL_S:
            return False
        self._probed_at[name] = now
        if not self._claim(name):
            return False

        async def run() -> None:
            try:
                await probe()
            except Exception as exc:  # the outcome is recorded by the gate; nothing else to do
                log.info("health probe of %s: %s", name, exc)

        task = asyncio.get_running_loop().create_task(run(), name=f"health-probe-{name}")
        self._probes.add(task)
        task.add_done_callback(self._probes.discard)
        return True
