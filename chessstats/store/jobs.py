"""Background job runs (``job_runs``) and the scheduler's per-job tick marks (``scheduler_jobs``).

Times are ISO 8601 UTC text with milliseconds (``2026-11-29T10:00:00.000Z``) so that string
order is time order. A run moves ``waiting`` → ``active`` → ``completed`` | ``failed``; only
:func:`claim_run` moves a run to ``active`` and it does so atomically (a run is claimed once).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime

from chessstats.store.db import Database

STATES = ("waiting", "active", "completed", "failed")
TRIGGERS = ("schedule", "manual", "retry", "catch-up")


def iso_ms(dt: datetime) -> str:
    """``dt`` (aware) as ISO 8601 UTC with milliseconds: ``2026-11-29T10:00:00.000Z``."""
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_iso(text: str) -> datetime:
    """An ISO 8601 UTC string (with or without ms, ``Z`` suffix) as an aware datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


@dataclass(slots=True)
class RunRow:
    """One row of ``job_runs``. Times are ISO 8601 UTC (ms) text or None; ``duration_ms`` in ms."""

    id: int
    job: str
    state: str
    trigger: str
    attempt: int
    scheduled_for: str | None
    queued_at: str
    started_at: str | None
    finished_at: str | None
    duration_ms: int | None
    summary: str | None
    error: str | None
    retry_of: int | None


_COLS = ("id, job, state, trigger, attempt, scheduled_for, queued_at, started_at, finished_at, duration_ms, "
         "summary, error, retry_of")


def _row(r: sqlite3.Row) -> RunRow:
    return RunRow(*tuple(r))


async def insert_run(
    db: Database, job: str, *, trigger: str, now: datetime, scheduled_for: datetime | None = None,
    attempt: int = 1, retry_of: int | None = None, state: str = "waiting",
) -> RunRow:
    """Queue a run (``waiting``, or ``active`` for a foreground run); returns the row.

    ``scheduled_for`` is when it may start (default ``now``). Raises ``sqlite3.IntegrityError``
    when a ``schedule``/``catch-up`` run for the same job and tick already exists.
    """
    when = iso_ms(scheduled_for or now)
    started = iso_ms(now) if state == "active" else None
    async with db.transaction() as conn:
        cursor = await conn.execute(
            "INSERT INTO job_runs (job, state, trigger, attempt, scheduled_for, queued_at, started_at, retry_of) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (job, state, trigger, attempt, when, iso_ms(now), started, retry_of),
        )
        run_id = int(cursor.lastrowid or 0)
    row = await get_run(db, run_id)
    assert row is not None
    return row


async def enqueue_tick(db: Database, job: str, *, previous: str | None, tick: datetime, now: datetime,
                       trigger: str, queue: bool) -> RunRow | None:
    """Account for cron ``tick`` of ``job``: move its mark from ``previous`` to ``tick`` and, when
    ``queue``, insert a waiting run for it — both or neither (one transaction, compare-and-set on
    the mark, unique index on the tick). Returns the run, or None when not queued or when another
    scheduler already accounted for the tick.
    """
    tick_s = iso_ms(tick)
    async with db.transaction() as conn:
        if previous is None:
            cursor = await conn.execute(
                "INSERT OR IGNORE INTO scheduler_jobs (job, last_tick, updated_at) VALUES (?, ?, ?)",
                (job, tick_s, iso_ms(now)))
        else:
            cursor = await conn.execute(
                "UPDATE scheduler_jobs SET last_tick = ?, updated_at = ? WHERE job = ? AND last_tick = ?",
                (tick_s, iso_ms(now), job, previous))
        if cursor.rowcount != 1:
            return None
        if not queue:
            return None
        cursor = await conn.execute(
            "INSERT OR IGNORE INTO job_runs (job, state, trigger, attempt, scheduled_for, queued_at) "
            "VALUES (?, 'waiting', ?, 1, ?, ?)", (job, trigger, tick_s, iso_ms(now)))
        if cursor.rowcount != 1:
            return None
        run_id = int(cursor.lastrowid or 0)
    return await get_run(db, run_id)


async def last_ticks(db: Database) -> dict[str, str]:
    """``{job: last accounted tick (ISO ms)}``."""
    return {r[0]: r[1] for r in await db.fetchall("SELECT job, last_tick FROM scheduler_jobs")}


async def set_last_tick(db: Database, job: str, tick: datetime, now: datetime) -> None:
    """Set a job's tick mark (first sight of a job: its schedule starts counting from ``tick``)."""
    async with db.transaction() as conn:
        await conn.execute(
            "INSERT INTO scheduler_jobs (job, last_tick, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (job) DO NOTHING", (job, iso_ms(tick), iso_ms(now)))


async def get_run(db: Database, run_id: int) -> RunRow | None:
    """The run ``run_id``, or None."""
    row = await db.fetchone(f"SELECT {_COLS} FROM job_runs WHERE id = ?", (run_id,))
    return None if row is None else _row(row)


async def due_runs(db: Database, now: datetime) -> list[RunRow]:
    """Waiting runs whose ``scheduled_for`` has come, oldest first."""
    rows = await db.fetchall(
        f"SELECT {_COLS} FROM job_runs WHERE state = 'waiting' AND scheduled_for <= ? ORDER BY scheduled_for, id",
        (iso_ms(now),))
    return [_row(r) for r in rows]


async def has_waiting(db: Database, job: str, triggers: tuple[str, ...]) -> bool:
    """Whether ``job`` has a waiting run with one of ``triggers``."""
    marks = ", ".join("?" * len(triggers))
    return bool(await db.fetchval(
        f"SELECT 1 FROM job_runs WHERE job = ? AND state = 'waiting' AND trigger IN ({marks}) LIMIT 1",
        (job, *triggers)))


async def claim_run(db: Database, run_id: int, now: datetime) -> bool:
    """Move a waiting run to ``active`` (started now); False when it was not waiting any more."""
    async with db.transaction() as conn:
        cursor = await conn.execute(
            "UPDATE job_runs SET state = 'active', started_at = ? WHERE id = ? AND state = 'waiting'",
            (iso_ms(now), run_id))
        return cursor.rowcount == 1


async def finish_run(db: Database, run_id: int, *, state: str, now: datetime, duration_ms: int | None,
                     summary: str | None = None, error: str | None = None) -> None:
    """Record the outcome of an active run (``completed`` or ``failed``)."""
    async with db.transaction() as conn:
        await conn.execute(
            "UPDATE job_runs SET state = ?, finished_at = ?, duration_ms = ?, summary = ?, error = ? WHERE id = ?",
            (state, iso_ms(now), duration_ms, summary, error, run_id))


async def active_runs(db: Database) -> list[RunRow]:
    """Every run in state ``active``."""
    return [_row(r) for r in await db.fetchall(f"SELECT {_COLS} FROM job_runs WHERE state = 'active' ORDER BY id")]


async def runs_in_state(db: Database, state: str, limit: int) -> list[RunRow]:
    """The newest ``limit`` runs in ``state`` (newest first)."""
    rows = await db.fetchall(
        f"SELECT {_COLS} FROM job_runs WHERE state = ? ORDER BY id DESC LIMIT ?", (state, limit))
    return [_row(r) for r in rows]


async def count_by_state(db: Database) -> dict[str, int]:
    """``{waiting, active, completed, failed}`` run counts (every state present, 0 when none)."""
    counts = dict.fromkeys(STATES, 0)
    for state, n in await db.fetchall("SELECT state, count(*) FROM job_runs GROUP BY state"):
        counts[state] = int(n)
    return counts


async def last_runs(db: Database) -> dict[str, RunRow]:
    """The newest run of every job that has one."""
    rows = await db.fetchall(
        f"SELECT {_COLS} FROM job_runs WHERE id IN (SELECT max(id) FROM job_runs GROUP BY job)")
    return {r["job"]: _row(r) for r in rows}


async def runs_of(db: Database, job: str, limit: int = 100) -> list[RunRow]:
    """Runs of ``job`` oldest first (at most ``limit`` newest ones)."""
    rows = await db.fetchall(
        f"SELECT {_COLS} FROM (SELECT {_COLS} FROM job_runs WHERE job = ? ORDER BY id DESC LIMIT ?) ORDER BY id",
        (job, limit))
    return [_row(r) for r in rows]
