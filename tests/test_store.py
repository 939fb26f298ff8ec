"""The store on a real SQLite file (or, with ``TEST_STORE=postgresql``, a real PostgreSQL
database): migrations and all-or-nothing imports; SQLite's own storage faults."""

from __future__ import annotations

import asyncio
import errno
import sqlite3
import time
from pathlib import Path

import pytest

from chessstats.errors import StorageUnavailable
from chessstats.models import Standing
from chessstats.store import Database
from chessstats.store import tournaments as store
from chessstats.store.db import storage_reason
from chessstats.upstream.lichess import _arena_decoder, arena_to_model
from chessstats.upstream.pgn import parse_pgn_games
from tests.fsfault import fill, open_fds, tmpfs
from tests.pg_store import integrity_errors, store_db
from tests.replay import FIXTURES

LICHESS = FIXTURES / "lichess"


def test_migrations_recorded_once(tmp_path: Path) -> None:
    async def run() -> None:
        async with store_db(tmp_path) as db:
            assert await db.migrate() == []  # already applied by open()
            status = await db.migration_status()
            assert status[0][:2] == (1, "initial") and all(at is not None for _, _, at in status)
            assert await db.fetchval("SELECT count(*) FROM schema_migrations") == len(status)
            for table in ("tournaments", "standings", "games", "players", "player_accounts", "rating_points",
                          "top_player_snapshots", "job_runs", "scheduler_jobs", "imports", "upstream_responses"):
                assert await db.fetchval(f"SELECT count(*) FROM {table}") == 0
            assert await db.size_bytes() > 0
    asyncio.run(run())


@pytest.mark.sqlite_only
def test_migrations_recorded_once_and_pragmas(tmp_path: Path) -> None:
    async def run() -> None:
        async with Database(tmp_path / "x.db") as db:
            assert await db.migrate() == []  # already applied by open()
            assert await db.fetchval("PRAGMA journal_mode") == "wal"
            assert await db.fetchval("PRAGMA foreign_keys") == 1
            status = await db.migration_status()
            assert status[0][:2] == (1, "initial") and status[0][2] is not None
    asyncio.run(run())
    tables = {r[0] for r in sqlite3.connect(tmp_path / "x.db").execute("SELECT name FROM sqlite_master")}
    assert {"tournaments", "standings", "games", "players", "player_accounts", "rating_points",
            "top_player_snapshots", "job_runs", "schema_migrations"} <= tables


def test_import_is_all_or_nothing(tmp_path: Path) -> None:
    arena = arena_to_model(_arena_decoder.decode((LICHESS / "tournament_sH24g2zH.json").read_bytes()), "x")
    games, _ = parse_pgn_games((LICHESS / "tournament_sH24g2zH_games.pgn").read_text(encoding="utf-8"))
    good = [Standing(rank=1, username="Poblesk", score=63)]
    bad = [*good, Standing(rank=2, username=None, score=1)]  # type: ignore[arg-type]  # NOT NULL violated

    async def run() -> None:
        async with store_db(tmp_path) as db:
            with pytest.raises(integrity_errors()):
                await store.import_tournament(db, arena, b"{}", bad, games, "2026-01-01T00:00:00Z")
            assert await db.fetchval("SELECT count(*) FROM tournaments") == 0
            assert await db.fetchval("SELECT count(*) FROM games") == 0
            pk = await store.import_tournament(db, arena, b"{}", good, games, "2026-01-01T00:00:00Z")
            assert await db.fetchval("SELECT count(*) FROM games WHERE tournament_id = ?", (pk,)) == 1463
            again = await store.import_tournament(db, arena, b"{}", good, games[:10], "2026-01-01T00:00:00Z")
            assert again == pk and await db.fetchval("SELECT count(*) FROM games") == 10
            stored = await store.get_tournament(db, "lichess", "sH24g2zH")
            assert stored is not None and stored.imported_at is not None
            # a discovery upsert never overwrites an imported tournament
            changed = arena.__class__(**{**{f: getattr(arena, f) for f in arena.__struct_fields__},
                                         "status": "ongoing"})
            await store.upsert_tournaments(db, [(changed, None)], "2026-02-01T00:00:00Z")
            after = await store.get_tournament(db, "lichess", "sH24g2zH")
            assert after is not None and after.tournament.status == "finished"
    asyncio.run(run())


def test_import_written_in_batches_is_still_all_or_nothing(tmp_path: Path) -> None:
    """Standings and games go in batches of WRITE_BATCH_ROWS with loop turns between them, inside the one
    transaction: a row that fails in a late batch leaves nothing of the import (not the earlier batches,
    not the tournament row), and a concurrent reader never sees a partial import."""
    import msgspec

    arena = arena_to_model(_arena_decoder.decode((LICHESS / "tournament_sH24g2zH.json").read_bytes()), "x")
    games, _ = parse_pgn_games((LICHESS / "tournament_sH24g2zH_games.pgn").read_text(encoding="utf-8"))
    standings = [Standing(rank=i + 1, username=f"p{i}", score=1) for i in range(3 * store.WRITE_BATCH_ROWS + 7)]
    late = 4 * store.WRITE_BATCH_ROWS + 3
    assert late < len(games)
    bad_games = list(games)
    bad_games[late] = type(games[late])(msgspec.structs.replace(games[late].game, id=None), games[late].pgn)

    async def run() -> None:
        async with Database(tmp_path / "x.db") as db:
            seen: list[int] = []
            stop = asyncio.Event()

            async def reader() -> None:  # runs in the loop turns the batches leave
                while not stop.is_set():
                    seen.append(await db.fetchval("SELECT count(*) FROM games"))
                    await asyncio.sleep(0)

            task = asyncio.create_task(reader())
            with pytest.raises(sqlite3.IntegrityError):
                await store.import_tournament(db, arena, b"{}", standings, bad_games, "2026-01-01T00:00:00Z")
            for table in ("tournaments", "standings", "games"):
                assert await db.fetchval(f"SELECT count(*) FROM {table}") == 0, table
            pk = await store.import_tournament(db, arena, b"{}", standings, games, "2026-01-01T00:00:00Z")
            stop.set()
            await task
            assert await db.fetchval("SELECT count(*) FROM standings WHERE tournament_id = ?", (pk,)) == len(standings)
            positions = await db.fetchall("SELECT position, username FROM standings ORDER BY position")
            assert [(r[0], r[1]) for r in positions] == [(i, f"p{i}") for i in range(len(standings))]
            assert await db.fetchval("SELECT count(*) FROM games WHERE tournament_id = ?", (pk,)) == 1463
            # the reader ran between the batches and only ever saw nothing or the whole import
            assert len(seen) > 2 and seen[0] == 0 and set(seen) <= {0, 1463}
    asyncio.run(run())


# --- storage faults ------------------------------------------------------------------------------


def test_storage_reason_mapping() -> None:
    full = sqlite3.OperationalError("database or disk is full")
    assert storage_reason(full) == "disk full"
    assert storage_reason(sqlite3.OperationalError("attempt to write a readonly database")) == "read-only"
    assert storage_reason(sqlite3.OperationalError("disk I/O error")) == "I/O error"
    assert storage_reason(OSError(errno.ENOSPC, "No space left on device")) == "disk full"
    assert storage_reason(OSError(errno.EROFS, "Read-only file system")) == "read-only"
    assert storage_reason(sqlite3.OperationalError("database is locked")) is None
    assert storage_reason(sqlite3.IntegrityError("NOT NULL constraint failed")) is None
    assert storage_reason(ValueError("x")) is None


def _can_take_write_lock(path: Path) -> bool:
    conn = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()


@pytest.mark.sqlite_only
def test_full_disk_rolls_back_maps_to_503_and_recovers(tmp_path: Path) -> None:
    arena = arena_to_model(_arena_decoder.decode((LICHESS / "tournament_sH24g2zH.json").read_bytes()), "x")
    games, _ = parse_pgn_games((LICHESS / "tournament_sH24g2zH_games.pgn").read_text(encoding="utf-8"))
    standings = [Standing(rank=1, username="Poblesk", score=63)]

    async def run(mnt: Path) -> None:
        async with Database(mnt / "x.db") as db:
            filler = fill(mnt)
            with pytest.raises(StorageUnavailable) as caught:
                await store.import_tournament(db, arena, b"{}", standings, games, "2026-01-01T00:00:00Z")
            assert caught.value.status == 503 and caught.value.code == "storage_unavailable"
            assert caught.value.retry_after_s > 0 and "disk full" in caught.value.message
            assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
            assert db.storage_error == "disk full" and db.storage_error_at is not None
            assert not db._write_lock.locked() and not db._writer.in_transaction  # type: ignore[union-attr]
            assert _can_take_write_lock(mnt / "x.db")  # no SQLite write lock left behind
            assert await db.fetchval("SELECT count(*) FROM tournaments") == 0  # nothing half-written
            assert await db.fetchval("SELECT count(*) FROM games") == 0
            fds = open_fds()
            for _ in range(3):
                with pytest.raises(StorageUnavailable):
                    await store.import_tournament(db, arena, b"{}", standings, games, "2026-01-01T00:00:00Z")
            assert open_fds() <= fds  # no descriptor leaks per failure
            filler.unlink()  # space comes back: the same write succeeds, no reopen
            started = time.perf_counter()
            pk = await store.import_tournament(db, arena, b"{}", standings, games, "2026-01-01T00:00:00Z")
            assert time.perf_counter() - started < 30
            assert await db.fetchval("SELECT count(*) FROM games WHERE tournament_id = ?", (pk,)) == 1463
            assert db.storage_error is None and db.storage_error_at is None

    with tmpfs(tmp_path / "mnt", "16m") as mnt:
        asyncio.run(run(mnt))


def _fail_rollback(writer: object) -> None:
    """Make ROLLBACK on ``writer`` (an aiosqlite connection) fail like a broken disk would."""
    real_execute = writer.execute  # type: ignore[attr-defined]

    async def execute(sql: str, *args: object) -> object:
        if sql == "ROLLBACK":
            raise sqlite3.OperationalError("disk I/O error")
        return await real_execute(sql, *args)

    writer.execute = execute  # type: ignore[attr-defined]


@pytest.mark.sqlite_only
def test_failed_rollback_never_leaks_the_write_lock(tmp_path: Path) -> None:
    async def run() -> None:
        async with Database(tmp_path / "x.db") as db:
            writer = db._writer
            _fail_rollback(writer)
            with pytest.raises(StorageUnavailable):
                async with db.transaction() as conn:
                    await conn.execute("INSERT INTO scheduler_jobs VALUES ('a', 'x', 'y')")
                    raise sqlite3.OperationalError("database or disk is full")
            assert db.storage_error == "disk full"
            assert not db._write_lock.locked()
            assert _can_take_write_lock(tmp_path / "x.db")  # the stuck connection was closed
            async with db.transaction() as conn:  # a new writer connection
                assert conn is not writer
                await conn.execute("INSERT INTO scheduler_jobs VALUES ('b', 'x', 'y')")
            assert await db.fetchval("SELECT group_concat(job) FROM scheduler_jobs") == "b"
            assert db.storage_error is None
            # any other error is re-raised unchanged, also when the rollback fails
            _fail_rollback(db._writer)
            with pytest.raises(sqlite3.IntegrityError):
                async with db.transaction() as conn:
                    await conn.execute("INSERT INTO scheduler_jobs VALUES ('c', 'x', 'y')")
                    await conn.execute("INSERT INTO scheduler_jobs VALUES ('b', 'x', 'y')")
            assert db.storage_error is None and _can_take_write_lock(tmp_path / "x.db")
            assert await db.fetchval("SELECT group_concat(job) FROM scheduler_jobs") == "b"
            await db.execute_write("INSERT INTO scheduler_jobs VALUES ('d', 'x', 'y')")
    asyncio.run(run())


@pytest.mark.sqlite_only
def test_read_only_write_and_health_probe(tmp_path: Path) -> None:
    async def run() -> None:
        async with Database(tmp_path / "x.db") as db:
            assert await db.probe_write() is True
            await db._writer.execute("PRAGMA query_only = 1")  # type: ignore[union-attr]
            with pytest.raises(StorageUnavailable, match="read-only"):
                await db.execute_write("INSERT INTO scheduler_jobs VALUES ('a', 'x', 'y')")
            assert db.storage_error == "read-only"
            assert await db.probe_write() is False
            await db._writer.execute("PRAGMA query_only = 0")  # type: ignore[union-attr]
            assert await db.probe_write() is True and db.storage_error is None
            wal = Path(str(db.path) + "-wal")
            size = wal.stat().st_size
            assert await db.probe_write() is True and wal.stat().st_size > size  # a real write
            assert await db.fetchval("PRAGMA user_version") == 0  # unchanged
            async with db.transaction():
                assert await db.probe_write() is None  # never waits behind a write
            assert await db.fetchval("PRAGMA busy_timeout") == 5000
    asyncio.run(run())
