"""Players, their platform accounts and leaderboard snapshots in SQLite.

A *player* is a person (``players``: name, FIDE ID, federation, title); an *account* is their
presence on one platform (``player_accounts``: ``lichess`` username, ``fide`` ID …) with its
ratings per perf as a JSON object ``{perf: {"rating": int|None, "progress": int|None, …}}``.
Writes merge: a perf missing from an update keeps its stored rating; a None title keeps the
stored title.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import msgspec

from chessstats.models.common import now_iso
from chessstats.models.player import FidePlayer, LichessAccount
from chessstats.store.db import Database
from chessstats.store.jobs import iso_ms

_json_encode = msgspec.json.encode
_json_decode = msgspec.json.decode


def _merge_ratings(stored: bytes | None, new: dict[str, dict[str, Any]]) -> bytes:
    current: dict[str, Any] = _json_decode(stored) if stored else {}
    current.update(new)
    return _json_encode(current)


async def upsert_fide_players(db: Database, players: Sequence[FidePlayer]) -> int:
    """Insert or update FIDE players and their ``fide`` accounts (one transaction); returns the count."""
    now = now_iso()
    async with db.transaction() as conn:
        for p in players:
            await conn.execute(
                "INSERT INTO players (name, fide_id, federation, title, birth_year, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (fide_id) DO UPDATE SET name = excluded.name, "
                "federation = coalesce(excluded.federation, federation), title = coalesce(excluded.title, title), "
                "birth_year = coalesce(excluded.birth_year, birth_year), updated_at = excluded.updated_at",
                (p.name, p.fide_id, p.federation, p.title, p.birth_year, now, now))
            rows = await conn.execute_fetchall("SELECT id FROM players WHERE fide_id = ?", (p.fide_id,))
            player_id = int(next(iter(rows))[0])
            key = str(p.fide_id)
            old = await conn.execute_fetchall(
                "SELECT ratings FROM player_accounts WHERE platform = 'fide' AND username_key = ?", (key,))
            stored = next(iter(old))[0] if old else None
            ratings = _merge_ratings(stored, {k: {"rating": v} for k, v in p.ratings.items()})
            await conn.execute(
                "INSERT INTO player_accounts (player_id, platform, username, username_key, name, title, country, "
                "ratings, url, fetched_at) VALUES (?, 'fide', ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (platform, username_key) DO UPDATE SET player_id = excluded.player_id, "
                "name = excluded.name, title = coalesce(excluded.title, title), "
                "country = coalesce(excluded.country, country), ratings = excluded.ratings, "
                "fetched_at = excluded.fetched_at",
                (player_id, key, key, p.name, p.title, p.federation, ratings,
                 f"https://ratings.fide.com/profile/{p.fide_id}", now))
    return len(players)


async def upsert_lichess_accounts(db: Database, accounts: Sequence[LichessAccount]) -> int:
    """Insert or update Lichess accounts (a player row is created for a new account), merging
    ratings per perf; one transaction. Returns the count."""
    now = now_iso()
    async with db.transaction() as conn:
        for a in accounts:
            key = a.username.lower()
            old = await conn.execute_fetchall(
                "SELECT id, player_id, ratings FROM player_accounts WHERE platform = 'lichess' AND username_key = ?",
                (key,))
            row = next(iter(old), None)
            ratings = _merge_ratings(row[2] if row else None, a.ratings)
            if row is None:
                cursor = await conn.execute(
                    "INSERT INTO players (name, title, created_at, updated_at) VALUES (NULL, ?, ?, ?)",
                    (a.title, now, now))
                await conn.execute(
                    "INSERT INTO player_accounts (player_id, platform, username, username_key, title, ratings, "
                    "url, fetched_at) VALUES (?, 'lichess', ?, ?, ?, ?, ?, ?)",
                    (cursor.lastrowid, a.username, key, a.title, ratings, f"https://lichess.org/@/{a.username}", now))
            else:
                await conn.execute(
                    "UPDATE player_accounts SET username = ?, title = coalesce(?, title), ratings = ?, fetched_at = ? "
                    "WHERE id = ?", (a.username, a.title, ratings, now, row[0]))
    return len(accounts)


async def get_account(db: Database, platform: str, username: str) -> dict[str, Any] | None:
    """A stored account as a dict (``ratings`` decoded), joined with its player; None if absent."""
    row = await db.fetchone(
        "SELECT a.*, p.fide_id AS player_fide_id, p.federation AS player_federation, p.name AS player_name "
        "FROM player_accounts a LEFT JOIN players p ON p.id = a.player_id "
        "WHERE a.platform = ? AND a.username_key = ?", (platform, username.lower()))
    if row is None:
        return None
    out = dict(row)
    out["ratings"] = _json_decode(row["ratings"]) if row["ratings"] else {}
    return out


async def insert_snapshot(db: Database, platform: str, perf_type: str, taken_at: datetime, entries: bytes) -> int:
    """Store one leaderboard snapshot (``entries``: encoded JSON list); returns its id."""
    return await db.execute_write(
        "INSERT INTO top_player_snapshots (platform, perf_type, taken_at, entries) VALUES (?, ?, ?, ?)",
        (platform, perf_type, iso_ms(taken_at), entries))


async def delete_snapshots_before(db: Database, now: datetime, days: int) -> int:
    """Delete snapshots taken more than ``days`` days before ``now``; returns how many went."""
    async with db.transaction() as conn:
        cursor = await conn.execute(
            "DELETE FROM top_player_snapshots WHERE taken_at < ?", (iso_ms(now - timedelta(days=days)),))
        return cursor.rowcount


async def count_snapshots(db: Database, platform: str | None = None) -> int:
    """How many snapshots are stored (of one platform, or all)."""
    if platform is None:
        return int(await db.fetchval("SELECT count(*) FROM top_player_snapshots") or 0)
    return int(await db.fetchval("SELECT count(*) FROM top_player_snapshots WHERE platform = ?", (platform,)) or 0)
