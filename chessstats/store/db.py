"""The SQLite database: one serialised writer connection, one reader connection.

Pragmas are set on every connection: ``busy_timeout`` first, then WAL, ``synchronous=NORMAL``
and ``foreign_keys=ON``. Several processes may open the same file (``--workers N``): SQLite's
locks plus the busy timeout serialise their writers; inside one process an asyncio lock does.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite

from chessstats.store.migrations import MIGRATIONS

DB_FILENAME = "chessstats.db"


class Database:
    """Async access to ``<data dir>/chessstats.db``.

    **Parameters:**
    * **path** - the SQLite file.
    * **busy_timeout_ms** - *(optional)* how long a statement waits for a lock held by another
      connection or process, in milliseconds. Defaults to 5000.

    Use ``await db.open()`` / ``await db.close()`` (or ``async with``). Reads go through
    :meth:`fetchall` / :meth:`fetchone`; writes through :meth:`transaction`, which yields the
    writer connection inside ``BEGIN IMMEDIATE`` and commits, or rolls back on any error.
    """

    def __init__(self, path: str | Path, busy_timeout_ms: int = 5000) -> None:
        self.path = Path(path)
        self.busy_timeout_ms = busy_timeout_ms
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()

    async def _connect(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            await conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            await conn.execute("PRAGMA journal_mode = WAL")
            await conn.execute("PRAGMA synchronous = NORMAL")
            await conn.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            await conn.close()
            raise
        return conn

    async def open(self, *, migrate: bool = True) -> Database:
        """Open both connections and (by default) apply pending migrations.

        Raises:
            sqlite3.Error: the file cannot be opened or is not a database.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._writer = await self._connect()
            self._reader = await self._connect()
            if migrate:
                await self.migrate()
        except BaseException:
            await self.close()  # never leave a connection thread behind (it would keep the process alive)
            raise
        return self

    async def close(self) -> None:
        """Close both connections (idempotent)."""
        for conn in (self._reader, self._writer):
            if conn is not None:
                await conn.close()
        self._reader = self._writer = None

    async def __aenter__(self) -> Database:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def reader(self) -> aiosqlite.Connection:
        if self._reader is None:
            raise RuntimeError("database is not open")
        return self._reader

    async def fetchall(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        """Run a read query and return every row (one hop to the connection's thread)."""
        return list(await self.reader.execute_fetchall(sql, params))

    async def fetchone(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> sqlite3.Row | None:
        """Run a read query and return its first row, or None."""
        rows = await self.reader.execute_fetchall(sql, params)
        for row in rows:
            return row
        return None

    async def fetchval(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run a read query and return the first column of its first row, or None."""
        row = await self.fetchone(sql, params)
        return None if row is None else row[0]

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """Yield the writer connection inside ``BEGIN IMMEDIATE``; commit on success, roll back on error.

        Only one transaction runs at a time in a process; other processes wait on SQLite's lock
        for up to ``busy_timeout_ms``.
        """
        if self._writer is None:
            raise RuntimeError("database is not open")
        async with self._write_lock:
            await self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield self._writer
            except BaseException:
                await self._writer.execute("ROLLBACK")
                raise
            else:
                await self._writer.execute("COMMIT")

    async def execute_write(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one write statement in its own transaction; returns ``lastrowid``."""
        async with self.transaction() as conn:
            cursor = await conn.execute(sql, params)
            return cursor.lastrowid or 0

    async def migrate(self) -> list[int]:
        """Apply pending migrations in order; returns the versions applied now."""
        applied_now: list[int] = []
        async with self.transaction() as conn:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
            done = {row[0] for row in await conn.execute_fetchall("SELECT version FROM schema_migrations")}
            for version, name, statements in MIGRATIONS:
                if version in done:
                    continue
                for statement in statements:
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (version, name, datetime.now(UTC).isoformat()),
                )
                applied_now.append(version)
        return applied_now

    async def migration_status(self) -> list[tuple[int, str, str | None]]:
        """Every known migration as ``(version, name, applied_at or None)``."""
        rows = await self.fetchall("SELECT version, applied_at FROM schema_migrations")
        applied = {row[0]: row[1] for row in rows}
        return [(v, n, applied.get(v)) for v, n, _ in MIGRATIONS]

    async def size_bytes(self) -> int:
        """Size of the database file plus its WAL, in bytes."""
        total = 0
        for suffix in ("", "-wal"):
            p = Path(str(self.path) + suffix)
            if p.exists():
                total += p.stat().st_size
        return total


def rows_to_dicts(rows: Iterable[sqlite3.Row]) -> list[dict[str, Any]]:
    """Rows as plain dicts (column name → value)."""
    return [dict(row) for row in rows]
