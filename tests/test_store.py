"""The SQLite store on a real file: migrations and all-or-nothing imports."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from chessstats.models import Standing
from chessstats.store import Database
from chessstats.store import tournaments as store
from chessstats.upstream.lichess import _arena_decoder, arena_to_model
from chessstats.upstream.pgn import parse_pgn_games
from tests.replay import FIXTURES

LICHESS = FIXTURES / "lichess"


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
        async with Database(tmp_path / "x.db") as db:
            with pytest.raises(sqlite3.IntegrityError):
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
