"""What operators see and ask of the jobs (admin routes, ``/health``, CLI), over the database.

Works in any process, whether or not it holds the scheduler lock: asking for a run queues a
``waiting`` row that the holder picks up within ``scheduler.poll_s`` seconds.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from chessstats.config import Config
from chessstats.errors import BadRequest, NotFound
from chessstats.models.job import JobRun
from chessstats.scheduler.cron import next_tick
from chessstats.scheduler.registry import REGISTRY, effective
from chessstats.store import Database
from chessstats.store import jobs as runs

#: How many completed and failed runs the overview lists.
RECENT = 20


def _wire_time(text: str | None) -> str | None:
    return None if text is None else text[:19] + "Z"


def to_wire(row: runs.RunRow) -> JobRun:
    """A stored run as its API shape (times to the second)."""
    return JobRun(id=row.id, job=row.job, state=row.state, trigger=row.trigger, attempt=row.attempt,
                  queued_at=_wire_time(row.queued_at) or "", started_at=_wire_time(row.started_at),
                  finished_at=_wire_time(row.finished_at), duration_ms=row.duration_ms, summary=row.summary,
                  error=row.error)


async def job_table(db: Database, config: Config, now: datetime) -> list[dict[str, Any]]:
    """Every registered job: ``{name, description, schedule, enabled, disabledReason, nextRun,
    timezone, lastRun: JobRun | None}``; ``nextRun`` is ISO 8601 UTC or null when not scheduled.

    A job whose next tick cannot be computed is listed with ``enabled`` false, ``nextRun`` null
    and the reason in ``disabledReason``; it never makes the table fail."""
    marks = await runs.last_ticks(db)
    last = await runs.last_runs(db)
    tz = config.scheduler.timezone
    out = []
    for name, eff in effective(config).items():
        next_run, reason = None, eff.disabled_reason
        if eff.enabled and config.scheduler.enabled:
            mark = runs.parse_iso(marks[name]) if name in marks else now
            try:
                next_run = _wire_time(runs.iso_ms(next_tick(eff.schedule, max(mark, now), tz)))
            except (ValueError, OverflowError) as exc:  # reported on this job; the others are listed
                reason = f"schedule {eff.schedule!r} cannot be used: {exc}"
        out.append({
            "name": name, "description": eff.job.description, "schedule": eff.schedule,
            "enabled": eff.enabled and reason is None, "disabledReason": reason, "nextRun": next_run, "timezone": tz,
            "lastRun": to_wire(last[name]) if name in last else None,
        })
    return out


async def overview(db: Database, config: Config, now: datetime) -> dict[str, Any]:
    """``GET /api/admin/jobs``: ``{timezone, schedulerEnabled, counts, active, waiting, completed,
    failed, jobs}`` — every active and waiting run, the last 20 completed and failed."""
    groups = {
        "active": await runs.runs_in_state(db, "active", 1000),
        "waiting": await runs.runs_in_state(db, "waiting", 1000),
        "completed": await runs.runs_in_state(db, "completed", RECENT),
        "failed": await runs.runs_in_state(db, "failed", RECENT),
    }
    return {
        "timezone": config.scheduler.timezone,
        "schedulerEnabled": config.scheduler.enabled,
        "counts": await runs.count_by_state(db),
        **{state: [to_wire(r) for r in rows] for state, rows in groups.items()},
        "jobs": await job_table(db, config, now),
    }


async def run_counts(db: Database) -> dict[str, int]:
    """``{waiting, active, completed, failed}`` run counts."""
    return await runs.count_by_state(db)


async def request_run(db: Database, config: Config, name: str, now: datetime) -> runs.RunRow:
    """Queue a ``manual`` run of job ``name`` now.

    Raises:
        NotFound: no job has that name.
        BadRequest: the job cannot run (no upstream client), or background jobs are off
            (then nothing would pick the run up: use ``chessstats jobs run NAME``).
    """
    job = REGISTRY.get(name)
    if job is None:
        raise NotFound(f"no job named {name!r}; jobs: {', '.join(REGISTRY)}")
    if job.unavailable:
        raise BadRequest(f"job {name} cannot run: {job.unavailable}")
    if not config.scheduler.enabled:
        raise BadRequest("background jobs are disabled here; run it with `chessstats jobs run NAME`")
    return await runs.insert_run(db, name, trigger="manual", now=now)


async def retry_run(db: Database, config: Config, run_id: int, now: datetime) -> runs.RunRow:
    """Queue again a failed run (``retry`` trigger, next attempt number).

    Raises:
        NotFound: no run has that id.
        BadRequest: the run is not ``failed``, its job cannot run, or background jobs are off.
    """
    run = await runs.get_run(db, run_id)
    if run is None:
        raise NotFound(f"no job run {run_id}")
    if run.state != "failed":
        raise BadRequest(f"job run {run_id} is {run.state}; only a failed run can be retried")
    job = REGISTRY.get(run.job)
    if job is None or job.unavailable:
        raise BadRequest(f"job {run.job} cannot run: {job.unavailable if job else 'unknown job'}")
    if not config.scheduler.enabled:
        raise BadRequest("background jobs are disabled here; run it with `chessstats jobs run NAME`")
    return await runs.insert_run(db, run.job, trigger="retry", now=now, attempt=run.attempt + 1, retry_of=run.id)
