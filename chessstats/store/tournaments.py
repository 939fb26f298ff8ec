"""Tournaments, their standings and their games in SQLite.

Verbs: ``get_*``/``list_*`` read, ``upsert_*``/``import_*`` write. :func:`import_tournament`
writes a finished tournament whole (info, every standing, every game) in one transaction: a
failure leaves nothing half-written.

Read documents (``read_docs``, migration 7): the same transaction stores the imported tournament's
answers whole, from the rows it just wrote: the envelope of its detail and of each standings page
of :data:`DOC_CHUNK` rows, with their ETags (:func:`write_docs`). A database-served detail or
default-size standings page is then one quick indexed query returning the bytes to send
(:func:`get_detail_doc`, :func:`get_standings_doc`; other page sizes are sliced out of the stored
pages), byte for byte what building the models from the rows gives. Nothing else writes an imported
tournament's row or standings (the upserts and status updates skip imported rows), so the
documents change only with a (re-)import.
"""

from __future__ import annotations

import asyncio
import logging
import operator
import sqlite3
import struct
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import aiosqlite
import msgspec

from chessstats.models import Clock, Game, GamePlayer, Opening, Standing, Tournament, TournamentPlayer
from chessstats.models.common import Pagination, now_iso
from chessstats.models.game import ParsedGame
from chessstats.payload import ENVELOPE_HEAD, envelope_body, envelope_etag, epoch_of, iso_of
from chessstats.store.db import Database

log = logging.getLogger(__name__)

#: Standings rows embedded in a tournament detail (its first page).
DETAIL_STANDINGS = 10
#: Standings rows per chunk of ``standings_docs``.
DOC_CHUNK = 100

_encode = msgspec.json.Encoder().encode


@dataclass(slots=True)
class StoredTournament:
    """A tournament row: the model plus our key and bookkeeping times (ISO 8601 UTC)."""

    pk: int
    tournament: Tournament
    fetched_at: str
    imported_at: str | None


_T_COLS = (
    "platform, external_id, system, name, status, perf_type, time_class, variant, clock_limit_s, "
    "clock_increment_s, rated, starts_at, finishes_at, nb_players, winner_username, winner_title, url"
)


def _row_to_tournament(row: sqlite3.Row) -> Tournament:
    clock = None
    if row["clock_limit_s"] is not None or row["clock_increment_s"] is not None:
        clock = Clock(limit=row["clock_limit_s"], increment=row["clock_increment_s"])
    winner = None
    if row["winner_username"]:
        winner = TournamentPlayer(username=row["winner_username"], title=row["winner_title"])
    return Tournament(
        id=row["external_id"], platform=row["platform"], system=row["system"], name=row["name"],
        status=row["status"], perf_type=row["perf_type"], time_class=row["time_class"], variant=row["variant"],
        clock=clock, rated=None if row["rated"] is None else bool(row["rated"]), starts_at=row["starts_at"],
        finishes_at=row["finishes_at"], nb_players=row["nb_players"], winner=winner, url=row["url"],
    )


def _tournament_values(t: Tournament) -> tuple[object, ...]:
    return (
        t.platform, t.id, t.system, t.name, t.status, t.perf_type, t.time_class, t.variant,
        t.clock.limit if t.clock else None, t.clock.increment if t.clock else None,
        None if t.rated is None else int(t.rated), t.starts_at, t.finishes_at, t.nb_players,
        t.winner.username if t.winner else None, t.winner.title if t.winner else None, t.url,
    )


async def get_tournament(db: Database, platform: str, external_id: str) -> StoredTournament | None:
    """The stored tournament ``(platform, external_id)``, or None."""
    row = await db.fetchone(
        f"SELECT id, {_T_COLS}, fetched_at, imported_at FROM tournaments WHERE platform = ? AND external_id = ?",
        (platform, external_id),
    )
    if row is None:
        return None
    return StoredTournament(row["id"], _row_to_tournament(row), row["fetched_at"], row["imported_at"])


async def list_tournaments(
    db: Database, *, status: str | None, platform: str | None, offset: int, limit: int
) -> tuple[list[Tournament], int]:
    """Tournaments newest first (by start time), filtered; returns ``(page, total)``."""
    where, params = [], []
    if status:
        where.append("status = ?")
        params.append(status)
    if platform:
        where.append("platform = ?")
        params.append(platform)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    total = await db.fetchval(f"SELECT count(*) FROM tournaments {clause}", params)
    rows = await db.fetchall(
        f"SELECT {_T_COLS} FROM tournaments {clause} ORDER BY starts_at DESC, id DESC LIMIT ? OFFSET ?",
        [*params, limit, offset],
    )
    return [_row_to_tournament(r) for r in rows], int(total or 0)


async def count_tournaments(db: Database, statuses: Sequence[str] = ()) -> int:
    """How many tournaments are stored (only those in ``statuses``, when given)."""
    if not statuses:
        return int(await db.fetchval("SELECT count(*) FROM tournaments") or 0)
    marks = ", ".join("?" * len(statuses))
    return int(await db.fetchval(f"SELECT count(*) FROM tournaments WHERE status IN ({marks})", statuses) or 0)


_UPSERT = f"""
    INSERT INTO tournaments ({_T_COLS}, raw, fetched_at, updated_at) VALUES ({", ".join("?" * 20)})
    ON CONFLICT (platform, external_id) DO UPDATE SET
        system = excluded.system, name = excluded.name, status = excluded.status,
        perf_type = excluded.perf_type, time_class = excluded.time_class, variant = excluded.variant,
        clock_limit_s = excluded.clock_limit_s, clock_increment_s = excluded.clock_increment_s,
        rated = excluded.rated, starts_at = excluded.starts_at, finishes_at = excluded.finishes_at,
        nb_players = excluded.nb_players,
        winner_username = coalesce(excluded.winner_username, winner_username),
        winner_title = coalesce(excluded.winner_title, winner_title), url = excluded.url,
        raw = coalesce(excluded.raw, raw), fetched_at = excluded.fetched_at, updated_at = excluded.updated_at
    WHERE tournaments.imported_at IS NULL
"""


async def _upsert(conn: aiosqlite.Connection, t: Tournament, raw: bytes | None, fetched_at: str) -> None:
    await conn.execute(_UPSERT, (*_tournament_values(t), raw, fetched_at, now_iso()))


async def upsert_tournaments(db: Database, items: Sequence[tuple[Tournament, bytes | None]], fetched_at: str) -> int:
    """Insert or update tournaments (an imported, finished one is never overwritten); returns the count."""
    now = now_iso()
    async with db.transaction() as conn:
        await conn.executemany(_UPSERT, [(*_tournament_values(t), raw, fetched_at, now) for t, raw in items])
    return len(items)


async def mark_cancelled(db: Database, platform: str, keep_ids: Sequence[str], statuses: Sequence[str]) -> int:
    """Mark stored tournaments in ``statuses`` whose id is not in ``keep_ids`` as cancelled; returns how many."""
    marks = ", ".join("?" * len(statuses))
    keep = ", ".join("?" * len(keep_ids)) or "NULL"
    async with db.transaction() as conn:
        cursor = await conn.execute(
            f"UPDATE tournaments SET status = 'cancelled', updated_at = ? WHERE platform = ? "
            f"AND status IN ({marks}) AND external_id NOT IN ({keep}) AND imported_at IS NULL",
            (now_iso(), platform, *statuses, *keep_ids),
        )
        return cursor.rowcount


async def cancel_tournaments(db: Database, platform: str, external_ids: Sequence[str]) -> int:
    """Mark the given stored, not imported tournaments as cancelled (never deleted); returns how many."""
    if not external_ids:
        return 0
    marks = ", ".join("?" * len(external_ids))
    async with db.transaction() as conn:
        cursor = await conn.execute(
            f"UPDATE tournaments SET status = 'cancelled', updated_at = ? WHERE platform = ? "
            f"AND external_id IN ({marks}) AND imported_at IS NULL AND status != 'cancelled'",
            (now_iso(), platform, *external_ids),
        )
        return cursor.rowcount


_GAME_COLS = (
    "platform, external_id, tournament_id, white_username, white_title, white_rating, white_rating_diff, "
    "black_username, black_title, black_rating, black_rating_diff, result, status, winner, variant, perf_type, "
    "time_class, rated, initial_fen, eco, opening_name, moves, pgn, started_at, ended_at, url"
)
_GAME_INSERT = f"""
    INSERT INTO games ({_GAME_COLS}) VALUES ({", ".join("?" * 26)})
    ON CONFLICT (platform, external_id) DO UPDATE SET
    {", ".join(f"{c.strip()} = excluded.{c.strip()}" for c in _GAME_COLS.split(",")[2:])}
"""


def _game_values(pk: int, parsed: ParsedGame) -> tuple[object, ...]:
    g = parsed.game
    return (
        g.platform, g.id, pk, g.white.username, g.white.title, g.white.rating, g.white.rating_diff,
        g.black.username, g.black.title, g.black.rating, g.black.rating_diff, g.result, g.status, g.winner,
        g.variant, g.perf_type, g.time_class, None if g.rated is None else int(g.rated), g.initial_fen,
        g.opening.eco if g.opening else None, g.opening.name if g.opening else None, g.moves,
        parsed.pgn or None, g.started_at, g.ended_at, g.url,
    )


#: Rows per ``executemany`` of an import; the event loop gets a turn between two batches.
WRITE_BATCH_ROWS = 250
_STANDING_INSERT = (
    "INSERT INTO standings (tournament_id, position, rank, username, title, rating, score, points, "
    "tie_break, performance, team) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


async def _write_games(conn: aiosqlite.Connection, pk: int, games: Sequence[ParsedGame]) -> None:
    """Insert or replace ``games`` of tournament ``pk`` in batches of :data:`WRITE_BATCH_ROWS` rows
    (inside the caller's transaction), yielding to the event loop between batches."""
    for at in range(0, len(games), WRITE_BATCH_ROWS):
        await conn.executemany(_GAME_INSERT, [_game_values(pk, g) for g in games[at:at + WRITE_BATCH_ROWS]])
        await asyncio.sleep(0)


async def import_tournament(
    db: Database, t: Tournament, raw: bytes | None, standings: Sequence[Standing], games: Sequence[ParsedGame],
    fetched_at: str, after: Callable[[aiosqlite.Connection, int], Awaitable[None]] | None = None,
) -> int:
    """Store a finished tournament whole, in one transaction; returns its key.

    Replaces any earlier standings and games of the tournament. ``after(conn, pk)`` runs inside
    the same transaction (the import's own record). Rows are written in batches of
    :data:`WRITE_BATCH_ROWS`, with a turn of the event loop between two. Raises (and writes
    nothing) on any database error.
    """
    now = now_iso()
    async with db.transaction() as conn:
        await conn.execute(
            f"""INSERT INTO tournaments ({_T_COLS}, raw, fetched_at, imported_at, updated_at)
                VALUES ({", ".join("?" * 21)})
                ON CONFLICT (platform, external_id) DO UPDATE SET
                system = excluded.system, name = excluded.name, status = excluded.status,
                perf_type = excluded.perf_type, time_class = excluded.time_class, variant = excluded.variant,
                clock_limit_s = excluded.clock_limit_s, clock_increment_s = excluded.clock_increment_s,
                rated = excluded.rated, starts_at = excluded.starts_at, finishes_at = excluded.finishes_at,
                nb_players = excluded.nb_players, winner_username = excluded.winner_username,
                winner_title = excluded.winner_title, url = excluded.url, raw = excluded.raw,
                fetched_at = excluded.fetched_at, imported_at = excluded.imported_at,
                updated_at = excluded.updated_at""",
            (*_tournament_values(t), raw, fetched_at, now, now),
        )
        rows = await conn.execute_fetchall(
            "SELECT id FROM tournaments WHERE platform = ? AND external_id = ?", (t.platform, t.id)
        )
        pk = int(next(iter(rows))[0])
        await conn.execute("DELETE FROM standings WHERE tournament_id = ?", (pk,))
        for at in range(0, len(standings), WRITE_BATCH_ROWS):
            await conn.executemany(_STANDING_INSERT, [
                (pk, i, s.rank, s.username, s.title, s.rating, s.score, s.points, s.tie_break, s.performance, s.team)
                for i, s in enumerate(standings[at:at + WRITE_BATCH_ROWS], at)
            ])
            await asyncio.sleep(0)
        await conn.execute("DELETE FROM games WHERE tournament_id = ?", (pk,))
        await _write_games(conn, pk, games)
        await write_docs(conn, pk)
        if after is not None:
            await after(conn, pk)
    return pk


_S_COLS = "rank, username, title, rating, score, points, tie_break, performance, team"


def _row_to_standing(r: Sequence[object]) -> Standing:
    return Standing(rank=r[0], username=r[1], title=r[2], rating=r[3], score=r[4], points=r[5],  # type: ignore[arg-type]
                    tie_break=r[6], performance=r[7], team=r[8])  # type: ignore[arg-type]


async def write_docs(conn: aiosqlite.Connection, pk: int) -> None:
    """(Re)write the read documents of imported tournament ``pk`` from its stored row and standings
    (``read_docs``, migration 7).

    Must run inside the transaction that writes its standings (see the module docstring). Part -1:
    the whole envelope of its detail (the first :data:`DETAIL_STANDINGS` standings, ``importState``
    ``complete``); part c: the whole envelope of standings page c + 1 with ``limit`` :data:`DOC_CHUNK`,
    with ``ends`` (where each standing ends, from the page's first standing, uint32 little endian).
    Each with its ETag, as a cache miss would send it (``cached`` false, ``source`` database). The
    event loop gets a turn between two parts. Migration 6's copies of the tournament are dropped.
    """
    rows = await conn.execute_fetchall(f"SELECT {_T_COLS}, fetched_at, imported_at FROM tournaments WHERE id = ?",
                                       (pk,))
    row = next(iter(rows))
    tournament, fetched_at, imported_at = _row_to_tournament(row), row[-2], row[-1]
    fetched = iso_of(epoch_of(fetched_at))  # as the envelope shows it
    srows = list(await conn.execute_fetchall(
        f"SELECT {_S_COLS} FROM standings WHERE tournament_id = ? ORDER BY position", (pk,)))
    total = len(srows)
    first_page = [_row_to_standing(r) for r in srows[:DETAIL_STANDINGS]]
    fields = b'"data":' + _encode(msgspec.structs.replace(tournament, standings=first_page, import_state="complete"))
    docs = [(pk, -1, imported_at, fetched_at, total, envelope_etag(fields, fetched), None, _db_body(fields, fetched))]
    for first in range(0, total, DOC_CHUNK):
        encoded = [_encode(_row_to_standing(r)) for r in srows[first: first + DOC_CHUNK]]
        ends, end = [], -1
        for item in encoded:
            end += 1 + len(item)
            ends.append(end)
        part = first // DOC_CHUNK
        fields = standings_fields(b"[" + b",".join(encoded) + b"]", part + 1, DOC_CHUNK, total)
        docs.append((pk, part, imported_at, fetched_at, total, envelope_etag(fields, fetched),
                     struct.pack(f"<{len(ends)}I", *ends), _db_body(fields, fetched)))
        await asyncio.sleep(0)
    await conn.execute("DELETE FROM read_docs WHERE tournament_id = ?", (pk,))
    await conn.executemany("INSERT INTO read_docs (tournament_id, part, imported_at, fetched_at, total, etag, ends, "
                           "body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", docs)
    # migration 6's documents: an older version reading this file again builds answers from the rows
    await conn.execute("DELETE FROM standings_docs WHERE tournament_id = ?", (pk,))
    await conn.execute("UPDATE tournaments SET detail = NULL, standings_count = NULL, docs_imported_at = NULL "
                       "WHERE id = ? AND detail IS NOT NULL", (pk,))


async def rewrite_all_docs(conn: aiosqlite.Connection) -> int:
    """Write the read documents of every imported tournament (migration 7's data step, inside its
    transaction); returns how many tournaments."""
    rows = await conn.execute_fetchall("SELECT id FROM tournaments WHERE imported_at IS NOT NULL ORDER BY id")
    pks = [int(r[0]) for r in rows]
    started = time.monotonic()
    if pks:
        log.info("writing the read documents of %d imported tournaments (once, migration 7)", len(pks))
    for pk in pks:
        await write_docs(conn, pk)
    if pks:
        log.info("read documents of %d tournaments written in %.1f s", len(pks), time.monotonic() - started)
    return len(pks)


def _db_body(fields: bytes, fetched: str) -> bytes:
    return envelope_body(fields, cached=False, source="database", stale=False, fetched_iso=fetched)


def standings_fields(data: bytes, page: int, limit: int, total: int) -> bytes:
    """The envelope fields of a standings page: ``"data":<data>,"pagination":{…}`` (``data``: the
    page's rows as a JSON array)."""
    return b'"data":%b,"pagination":%b' % (data, _encode(Pagination.of(page, limit, total)))


#: Where a read document's first standing starts in its body: ``{"success":true,"data":[``.
_ROWS_AT = len(ENVELOPE_HEAD) + len(b'"data":[')


@dataclass(slots=True)
class StoredDoc:
    """A database-served answer of an imported tournament (``read_docs``).

    ``body``: the whole envelope when the answer is one stored part (the detail, or a page that is
    exactly one chunk), with its ``etag``; else None, and ``data`` is the page's standings as a JSON
    array (sliced out of the parts). ``total``: the standings count; ``fetched_at``: when its upstream
    data was fetched (ISO 8601 UTC); ``pending_games``: games of its import not final yet (None: no
    import record).
    """

    body: bytes | None
    etag: str | None
    data: bytes
    total: int
    fetched_at: str
    pending_games: int | None


#: The covering indexes (migration 7) keep the lookup off the tournament's and the import's rows;
#: SQLite's planner would take the unique keys' indexes and read both rows.
_DOC_FROM = (
    "FROM tournaments t INDEXED BY tournaments_docs_key "
    "JOIN read_docs d ON d.tournament_id = t.id AND d.imported_at = t.imported_at "
    "LEFT JOIN imports i INDEXED BY imports_docs_key ON i.platform = t.platform AND i.external_id = t.external_id "
)
_DOC_WHERE = "WHERE t.platform = ? AND t.external_id = ?"
_DETAIL_DOC = f"SELECT d.body, d.etag, d.total, d.fetched_at, i.pending_games {_DOC_FROM}{_DOC_WHERE} AND d.part = -1"
#: No ORDER BY: SQLite sorted the rows (with their bodies) in a temporary b-tree for it, 7.1 µs
#: against 5.0 for a one-part page; the caller sorts the few parts itself.
_PAGE_DOC = (f"SELECT d.part, d.body, d.ends, d.etag, d.total, d.fetched_at, i.pending_games {_DOC_FROM}"
             f"{_DOC_WHERE} AND d.part BETWEEN ? AND ?")
#: Whether a tournament has read documents at all (a page past its last standing).
_HAS_DOCS = f"SELECT d.total, d.fetched_at, i.pending_games {_DOC_FROM}{_DOC_WHERE} AND d.part = -1"
_END = struct.Struct("<I")
_part_of = operator.itemgetter(0)


async def get_detail_doc(db: Database, platform: str, external_id: str) -> StoredDoc | None:
    """The stored detail envelope of imported tournament ``(platform, external_id)`` (one quick
    indexed read), or None when it is not imported or its last import wrote no documents."""
    rows = await db.fetchall(_DETAIL_DOC, (platform, external_id), quick=True)
    if not rows:
        return None
    body, etag, total, fetched_at, pending = rows[0]
    return StoredDoc(bytes(body), etag, b"", int(total), fetched_at, pending)


async def get_standings_doc(db: Database, platform: str, external_id: str, *, offset: int,
                            limit: int) -> StoredDoc | None:
    """Standings ``offset .. offset + limit - 1`` (rank order) of imported tournament ``(platform,
    external_id)`` (one quick indexed read of at most ``limit / 100 + 2`` parts): the stored envelope
    when the page is exactly one part, else the rows as a JSON array; None like :func:`get_detail_doc`.
    ``total`` is the standings count (for the pagination)."""
    first, last = offset // DOC_CHUNK, (offset + max(limit, 1) - 1) // DOC_CHUNK
    rows = await db.fetchall(_PAGE_DOC, (platform, external_id, first, last), quick=True)
    if not rows:  # past the last standing (or no documents)
        rows = await db.fetchall(_HAS_DOCS, (platform, external_id), quick=True)
        if not rows:
            return None
        return StoredDoc(None, None, b"[]", int(rows[0][0]), rows[0][1], rows[0][2])
    if len(rows) > 1:
        rows.sort(key=_part_of)
    total, fetched_at, pending = int(rows[0][4]), rows[0][5], rows[0][6]
    if limit == DOC_CHUNK and offset == first * DOC_CHUNK and len(rows) == 1:
        return StoredDoc(bytes(rows[0][1]), rows[0][3], b"", total, fetched_at, pending)  # one whole part
    parts: list[bytes] = []
    stop_at = offset + limit
    for part, body, ends, _, _, _, _ in rows:
        base, n = part * DOC_CHUNK, len(ends) // 4
        a, b = max(offset - base, 0), min(stop_at - base, n)
        if a >= b:
            continue
        start = 0 if a == 0 else _END.unpack_from(ends, 4 * (a - 1))[0] + 1
        parts.append(body[_ROWS_AT + start: _ROWS_AT + _END.unpack_from(ends, 4 * (b - 1))[0]])
    return StoredDoc(None, None, b"[" + b",".join(parts) + b"]", total, fetched_at, pending)


async def update_games(db: Database, pk: int, games: Sequence[ParsedGame],
                       after: Callable[[aiosqlite.Connection], Awaitable[None]] | None = None) -> int:
    """Replace the stored rows of ``games`` (same ids) of tournament ``pk``, in one transaction with
    ``after(conn)``; returns how many were written."""
    async with db.transaction() as conn:
        await _write_games(conn, pk, games)
        if after is not None:
            await after(conn)
    return len(games)


async def get_raw(db: Database, pk: int) -> bytes | None:
    """The upstream's body of tournament ``pk`` as last fetched (its detail), or None."""
    value = await db.fetchval("SELECT raw FROM tournaments WHERE id = ?", (pk,))
    return bytes(value) if value is not None else None


async def set_status(db: Database, platform: str, external_id: str, status: str) -> bool:
    """Set the status of a stored, not imported tournament; returns whether it changed."""
    async with db.transaction() as conn:
        cursor = await conn.execute(
            "UPDATE tournaments SET status = ?, updated_at = ? WHERE platform = ? AND external_id = ? "
            "AND imported_at IS NULL AND status != ?",
            (status, now_iso(), platform, external_id, status),
        )
        return cursor.rowcount > 0


async def get_standings(db: Database, pk: int, *, offset: int, limit: int) -> tuple[list[Standing], int]:
    """Standings of tournament ``pk`` in rank order; returns ``(page, total)``."""
    total = await db.fetchval("SELECT count(*) FROM standings WHERE tournament_id = ?", (pk,))
    rows = await db.fetchall(
        f"SELECT {_S_COLS} FROM standings WHERE tournament_id = ? ORDER BY position LIMIT ? OFFSET ?",
        (pk, limit, offset),
    )
    return [_row_to_standing(r) for r in rows], int(total or 0)


def _row_to_game(r: sqlite3.Row, tournament_id: str | None) -> Game:
    opening = Opening(eco=r["eco"], name=r["opening_name"]) if (r["eco"] or r["opening_name"]) else None
    return Game(
        id=r["external_id"], platform=r["platform"], url=r["url"],
        white=GamePlayer(username=r["white_username"], title=r["white_title"], rating=r["white_rating"],
                         rating_diff=r["white_rating_diff"]),
        black=GamePlayer(username=r["black_username"], title=r["black_title"], rating=r["black_rating"],
                         rating_diff=r["black_rating_diff"]),
        result=r["result"], status=r["status"], winner=r["winner"], variant=r["variant"], perf_type=r["perf_type"],
        time_class=r["time_class"], rated=None if r["rated"] is None else bool(r["rated"]),
        initial_fen=r["initial_fen"], opening=opening, moves=r["moves"], started_at=r["started_at"],
        ended_at=r["ended_at"], tournament_id=tournament_id,
    )


async def get_games(
    db: Database, pk: int, tournament_id: str, *, offset: int, limit: int
) -> tuple[list[tuple[Game, str | None]], int]:
    """Games of tournament ``pk`` newest first; returns ``([(game, pgn)], total)``."""
    total = await db.fetchval("SELECT count(*) FROM games WHERE tournament_id = ?", (pk,))
    rows = await db.fetchall(
        f"SELECT {_GAME_COLS} FROM games WHERE tournament_id = ? ORDER BY started_at DESC, id LIMIT ? OFFSET ?",
        (pk, limit, offset),
    )
    return [(_row_to_game(r, tournament_id), r["pgn"]) for r in rows], int(total or 0)


async def game_ids_with_status(db: Database, pk: int, statuses: frozenset[str] | set[str]) -> list[str]:
    """Upstream ids of the games of tournament ``pk`` whose status is one of ``statuses``."""
    marks = ", ".join("?" * len(statuses))
    rows = await db.fetchall(f"SELECT external_id FROM games WHERE tournament_id = ? AND status IN ({marks})",
                             (pk, *sorted(statuses)))
    return [r[0] for r in rows]
