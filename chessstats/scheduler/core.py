"""The scheduler: one per data dir, every run recorded in ``job_runs``.

* **One holder.** Each process runs a :class:`Scheduler`; only the one holding
  ``<data dir>/scheduler.lock`` (``flock``, released by the kernel when the process dies; with
  ``[cache] url`` on Redis, a leased Redis lock shared by every host, free ``lock_lease_s``
  seconds after its holder died) schedules and executes runs. The others retry the lock every
  ``poll_s`` seconds, so when the holder dies another takes over (and marks its run interrupted).
* **Ticks.** ``scheduler_jobs.last_tick`` marks, per job, the last cron tick accounted for.
  A due tick moves the mark and queues a ``waiting`` run in one transaction (a unique index on
  ``(job, scheduled_for)`` forbids a second run for one tick). Ticks missed while nobody held
  the lock become **one** ``catch-up`` run for the latest of them. A job seen for the first
  time starts counting from now.
* **No overlap.** A job runs at most once at a time (per process: one task per job; across
  processes: ``locks/job-<name>.lock``). A tick that comes while a run of the job is already
  waiting queues nothing (one run behind an active one at most).
* **Failures.** A failed run is retried (``retry`` trigger) after
  ``retry_base_s * 2**(attempt-1)`` seconds × a jitter of 0.5–1.5 (at least the upstream's
  Retry-After), up to ``max_attempts``; nothing a job raises stops the scheduler.
* **Background calls.** A job's upstream calls run under
  :func:`~chessstats.scheduler.registry.background_calls`: at every gate they give way to users'
  requests and use at most a share of the upstream's rate.
* **Restart.** On taking the lock, runs left ``active`` by a dead process are marked
  ``failed`` ("interrupted") and retried. :meth:`Scheduler.stop` stops taking runs, waits up to
  ``stop_timeout_s`` for active ones, and records the rest as failed ("interrupted: shutdown").

Time comes from an injectable clock (``now() -> aware UTC datetime``); tests drive
:meth:`Scheduler.step` and :meth:`Scheduler.wait_idle` directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from chessstats import metrics
from chessstats.errors import ChessstatsError, UpstreamRateLimited
from chessstats.scheduler.context import JobContext, utc_now
from chessstats.scheduler.cron import latest_tick_until, next_tick
from chessstats.scheduler.lock import job_lock, scheduler_lock
from chessstats.scheduler.registry import REGISTRY, Effective, Job, background_calls, effective
from chessstats.store import jobs as runs

log = logging.getLogger("chessstats.scheduler")

INTERRUPTED = "interrupted: the process running it stopped before it finished"
SHUTDOWN = "interrupted: shutdown before it finished"
MAX_ERROR_CHARS = 500


def error_text(exc: BaseException) -> str:
    """A short, single-line description of a job failure (no traceback, no paths)."""
    message = exc.message if isinstance(exc, ChessstatsError) else str(exc)
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return " ".join(text.split())[:MAX_ERROR_CHARS]


class Scheduler:
    """The in-process scheduler of one data dir.

    **Parameters:**
    * **ctx** - the jobs' resources (database, cache, clients, config).
    * **data_dir** - where ``scheduler.lock`` and ``locks/`` live.
    * **now** - *(optional)* the clock: returns an aware UTC datetime. Defaults to the system clock.
    * **registry** - *(optional)* the jobs (tests register their own). Defaults to :data:`REGISTRY`.
    * **rng** - *(optional)* the jitter source.
    """

    def __init__(self, ctx: JobContext, data_dir: Path, *, now: Callable[[], datetime] = utc_now,
                 registry: dict[str, Job] | None = None, rng: random.Random | None = None) -> None:
        self.ctx = ctx
        self.db = ctx.db
        self.settings = ctx.config.scheduler
        self.tz = ZoneInfo(self.settings.timezone)
        self.data_dir = data_dir
        self.now = now
        self.registry = REGISTRY if registry is None else registry
        self.jobs: dict[str, Effective] = effective(ctx.config, self.registry)
        for name, eff in self.jobs.items():
            if eff.schedule_error:
                log.error("job %s is not scheduled: %s", name, eff.schedule_error)
        self._broken: set[str] = set()  # jobs whose next tick failed to compute (reported once)
        self.rng = rng or random.Random()
        self.locks = getattr(ctx, "locks", None)  # Redis leases when [cache] url is Redis
        self.lock = scheduler_lock(data_dir, self.locks)
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.counts: dict[str, int] = dict.fromkeys(runs.STATES, 0)
        self.catch_up = True
        self.stopping = False
        self._wake = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None
        self.acquired_at: datetime | None = None
        #: an ``active`` run's job lock was held when recovery looked (its holder may be dead: a
        #: Redis lease outlives it by up to ``lock_lease_s``): recovery looks again every poll
        self._recheck_active = False
        self._lock_error = False

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the loop (lock attempts, ticks, queued runs) as a task."""
        self._loop = asyncio.create_task(self._run_loop(), name="chessstats-scheduler")

    async def _run_loop(self) -> None:
        while not self.stopping:
            delay = self.settings.poll_s
            try:
                if await self.try_acquire():
                    if self._recheck_active:  # a run whose job lock was still held at takeover
                        await self.recover_interrupted()
                    delay = min(delay, await self.step())
                self.counts = await runs.count_by_state(self.db)
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the loop die; try again next poll
                log.exception("scheduler step failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.01, delay))

    def wake(self) -> None:
        """Make the loop look at the queue now (e.g. a manual run was queued in this process)."""
        self._wake.set()

    async def try_acquire(self) -> bool:
        """Take the scheduler lock if free; on taking it, recover interrupted runs. True if held."""
        if self.lock.held:
            return True
        if self.stopping:
            return False
        try:
            taken = self.lock.acquire()
        except OSError as exc:  # the lock cannot be asked for (Redis down, lock file not creatable)
            if not self._lock_error:
                log.warning("scheduler lock %s unavailable (%s): no jobs run until it can be taken",
                            self.lock.path, exc)
            self._lock_error = True
            return False
        self._lock_error = False
        if not taken:
            return False
        self.acquired_at = self.now()
        self.catch_up = True
        log.info("scheduler lock taken by pid %d (%s)", os.getpid(), self.lock.path)
        await self.recover_interrupted()
        return True

    async def stop(self) -> None:
        """Stop taking runs, wait up to ``stop_timeout_s`` for active ones, record the rest as
        failed ("interrupted: shutdown"), and release the lock. Never raises."""
        self.stopping = True
        self._wake.set()
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._loop
        pending = [t for t in self.tasks.values() if not t.done()]
        if pending:
            log.info("scheduler stopping: waiting up to %.1f s for %d active run(s)",
                     self.settings.stop_timeout_s, len(pending))
            _, still = await asyncio.wait(pending, timeout=self.settings.stop_timeout_s)
            for task in still:
                task.cancel()
            if still:
                await asyncio.gather(*still, return_exceptions=True)
        self.lock.release()

    # --- health ----------------------------------------------------------------------------

    def health(self) -> dict[str, object]:
        """``{status, timezone, lockHolder, pid, jobs: {registered, enabled}, runs: counts, activeHere}``."""
        return {
            "status": "ok" if not self.stopping else "stopping",
            "timezone": self.settings.timezone,
            "lockHolder": self.lock.held,
            "pid": os.getpid(),
            "jobs": {"registered": len(self.jobs), "enabled": sum(e.enabled for e in self.jobs.values())},
            "runs": dict(self.counts),
            "activeHere": sorted(name for name, t in self.tasks.items() if not t.done()),
        }

    # --- recovery --------------------------------------------------------------------------

    async def recover_interrupted(self) -> int:
        """Mark runs left ``active`` by a dead process as failed ("interrupted") and queue their
        retry; a run whose job lock is held (running elsewhere) is left alone. Returns the count."""
        count = 0
        self._recheck_active = False
        for run in await runs.active_runs(self.db):
            if run.job in self.tasks:
                continue
            lock = job_lock(self.data_dir, run.job, self.locks)
            try:
                taken = lock.acquire()
            except OSError as exc:  # Redis down (or no lock file): look again at the next poll
                log.warning("run %d of %s: its job lock cannot be asked for (%s)", run.id, run.job, exc)
                taken = False
            if not taken:
                self._recheck_active = True
                continue
            try:
                now = self.now()
                await runs.finish_run(self.db, run.id, state="failed", now=now, duration_ms=None, error=INTERRUPTED)
                log.warning("run %d of %s was interrupted; marked failed", run.id, run.job)
                await self._maybe_retry(run, None, now)
                count += 1
            finally:
                lock.release()
        return count

    # --- one step --------------------------------------------------------------------------

    async def step(self) -> float:
        """Queue due ticks, start due runs; returns seconds until the next tick (capped by poll)."""
        now = self.now()
        marks = await runs.last_ticks(self.db)
        next_due: datetime | None = None
        for name, eff in self.jobs.items():
            if not eff.enabled or name in self._broken:
                continue
            try:
                marks, upcoming = await self._step_job(name, eff, marks, now)
            except (ValueError, OverflowError) as exc:  # its next tick cannot be computed: skip it, not the others
                self._broken.add(name)
                log.error("job %s is no longer scheduled: its next tick cannot be computed: %s", name, exc)
                continue
            next_due = upcoming if next_due is None else min(next_due, upcoming)
        self.catch_up = False
        await self.start_due(now)
        if next_due is None:
            return self.settings.poll_s
        return max(0.0, (next_due - self.now()).total_seconds())

    async def _step_job(self, name: str, eff: Effective, marks: dict[str, str],
                        now: datetime) -> tuple[dict[str, str], datetime]:
        """Queue job ``name``'s due tick, if any; returns the tick marks and its next tick.

        Raises:
            ValueError: the schedule's next tick cannot be computed.
        """
        mark = marks.get(name)
        if mark is None:
            await runs.set_last_tick(self.db, name, now, now)
            marks = await runs.last_ticks(self.db)
            mark = marks[name]
        mark_dt = runs.parse_iso(mark)
        tick, missed = _latest(eff.schedule, mark_dt, now, self.tz)
        if tick is not None:
            trigger = "catch-up" if self.catch_up or missed > 1 else "schedule"
            queue = not await runs.has_waiting(self.db, name, ("schedule", "catch-up", "manual"))
            run = await runs.enqueue_tick(self.db, name, previous=mark, tick=tick, now=now,
                                          trigger=trigger, queue=queue)
            if run is not None:
                log.info("queued %s run %d for %s (%s%s)", name, run.id, runs.iso_ms(tick), trigger,
                         f", {missed} ticks missed" if missed > 1 else "")
            elif not queue:
                log.info("tick %s of %s skipped: a run is already queued", runs.iso_ms(tick), name)
            mark_dt = tick
        upcoming = next_tick(eff.schedule, mark_dt, self.tz)
        return marks, upcoming

    async def start_due(self, now: datetime) -> None:
        """Start a task for each due waiting run whose job is not running in this process."""
        for run in await runs.due_runs(self.db, now):
            if self.stopping:
                return
            if run.job in self.tasks:
                continue
            eff = self.jobs.get(run.job)
            if eff is None or eff.job.unavailable:
                if await runs.claim_run(self.db, run.id, now):
                    reason = "unknown job" if eff is None else eff.job.unavailable
                    await runs.finish_run(self.db, run.id, state="failed", now=now, duration_ms=0, error=reason)
                continue
            self.tasks[run.job] = asyncio.create_task(self._execute(run, eff.job), name=f"job-{run.job}")

    async def wait_idle(self) -> None:
        """Wait until no run is executing in this process (tests)."""
        while self.tasks:
            await asyncio.gather(*list(self.tasks.values()), return_exceptions=True)

    # --- one run ---------------------------------------------------------------------------

    async def _execute(self, run: runs.RunRow, job: Job) -> None:
        lock = job_lock(self.data_dir, run.job, self.locks)
        try:
            try:
                taken = lock.acquire()
            except OSError as exc:  # Redis down (or no lock file): the run stays waiting, tried again later
                log.warning("run %d of %s not started: its job lock cannot be asked for (%s)", run.id, run.job, exc)
                return
            if not taken:  # running in another process (``jobs run``): try again later
                return
            if not await runs.claim_run(self.db, run.id, self.now()):
                return
            await execute_claimed(self, run, job)
        finally:
            lock.release()
            self.tasks.pop(run.job, None)
            self._wake.set()

    async def _maybe_retry(self, run: runs.RunRow, exc: BaseException | None, now: datetime) -> None:
        if run.attempt >= self.settings.max_attempts or self.settings.max_attempts <= 1:
            return
        delay = self.settings.retry_base_s * 2 ** (run.attempt - 1) * self.rng.uniform(0.5, 1.5)
        if isinstance(exc, UpstreamRateLimited):
            delay = max(delay, float(exc.retry_after_s))
        retry = await runs.insert_run(self.db, run.job, trigger="retry", now=now,
                                      scheduled_for=now + timedelta(seconds=delay),
                                      attempt=run.attempt + 1, retry_of=run.id)
        log.info("run %d of %s: retry %d queued in %.1f s", run.id, run.job, retry.id, delay)


async def execute_claimed(sched: Scheduler | None, run: runs.RunRow, job: Job, ctx: JobContext | None = None) -> bool:
    """Run an ``active`` (claimed) run of ``job`` and record its outcome; True when completed.

    With a scheduler, a failure queues a retry and a cancellation (shutdown) is recorded as
    failed before it propagates. Without one (``jobs run``), nothing is retried. The job's upstream
    calls are background calls (:func:`~chessstats.scheduler.registry.background_calls`).
    """
    ctx = ctx or (sched.ctx if sched else None)
    assert ctx is not None
    now_fn = sched.now if sched else ctx.now
    started = time.perf_counter()

    def elapsed_ms() -> int:
        return int((time.perf_counter() - started) * 1000)

    try:
        with background_calls():  # its upstream calls (and the tasks it starts) give way to users' requests
            summary = await job.func(ctx)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await runs.finish_run(ctx.db, run.id, state="failed", now=now_fn(), duration_ms=elapsed_ms(),
                                  error=SHUTDOWN)
            if sched is not None:
                await sched._maybe_retry(run, None, now_fn())
        metrics.record_job(run.job, "interrupted", elapsed_ms() / 1000)
        log.warning("run %d of %s interrupted by shutdown", run.id, run.job)
        raise
    except Exception as exc:  # a job failure is recorded, never propagated
        text = error_text(exc)
        log.warning("run %d of %s failed (attempt %d): %s", run.id, run.job, run.attempt, text)
        metrics.record_job(run.job, "failed", elapsed_ms() / 1000)
        await runs.finish_run(ctx.db, run.id, state="failed", now=now_fn(), duration_ms=elapsed_ms(), error=text)
        if sched is not None:
            await sched._maybe_retry(run, exc, now_fn())
        return False
    summary = " ".join(str(summary or "").split())[:MAX_ERROR_CHARS]
    await runs.finish_run(ctx.db, run.id, state="completed", now=now_fn(), duration_ms=elapsed_ms(), summary=summary)
    metrics.record_job(run.job, "completed", elapsed_ms() / 1000)
    log.info("run %d of %s completed in %d ms: %s", run.id, run.job, elapsed_ms(), summary)
    return True


#: Windows searched backwards for the latest missed tick (so a long downtime with a per-second
#: schedule does not iterate over every missed tick).
_WINDOWS = (timedelta(minutes=5), timedelta(days=8), timedelta(days=400))


def _latest(expr: str, mark: datetime, now: datetime, tz: ZoneInfo) -> tuple[datetime | None, int]:
    """The latest tick in ``(mark, now]`` and how many ticks fell there (a lower bound when the
    gap is long: a count above 1 is all that matters)."""
    if next_tick(expr, mark, tz) > now:
        return None, 0
    for window in _WINDOWS:
        start = max(mark, now - window)
        tick, count = latest_tick_until(expr, start, now, tz, limit=5_000)
        if tick is not None:
            earlier = start > mark and next_tick(expr, mark, tz) <= start
            return tick, count + (1 if earlier else 0)
    tick, count = latest_tick_until(expr, mark, now, tz, limit=100_000)
    return tick, count
