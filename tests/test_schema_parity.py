"""Every migration on both engines gives the same schema: tables, columns (type, NOT NULL), primary
keys, unique constraints and indexes (columns or expressions, order, unique, partial). Runs on every
test run (SQLite and PostgreSQL side by side), so the translated schema cannot drift."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from chessstats.store import Database
from chessstats.store.migrations import MIGRATIONS
from chessstats.store.postgres import PostgresDatabase
from tests.pg_store import pg_server

#: SQLite declared type → the PostgreSQL type the translation must give.
TYPES = {"INTEGER": "bigint", "TEXT": "text", "BLOB": "bytea", "REAL": "double precision"}


def sqlite_schema(path: Path) -> dict[str, Any]:
    conn = sqlite3.connect(path)
    try:
        tables = sorted(r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"))
        out: dict[str, Any] = {}
        for t in tables:
            info = list(conn.execute(f"PRAGMA table_info({t})"))
            cols = [(r[1], TYPES[r[2].upper()], bool(r[3]) or r[5] > 0) for r in info]
            pk = tuple(r[1] for r in sorted((r for r in conn.execute(f"PRAGMA table_info({t})") if r[5]),
                                              key=lambda r: r[5]))
            uniques, indexes = set(), {}
            for _, name, unique, origin, partial in conn.execute(f"PRAGMA index_list({t})"):
                keys = [r for r in conn.execute(f"PRAGMA index_xinfo({name})") if r[5]]  # key columns only
                columns = tuple((r[2] if r[2] is not None else "expr", bool(r[3])) for r in keys)
                if origin == "u":
                    uniques.add(tuple(c for c, _ in columns))
                elif origin == "c":
                    indexes[name] = (bool(unique), columns, bool(partial))
            out[t] = {"columns": cols, "pk": pk, "uniques": uniques, "indexes": indexes}
        return out
    finally:
        conn.close()


async def postgres_schema(url: str) -> dict[str, Any]:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        tables = sorted(r[0] for r in await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))
        out: dict[str, Any] = {}
        for t in tables:
            cols = [(r["column_name"], r["data_type"], r["is_nullable"] == "NO") for r in await conn.fetch(
                "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
                "WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position", t)]
            names = {c for c, _, _ in cols}
            pk: tuple[str, ...] = ()
            uniques, indexes = set(), {}
            rows = await conn.fetch(
                "SELECT c.relname AS name, i.indisunique, i.indisprimary, i.indpred IS NOT NULL AS partial, "
                "i.indnkeyatts AS n, i.indoption::int2[] AS options, "
                "EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid) AS constraint_backed "
                "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE i.indrelid = $1::regclass", t)
            for r in rows:
                columns = []
                for k in range(1, r["n"] + 1):
                    text = await conn.fetchval("SELECT pg_get_indexdef($1::regclass, $2, true)", r["name"], k)
                    text = text.strip('"')  # a keyword column comes quoted ("position")
                    columns.append((text if text in names else "expr", bool(r["options"][k - 1] & 1)))
                if r["indisprimary"]:
                    pk = tuple(c for c, _ in columns)
                elif r["constraint_backed"]:
                    uniques.add(tuple(c for c, _ in columns))
                else:
                    indexes[r["name"]] = (r["indisunique"], tuple(columns), r["partial"])
            out[t] = {"columns": cols, "pk": pk, "uniques": uniques, "indexes": indexes}
        # text compares in byte order, like SQLite's BINARY collation, whatever the database's locale
        collations = {r[0] for r in await conn.fetch(
            "SELECT DISTINCT collation_name FROM information_schema.columns "
            "WHERE table_schema = 'public' AND data_type = 'text'")}
        assert collations == {"C"}
        return out
    finally:
        await conn.close()


def test_every_migration_gives_the_same_schema_on_both_engines(tmp_path: Path) -> None:
    url = pg_server().new_database()

    async def run() -> dict[str, Any]:
        async with Database(tmp_path / "x.db") as sqlite_db, PostgresDatabase(url) as pg_db:
            assert [v for v, _, _ in await sqlite_db.migration_status()] == [v for v, _, _ in MIGRATIONS]
            assert await pg_db.migration_status() != [] and all(at for _, _, at in await pg_db.migration_status())
        return await postgres_schema(url)

    pg = asyncio.run(run())
    lite = sqlite_schema(tmp_path / "x.db")
    assert sorted(lite) == sorted(pg)
    for table in lite:
        assert lite[table] == pg[table], table
    # the comparison sees what matters: the translated identity keys, expression and partial indexes
    assert lite["tournaments"]["pk"] == ("id",) and ("platform", "external_id") in lite["tournaments"]["uniques"]
    assert lite["games"]["indexes"]["games_white"][1][1] == ("expr", False)
    assert lite["job_runs"]["indexes"]["job_runs_tick"] == (True, (("job", False), ("scheduled_for", False)), True)
