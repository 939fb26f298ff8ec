"""Tournament imports (``imports``): one row per tournament, recorded like a job run.

States: ``queued`` → ``importing`` → ``complete`` | ``failed``. A failed import is retried at
``next_attempt_at``; a complete one with ``pending_games`` (games whose status was not final when
it was exported) is refreshed at ``next_attempt_at`` until none is left. Times: ISO 8601 UTC.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

import aiosqlite

from chessstats.store.db import Database

_COLS = (
    "id, platform, external_id, state, trigger, attempt, queued_at, started_at, finished_at, next_attempt_at, "
    "duration_ms, expected_players, expected_games, stored_players, stored_games, skipped_games, pending_games, "
    "summary, error"
)


@dataclass(slots=True)
class ImportRecord:
    """One import row (see the module docstring); counts are numbers of players and games."""

    id: int
    platform: str
    external_id: str
    state: str
    trigger: str
    attempt: int
    queued_at: str
    started_at: str | None
    finished_at: str | None
    next_attempt_at: str | None
    duration_ms: int | None
    expected_players: int | None
    expected_games: int | None
    stored_players: int | None
    stored_games: int | None
    skipped_games: int | None
    pending_games: int
    summary: str | None
    error: str | None

    def to_wire(self) -> dict[str, Any]:
        """The API.md JobRun shape (``job`` is ``tournament-import``) plus the import's own fields."""
        return {
            "id": self.id, "job": "tournament-import", "state": self.state, "trigger": self.trigger,
            "attempt": self.attempt, "queuedAt": self.queued_at, "startedAt": self.started_at,
            "finishedAt": self.finished_at, "durationMs": self.duration_ms, "summary": self.summary,
            "error": self.error, "tournamentId": self.external_id, "platform": self.platform,
            "nextAttemptAt": self.next_attempt_at, "pendingGames": self.pending_games,
            "check": {"expectedPlayers": self.expected_players, "expectedGames": self.expected_games,
                      "storedPlayers": self.stored_players, "storedGames": self.stored_games,
                      "skippedGames": self.skipped_games},
        }


def _record(row: sqlite3.Row) -> ImportRecord:
    return ImportRecord(*tuple(row))


async def get_import(db: Database, platform: str, external_id: str) -> ImportRecord | None:
    """The import of ``(platform, external_id)``, or None."""
    row = await db.fetchone(f"SELECT {_COLS} FROM imports WHERE platform = ? AND external_id = ?",
                            (platform, external_id))
    return None if row is None else _record(row)


async def get_import_by_id(db: Database, import_id: int) -> ImportRecord | None:
    """The import with our id ``import_id``, or None."""
    row = await db.fetchone(f"SELECT {_COLS} FROM imports WHERE id = ?", (import_id,))
    return None if row is None else _record(row)


async def request_import(db: Database, platform: str, external_id: str, *, trigger: str, now: str,
                         force: bool = False) -> ImportRecord:
    """Queue the import of a tournament; returns its record.

    Without ``force`` an existing import is left as it is (queued, running, complete or waiting for
    its retry); with ``force`` (a re-import) it is queued again unless it is running, and keeps
    nothing of its previous run but ``pending_games`` (the stored games it describes are still
    served until the new run replaces them).
    """
    async with db.transaction() as conn:
        await conn.execute(
            "INSERT INTO imports (platform, external_id, state, trigger, queued_at) VALUES (?, ?, 'queued', ?, ?) "
            "ON CONFLICT (platform, external_id) DO NOTHING",
            (platform, external_id, trigger, now),
        )
        if force:
            await conn.execute(
                "UPDATE imports SET state = 'queued', trigger = ?, queued_at = ?, attempt = 0, next_attempt_at = NULL, "
                "error = NULL, started_at = NULL, finished_at = NULL, duration_ms = NULL, summary = NULL, "
                "expected_players = NULL, expected_games = NULL, stored_players = NULL, stored_games = NULL, "
                "skipped_games = NULL WHERE platform = ? AND external_id = ? AND state != 'importing'",
                (trigger, now, platform, external_id),
            )
    record = await get_import(db, platform, external_id)
    assert record is not None
    return record


async def due_imports(db: Database, now: str, max_attempts: int) -> list[ImportRecord]:
    """Imports to run now: queued, left ``importing`` (by a process that may have died: the caller
    checks its lock), failed with a retry due, or complete with non-final games to refresh."""
    rows = await db.fetchall(
        f"SELECT {_COLS} FROM imports WHERE state IN ('queued', 'importing') "
        "OR (state = 'failed' AND attempt < ? AND next_attempt_at <= ?) "
        "OR (state = 'complete' AND pending_games > 0 AND next_attempt_at <= ?) ORDER BY queued_at LIMIT 20",
        (max_attempts, now, now),
    )
    return [_record(r) for r in rows]


async def claim(db: Database, record: ImportRecord, now: str) -> bool:
    """Mark ``record`` importing (attempt + 1) if its state is still what was read; returns whether it was."""
    async with db.transaction() as conn:
        cursor = await conn.execute(
            "UPDATE imports SET state = 'importing', attempt = attempt + 1, started_at = ?, finished_at = NULL "
            "WHERE id = ? AND state = ? AND attempt = ?",
            (now, record.id, record.state, record.attempt),
        )
        return cursor.rowcount > 0


async def mark_complete(conn: aiosqlite.Connection, import_id: int, *, now: str, duration_ms: int,
                        expected: tuple[int | None, int | None], stored: tuple[int, int], skipped: int,
                        pending: int, next_attempt_at: str | None, summary: str) -> None:
    """Record a complete import inside the transaction that stored it."""
    await conn.execute(
        "UPDATE imports SET state = 'complete', finished_at = ?, duration_ms = ?, expected_players = ?, "
        "expected_games = ?, stored_players = ?, stored_games = ?, skipped_games = ?, pending_games = ?, "
        "next_attempt_at = ?, summary = ?, error = NULL WHERE id = ?",
        (now, duration_ms, *expected, *stored, skipped, pending, next_attempt_at, summary, import_id),
    )


async def mark_failed(db: Database, import_id: int, *, now: str, duration_ms: int, error: str,
                      next_attempt_at: str | None, expected: tuple[int | None, int | None] = (None, None),
                      stored: tuple[int | None, int | None] = (None, None)) -> None:
    """Record a failed attempt (nothing of it was stored) and when to try again."""
    await db.execute_write(
        "UPDATE imports SET state = 'failed', finished_at = ?, duration_ms = ?, error = ?, next_attempt_at = ?, "
        "expected_players = coalesce(?, expected_players), expected_games = coalesce(?, expected_games), "
        "stored_players = ?, stored_games = ? WHERE id = ?",
        (now, duration_ms, error, next_attempt_at, *expected, *stored, import_id),
    )


async def set_pending(conn: aiosqlite.Connection, import_id: int, pending: int, next_attempt_at: str | None,
                      now: str) -> None:
    """After a refresh of non-final games: how many are left and when to look again."""
    await conn.execute(
        "UPDATE imports SET state = 'complete', pending_games = ?, next_attempt_at = ?, finished_at = ? WHERE id = ?",
        (pending, next_attempt_at, now, import_id),
    )


async def release(db: Database, import_id: int, now: str) -> None:
    """Put an import that was interrupted (shutdown) back in the queue."""
    await db.execute_write("UPDATE imports SET state = 'queued', queued_at = ? WHERE id = ? AND state = 'importing'",
                           (now, import_id))
