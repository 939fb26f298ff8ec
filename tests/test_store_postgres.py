"""The store on a real PostgreSQL server (tests/pg_server.py): what is PostgreSQL's own — exactly-once
across workers, rows, ids and bytes through asyncpg, and storage faults (a server that went away, a
read-only database) mapped to 503 ``storage_unavailable`` and recovered without a restart.
Runs on every test run when PostgreSQL is installed."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest

from chessstats.errors import StorageUnavailable
from chessstats.store import jobs, players, upstream_responses
from chessstats.store.postgres import PostgresDatabase, redact
from tests.pg_store import integrity_errors, pg_server

T0 = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)


def _dbname(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def _terminate(url: str) -> None:
    """Cut every connection to the database of ``url`` (like a server restart)."""
    pg_server().execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        f"WHERE datname = '{_dbname(url)}' AND pid <> pg_backend_pid()")


def test_scheduler_ticks_are_queued_exactly_once_by_concurrent_workers() -> None:
    url = pg_server().new_database()

    async def worker(db: PostgresDatabase, tick: datetime, previous: str | None) -> jobs.RunRow | None:
        return await jobs.enqueue_tick(db, "tournament-monitor", previous=previous, tick=tick, now=T0,
                                       trigger="schedule", queue=True)

    async def run() -> None:
        dbs = [await PostgresDatabase(url, pool_size=4).open() for _ in range(4)]  # four "workers"
        try:
            first = await asyncio.gather(*[worker(db, T0, None) for db in dbs for _ in range(3)])
            assert sum(r is not None for r in first) == 1
            previous = jobs.iso_ms(T0)
            second = await asyncio.gather(*[worker(db, T0 + timedelta(minutes=5), previous) for db in dbs])
            assert sum(r is not None for r in second) == 1
            runs = await jobs.runs_of(dbs[0], "tournament-monitor")
            assert [r.scheduled_for for r in runs] == [jobs.iso_ms(T0), jobs.iso_ms(T0 + timedelta(minutes=5))]
            assert all(isinstance(r.id, int) and r.state == "waiting" for r in runs)
            # the unique index itself: a second run for the same tick is refused
            with pytest.raises(integrity_errors()):
                await jobs.insert_run(dbs[1], "tournament-monitor", trigger="schedule", now=T0, scheduled_for=T0)
            claimed = await asyncio.gather(*[jobs.claim_run(db, runs[0].id, T0) for db in dbs])
            assert claimed.count(True) == 1
            assert await jobs.count_by_state(dbs[2]) == {"waiting": 1, "active": 1, "completed": 0, "failed": 0}
        finally:
            for db in dbs:
                await db.close()

    asyncio.run(run())


def test_rows_ids_bytes_and_numbers_come_back_like_sqlites() -> None:
    url = pg_server().new_database()

    async def run() -> None:
        async with PostgresDatabase(url) as db:
            account = await players.ensure_account(db, "lichess", "DrNykterstein")
            assert isinstance(account["id"], int) and isinstance(account["player_id"], int)
            assert account["username_key"] == "drnykterstein" and account["ratings"] == {}
            again = await players.ensure_account(db, "lichess", "drnykterstein")
            assert again["id"] == account["id"]
            body = bytes(range(256))
            await upstream_responses.put(db, "chesscom", "/pub/player/x", body, 'W/"1"', None, 1700000000)
            stored = await upstream_responses.get(db, "chesscom", "/pub/player/x")
            assert stored is not None and stored.body == body and stored.checked_at == 1700000000.0
            snap = await players.insert_snapshot(db, "lichess", "blitz", T0, b"[]")
            assert snap > 0 and await players.count_snapshots(db, "lichess") == 1
            row = await db.fetchone("SELECT id, username FROM player_accounts WHERE id = ?", (account["id"],))
            assert row[0] == row["id"] == account["id"] and dict(row)["username"] == "DrNykterstein"
            assert tuple(row) == (account["id"], "DrNykterstein")
            assert await db.fetchval("SELECT sum(id) FROM player_accounts") == account["id"]  # an int, not Decimal
            assert await db.size_bytes() > 1_000_000  # pg_database_size
            assert db.path == redact(url)

    asyncio.run(run())


def test_a_lost_server_connection_is_503_then_recovers_without_restart() -> None:
    url = pg_server().new_database()

    async def run() -> None:
        async with PostgresDatabase(url, pool_size=2) as db:
            await jobs.set_last_tick(db, "a", T0, T0)
            _terminate(url)
            with pytest.raises(StorageUnavailable) as caught:
                await jobs.set_last_tick(db, "b", T0, T0)
            assert caught.value.status == 503 and caught.value.code == "storage_unavailable"
            assert db.storage_error == "unreachable" and db.storage_error_at is not None
            assert not db._write_lock.locked()
            await jobs.set_last_tick(db, "b", T0, T0)  # the pool reconnects
            assert db.storage_error is None
            assert await jobs.last_ticks(db) == {"a": jobs.iso_ms(T0), "b": jobs.iso_ms(T0)}

    asyncio.run(run())


def test_a_read_only_database_is_503_and_the_health_probe_sees_it() -> None:
    url = pg_server().new_database()
    name = _dbname(url)

    async def run() -> None:
        async with PostgresDatabase(url, pool_size=2) as db:
            assert await db.probe_write() is True
            pg_server().execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
            _terminate(url)
            for _ in range(2):  # the first use may meet a connection that was cut
                try:
                    await db.execute_write("INSERT INTO scheduler_jobs VALUES ('a', 'x', 'y')")
                except StorageUnavailable as exc:
                    last = exc
            assert "read-only" in last.message and db.storage_error == "read-only"
            assert await db.probe_write() is False
            pg_server().execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
            _terminate(url)
            probes = [await db.probe_write() for _ in range(3)]  # cut connections first, maybe
            assert probes[-1] is True and db.storage_error is None and None not in probes
            async with db.transaction():
                assert await db.probe_write() is None  # never waits behind a write of this process
            assert await db.fetchval("SELECT count(*) FROM scheduler_jobs") == 0  # nothing half-written

    asyncio.run(run())


def test_one_transaction_per_import_rolls_back_whole() -> None:
    url = pg_server().new_database()

    async def run() -> None:
        async with PostgresDatabase(url) as db:
            with pytest.raises(RuntimeError):
                async with db.transaction() as conn:
                    await conn.execute("INSERT INTO scheduler_jobs VALUES ('a', 'x', 'y')")
                    raise RuntimeError("boom")
            assert await db.fetchval("SELECT count(*) FROM scheduler_jobs") == 0
            cursor = None
            async with db.transaction() as conn:
                cursor = await conn.execute("UPDATE scheduler_jobs SET last_tick = 'z'")
            assert cursor.rowcount == 0 and cursor.lastrowid is None

    asyncio.run(run())


#: Plain SQLite DDL and DML a future migration may use (not today's migrations).
FUTURE_MIGRATION = (
    "CREATE TABLE IF NOT EXISTS cache_meta (key TEXT PRIMARY KEY, value BLOB, expires_at INTEGER NOT NULL DEFAULT 0, "
    "hits INTEGER NOT NULL DEFAULT 0 CHECK (hits >= 0)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS cache_meta_exp ON cache_meta (expires_at)",
    "CREATE TABLE ev (id INTEGER PRIMARY KEY AUTOINCREMENT, at_ms INTEGER NOT NULL, kind TEXT NOT NULL COLLATE BINARY, "
    "payload TEXT, score REAL DEFAULT 0.0, FOREIGN KEY (kind) REFERENCES cache_meta (key) ON DELETE CASCADE)",
    "ALTER TABLE ev ADD COLUMN note TEXT DEFAULT ''",
    "ALTER TABLE ev RENAME COLUMN note TO remark",
    "CREATE UNIQUE INDEX ev_kind ON ev (kind, at_ms) WHERE payload IS NOT NULL",
    "INSERT OR IGNORE INTO cache_meta (key, value, expires_at) VALUES ('k', X'00ff', 1700000000000)",
    "INSERT INTO ev (at_ms, kind) SELECT expires_at, key FROM cache_meta",
    "UPDATE ev SET score = score + 1.5 WHERE kind IN (SELECT key FROM cache_meta)",
    "CREATE TABLE ev2 AS SELECT * FROM ev",
    "DROP TABLE ev2",
    "DROP INDEX IF EXISTS ev_kind",
    "ALTER TABLE ev RENAME TO events",
    "PRAGMA foreign_keys = OFF",
    "DELETE FROM events WHERE at_ms < 5",
)


def test_plain_sqlite_ddl_of_a_future_migration_runs_on_postgresql() -> None:
    url = pg_server().new_database()

    async def run() -> None:
        async with PostgresDatabase(url) as db:
            async with db.transaction() as conn:
                for statement in FUTURE_MIGRATION:
                    await conn.execute(statement)
            row = await db.fetchone("SELECT at_ms, kind, score, remark FROM events")
            assert tuple(row) == (1700000000000, "k", 1.5, "")
            assert bytes(await db.fetchval("SELECT value FROM cache_meta")) == b"\x00\xff"

    asyncio.run(run())
