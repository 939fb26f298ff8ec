"""Players, their platform accounts and leaderboard snapshots in SQLite.

A *player* is a person (``players``: name, FIDE ID, federation, title); an *account* is their
presence on one platform (``player_accounts``: ``lichess`` username, ``fide`` ID …) with its
ratings per perf as a JSON object ``{perf: {"rating": int|None, "progress": int|None, …}}``.
Writes merge: a perf missing from an update keeps its stored rating; a None title keeps the
stored title.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import msgspec

from chessstats.models.common import now_iso
from chessstats.models.player import FidePlayer, LichessAccount, LichessUser
from chessstats.store.db import Database
from chessstats.store.jobs import iso_ms

log = logging.getLogger(__name__)

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
                "INSERT INTO players (name, fide_id, federation, title, birth_year, sex, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (fide_id) DO UPDATE SET name = excluded.name, "
                "federation = coalesce(excluded.federation, federation), title = coalesce(excluded.title, title), "
                "birth_year = coalesce(excluded.birth_year, birth_year), sex = coalesce(excluded.sex, sex), "
                "updated_at = excluded.updated_at",
                (p.name, p.fide_id, p.federation, p.title, p.birth_year, p.sex, now, now))
            rows = await conn.execute_fetchall("SELECT id FROM players WHERE fide_id = ?", (p.fide_id,))
            player_id = int(next(iter(rows))[0])
            key = str(p.fide_id)
            old = await conn.execute_fetchall(
                "SELECT ratings FROM player_accounts WHERE platform = 'fide' AND username_key = ?", (key,))
            stored = next(iter(old))[0] if old else None
            ratings = _merge_ratings(stored, {k: {"rating": v} for k, v in p.ratings.items()})
            await conn.execute(
                "INSERT INTO player_accounts (player_id, platform, username, username_key, name, title, country, "
                "ratings, url, fetched_at, source, inactive) VALUES (?, 'fide', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (platform, username_key) DO UPDATE SET player_id = excluded.player_id, "
                "name = excluded.name, title = coalesce(excluded.title, title), "
                "country = coalesce(excluded.country, country), ratings = excluded.ratings, "
                "fetched_at = excluded.fetched_at, source = excluded.source, "
                "inactive = coalesce(excluded.inactive, inactive)",
                (player_id, key, key, p.name, p.title, p.federation, ratings,
                 f"https://ratings.fide.com/profile/{p.fide_id}", now, p.source,
                 None if p.inactive is None else int(p.inactive)))
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
        "SELECT a.*, p.fide_id AS player_fide_id, p.federation AS player_federation, p.name AS player_name, "
        "p.birth_year AS player_birth_year, p.sex AS player_sex "
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


async def upsert_lichess_profile(db: Database, user: LichessUser, platform: str = "lichess") -> dict[str, Any]:
    """Insert or update a Lichess (or, with ``platform="chesscom"``, a Chess.com) account from its
    profile (``status`` included: a closed account stays stored as ``closed``); a player row is created
    for a new account. Ratings replace the stored ones per perf. Returns the stored account (:func:`get_account`)."""
    now = now_iso()
    key = user.username.lower()
    async with db.transaction() as conn:
        old = await conn.execute_fetchall(
            "SELECT id, ratings FROM player_accounts WHERE platform = ? AND username_key = ?", (platform, key))
        row = next(iter(old), None)
        ratings = _merge_ratings(row[1] if row else None, user.ratings)
        values = (user.username, user.name, user.title, user.country, user.status, ratings, user.created_at,
                  user.seen_at, user.url, user.raw or None, now)
        if row is None:
            cursor = await conn.execute(
                "INSERT INTO players (name, title, created_at, updated_at) VALUES (?, ?, ?, ?)",
                (user.name, user.title, now, now))
            await conn.execute(
                "INSERT INTO player_accounts (player_id, username_key, platform, username, name, title, country, "
                "status, ratings, upstream_created_at, seen_at, url, raw, fetched_at, source) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (cursor.lastrowid, key, platform, *values, platform))
        else:
            await conn.execute(
                "UPDATE player_accounts SET username = ?, name = ?, title = ?, country = ?, status = ?, ratings = ?, "
                "upstream_created_at = ?, seen_at = ?, url = ?, raw = ?, fetched_at = ?, source = ? "
                "WHERE id = ?", (*values, platform, row[0]))
    account = await get_account(db, platform, key)
    assert account is not None
    return account


async def replace_rating_history(db: Database, account_id: int, series: Sequence[dict[str, Any]],
                                 source: str) -> None:
    """Replace an account's rating history (``[{"perfType", "points": [{"date", "rating"}]}]``; one
    point per perf and date, the last one of a day wins) from upstream ``source`` and record when
    it was fetched."""
    async with db.transaction() as conn:
        await conn.execute("DELETE FROM rating_points WHERE account_id = ?", (account_id,))
        rows = {(s["perfType"], p["date"]): p["rating"] for s in series for p in s["points"]}
        await conn.executemany(
            "INSERT INTO rating_points (account_id, perf_type, date, rating, source) VALUES (?, ?, ?, ?, ?)",
            [(account_id, perf, day, rating, source) for (perf, day), rating in rows.items()])
        perfs = _json_encode([s["perfType"] for s in series])
        await conn.execute("UPDATE player_accounts SET history_fetched_at = ?, history_perfs = ? WHERE id = ?",
                           (now_iso(), perfs, account_id))


async def rating_history(db: Database, account_id: int, perf_order: Sequence[str] = (), *,
                         with_source: bool = False) -> list[dict[str, Any]]:
    """An account's stored rating history: ``[{"perfType", "points": [{"date", "rating"}]}]``, points
    oldest first; perfs in the order last fetched (each one present even when empty), then any other.
    ``with_source`` adds each series' ``source`` (the upstream its points came from)."""
    if not perf_order:
        stored = await db.fetchval("SELECT history_perfs FROM player_accounts WHERE id = ?", (account_id,))
        perf_order = _json_decode(stored) if stored else ()
    rows = await db.fetchall(
        "SELECT perf_type, date, rating, source FROM rating_points WHERE account_id = ? ORDER BY perf_type, date",
        (account_id,))
    series: dict[str, list[dict[str, Any]]] = {perf: [] for perf in perf_order}
    sources: dict[str, str] = {}
    for r in rows:
        series.setdefault(r["perf_type"], []).append({"date": r["date"], "rating": r["rating"]})
        sources[r["perf_type"]] = r["source"]
    if with_source:
        fallback = next(iter(sources.values()), None)
        return [{"perfType": perf, "points": points, "source": sources.get(perf, fallback)}
                for perf, points in series.items()]
    return [{"perfType": perf, "points": points} for perf, points in series.items()]


async def latest_snapshot(db: Database, platform: str, perf_type: str) -> tuple[str, bytes] | None:
    """``(taken_at ISO, entries JSON)`` of the latest leaderboard snapshot of a perf; None if none."""
    row = await db.fetchone(
        "SELECT taken_at, entries FROM top_player_snapshots WHERE platform = ? AND perf_type = ? "
        "ORDER BY taken_at DESC LIMIT 1", (platform, perf_type))
    return None if row is None else (row["taken_at"], bytes(row["entries"]))


async def get_player(db: Database, player_id: int) -> dict[str, Any] | None:
    """A stored player (``players`` row as a dict) with ``accounts``: every linked account (ratings
    decoded), Lichess, Chess.com and FIDE; None when no such player (an id outside SQLite's integer range,
    1..2**63-1, included: no query is made)."""
    if not 0 < player_id < 2**63:
        return None
    row = await db.fetchone("SELECT * FROM players WHERE id = ?", (player_id,))
    if row is None:
        return None
    out = dict(row)
    accounts = await db.fetchall(
        "SELECT * FROM player_accounts WHERE player_id = ? ORDER BY platform, username_key", (player_id,))
    out["accounts"] = []
    for a in accounts:
        account = dict(a)
        account.pop("raw", None)
        account["ratings"] = _json_decode(a["ratings"]) if a["ratings"] else {}
        out["accounts"].append(account)
    return out


class LinkConflict(Exception):
    """A link that conflicts with an existing one: ``existing`` and ``requested`` describe both."""

    def __init__(self, message: str, existing: dict[str, Any], requested: dict[str, Any]) -> None:
        super().__init__(message)
        self.existing = existing
        self.requested = requested


async def link_account(db: Database, player_id: int, platform: str, username: str) -> int | None:
    """Link the stored account ``platform``/``username`` to player ``player_id`` (one transaction).

    An account whose current player holds nothing else (the row made when the account was first
    stored) moves, and that empty player goes (its FIDE id, name, federation, title and birth year
    fill what the target lacks). Returns the player the account moved from (None when it was not
    linked, or already linked to ``player_id``).

    Raises:
        LookupError: no such player or account.
        LinkConflict: the account is linked to another player that holds other accounts, or the
            player already has another account on that platform.
    """
    key = username.lower()
    if not 0 < player_id < 2**63:  # outside SQLite's integer range: no such player, no query
        raise LookupError(f"no player {player_id}")
    async with db.transaction() as conn:
        target = next(iter(await conn.execute_fetchall("SELECT id FROM players WHERE id = ?", (player_id,))), None)
        if target is None:
            raise LookupError(f"no player {player_id}")
        rows = await conn.execute_fetchall(
            "SELECT id, player_id, username FROM player_accounts WHERE platform = ? AND username_key = ?",
            (platform, key))
        account = next(iter(rows), None)
        if account is None:
            raise LookupError(f"no stored {platform} account {username!r}")
        account_id, current, spelled = account[0], account[1], account[2]
        requested = {"playerId": player_id, "platform": platform, "account": spelled}
        if current == player_id:
            return None
        same = await conn.execute_fetchall(
            "SELECT username FROM player_accounts WHERE player_id = ? AND platform = ? AND id != ?",
            (player_id, platform, account_id))
        other = next(iter(same), None)
        if other is not None:
            raise LinkConflict(f"player {player_id} already has the {platform} account {other[0]!r}",
                               {"playerId": player_id, "platform": platform, "account": other[0]}, requested)
        if current is not None:
            others = await conn.execute_fetchall(
                "SELECT count(*) FROM player_accounts WHERE player_id = ? AND id != ?", (current, account_id))
            if int(next(iter(others))[0]) > 0:
                raise LinkConflict(f"{platform} account {spelled!r} is linked to player {current}",
                                   {"playerId": current, "platform": platform, "account": spelled}, requested)
            old = next(iter(await conn.execute_fetchall(
                "SELECT fide_id, name, federation, title, birth_year, sex FROM players WHERE id = ?", (current,))))
            await conn.execute("UPDATE player_accounts SET player_id = ? WHERE id = ?", (player_id, account_id))
            await conn.execute("DELETE FROM players WHERE id = ?", (current,))
            await conn.execute(
                "UPDATE players SET fide_id = coalesce(fide_id, ?), name = coalesce(name, ?), "
                "federation = coalesce(federation, ?), title = coalesce(title, ?), "
                "birth_year = coalesce(birth_year, ?), sex = coalesce(sex, ?), updated_at = ? WHERE id = ?",
                (*tuple(old), now_iso(), player_id))
        else:
            await conn.execute("UPDATE player_accounts SET player_id = ? WHERE id = ?", (player_id, account_id))
    return current


async def stored_fide_top(db: Database, limit: int) -> list[dict[str, Any]]:
    """The stored FIDE players with the highest standard ratings (``fide_id, name, title, federation,
    birth_year, rating, source, fetched_at``), best first; the FIDE top list's fallback."""
    rows = await db.fetchall(
        "SELECT * FROM (SELECT p.fide_id, p.name, coalesce(a.title, p.title) AS title, p.federation, p.birth_year, "
        "a.source, a.fetched_at, json_extract(CAST(a.ratings AS TEXT), '$.standard.rating') AS rating "
        "FROM player_accounts a JOIN players p ON p.id = a.player_id WHERE a.platform = 'fide') AS top "
        "WHERE rating IS NOT NULL ORDER BY rating DESC, fide_id LIMIT ?", (limit,))  # portable: no alias in WHERE
    return [dict(r) for r in rows]


async def player_ids_by_fide_id(db: Database, fide_ids: Sequence[int]) -> dict[int, int]:
    """``{fide_id: our player id}`` of the stored players among ``fide_ids``."""
    if not fide_ids:
        return {}
    marks = ",".join("?" * len(fide_ids))
    rows = await db.fetchall(f"SELECT fide_id, id FROM players WHERE fide_id IN ({marks})", tuple(fide_ids))
    return {int(r["fide_id"]): int(r["id"]) for r in rows}


async def ensure_account(db: Database, platform: str, username: str) -> dict[str, Any]:
    """The stored account ``platform``/``username``, inserted (with its own player row, no status
    until a profile is read) when absent."""
    now = now_iso()
    async with db.transaction() as conn:
        rows = await conn.execute_fetchall(
            "SELECT id FROM player_accounts WHERE platform = ? AND username_key = ?", (platform, username.lower()))
        if not rows:
            cursor = await conn.execute("INSERT INTO players (created_at, updated_at) VALUES (?, ?)", (now, now))
            url = f"https://lichess.org/@/{username}" if platform == "lichess" else None
            await conn.execute(
                "INSERT INTO player_accounts (player_id, platform, username, username_key, ratings, url, fetched_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (cursor.lastrowid, platform, username, username.lower(), b"{}", url, now))
    account = await get_account(db, platform, username)
    assert account is not None
    return account


async def existing_accounts(db: Database, platform: str, usernames: Sequence[str]) -> set[str]:
    """The lower-cased usernames (FIDE: ids as text) among ``usernames`` stored on ``platform``."""
    wanted = sorted({u.lower() for u in usernames})
    found: set[str] = set()
    for i in range(0, len(wanted), 500):
        chunk = wanted[i: i + 500]
        rows = await db.fetchall(
            f"SELECT username_key FROM player_accounts WHERE platform = ? AND username_key IN "
            f"({','.join('?' * len(chunk))})", (platform, *chunk))
        found.update(r["username_key"] for r in rows)
    return found


async def profiled_usernames(db: Database, platform: str = "lichess") -> list[str]:
    """The usernames of the stored accounts whose profile was read (``status`` known), oldest fetch first."""
    rows = await db.fetchall(
        "SELECT username FROM player_accounts WHERE platform = ? AND status IS NOT NULL ORDER BY fetched_at",
        (platform,))
    return [r["username"] for r in rows]


async def link_stated_fide_ids(db: Database, stated: dict[str, int]) -> tuple[int, int]:
    """Link Lichess accounts to the FIDE players an upstream states for them (``{username: FIDE ID}``,
    e.g. the ``WhiteFideId`` tags of a Lichess game export); never from names. A FIDE player not
    stored yet is stored with its id alone (its profile fills in when read). A link that conflicts
    with an existing one is left as it is and counted. Returns ``(linked now, conflicts)``.
    """
    linked = conflicts = 0
    now = now_iso()
    for username, fide_id in stated.items():
        async with db.transaction() as conn:
            await conn.execute(
                "INSERT INTO players (fide_id, created_at, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (fide_id) DO NOTHING",
                (fide_id, now, now))
            key = str(fide_id)
            player_id = int(next(iter(await conn.execute_fetchall(
                "SELECT id FROM players WHERE fide_id = ?", (fide_id,))))[0])
            await conn.execute(
                "INSERT INTO player_accounts (player_id, platform, username, username_key, ratings, url, fetched_at) "
                "VALUES (?, 'fide', ?, ?, ?, ?, ?) ON CONFLICT (platform, username_key) DO NOTHING",
                (player_id, key, key, b"{}", f"https://ratings.fide.com/profile/{fide_id}", now))
        account = await ensure_account(db, "lichess", username)
        if account.get("player_id") == player_id or account.get("playerId") == player_id:
            continue
        try:
            await link_account(db, player_id, "lichess", username)
            linked += 1
        except LinkConflict as exc:
            conflicts += 1
            log.info("stated FIDE id %s of lichess account %s not linked: %s", fide_id, username, exc)
    return linked, conflicts
