"""Tournaments: cache → database → upstream, as the original design draws it.

* An ongoing or upcoming tournament is served from the cache (``ongoing_ttl_s``, 5 min) and
  fetched from Lichess on a miss.
* A finished one is imported whole (info, every standing, every game) the first time it is
  asked for, then served from the database (and cached permanently) without touching Lichess.
* The list comes from the database, kept filled by the discovery job; a database that knows
  no upcoming or ongoing tournament is filled from Lichess's current list on a list miss.
* Concurrent misses on one key make one upstream call (:class:`SingleFlight`); with several
  worker processes, one imports a finished tournament while the others wait on a file lock.
* When Lichess fails and the tournament is stored, the stored row is served with ``stale=true``.
* When Lichess says a tournament does not exist (neither arena nor swiss), that answer is cached
  for ``not_found_ttl_s`` (a negative entry ``missing:<platform>:<id>``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

import chess
import chess.pgn
import msgspec

from chessstats.cache import TTLCache
from chessstats.config import TournamentsConfig
from chessstats.errors import NotFound, UpstreamError
from chessstats.locks import hold
from chessstats.models import Game, Pagination, Tournament, TournamentPlayer
from chessstats.models.common import now_iso
from chessstats.payload import Payload, encode_fields
from chessstats.services.singleflight import SingleFlight
from chessstats.store import Database
from chessstats.store import tournaments as store
from chessstats.upstream.lichess import LichessClient

log = logging.getLogger(__name__)

#: Standings rows embedded in a tournament detail (its first page).
DETAIL_STANDINGS = 10
#: Upstream statuses a discovery keeps live; others are history.
LIVE_STATUSES = ("upcoming", "ongoing")


def _epoch(iso: str | None) -> float:
    if not iso:
        return time.time()
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


class Resolved(NamedTuple):
    """A resolved tournament: the stored row (imported, or stale fallback) or None, the model,
    and whether this call fetched it from the upstream."""

    stored: store.StoredTournament | None
    model: Tournament
    fetched: bool


@dataclass(slots=True)
class ImportReport:
    """What an import wrote: counts of standings and games, games skipped, seconds taken."""

    tournament_id: str
    standings: int
    games: int
    skipped_games: int
    seconds: float


class TournamentService:
    """Tournament reads and imports over the store, the cache and the Lichess client.

    Every public read returns a :class:`~chessstats.payload.Payload` or raises
    :class:`~chessstats.errors.NotFound`, :class:`~chessstats.errors.UpstreamError` or
    :class:`~chessstats.errors.UpstreamRateLimited`.
    """

    def __init__(self, db: Database, cache: TTLCache, lichess: LichessClient, config: TournamentsConfig,
                 locks_dir: Path | None = None) -> None:
        self.db = db
        self.cache = cache
        self.lichess = lichess
        self.config = config
        #: where per-tournament import locks live (``<data dir>/locks``); None: this process only
        self.locks_dir = locks_dir
        self.flights = SingleFlight()
        self.last_import: ImportReport | None = None

    # --- keys ------------------------------------------------------------------------------

    @staticmethod
    def detail_key(platform: str, tid: str) -> str:
        return f"tournament:{platform}:{tid}"

    # --- resolution: database or upstream --------------------------------------------------

    async def _stored(self, platform: str, tid: str) -> store.StoredTournament | None:
        return await store.get_tournament(self.db, platform, tid)

    async def resolve(self, tid: str, platform: str = "lichess") -> Resolved:
        """The tournament, imported if finished: ``(stored row or None, model, fetched)``.

        ``stored`` is the row when the tournament is imported (or the upstream failed and a row
        is stored), None for a live one; ``fetched`` whether this call went to the upstream.
        """
        stored = await self._stored(platform, tid)
        if stored is not None and stored.imported_at is not None:
            return Resolved(stored, stored.tournament, False)
        return await self.flights.do(f"resolve:{platform}:{tid}", lambda: self._fetch_once(tid, platform, stored))

    async def _fetch_once(self, tid: str, platform: str, stored: store.StoredTournament | None) -> Resolved:
        """:meth:`_fetch` under a cross-process lock per tournament: with ``--workers N`` one
        worker imports while the others wait, then read the import from the database."""
        if self.locks_dir is None:
            return await self._fetch(tid, platform, stored)
        path = self.locks_dir / f"tournament-{platform}-{tid}.lock"
        async with hold(path, timeout_s=self.config.import_lock_timeout_s):
            again = await self._stored(platform, tid)
            if again is not None and again.imported_at is not None:  # another worker imported it
                return Resolved(again, again.tournament, False)
            return await self._fetch(tid, platform, again)

    async def _fetch(self, tid: str, platform: str, stored: store.StoredTournament | None) -> Resolved:
        if platform != "lichess":
            raise NotFound(f"no {platform} tournament {tid!r}")
        missing_key = f"missing:{platform}:{tid}"
        if self.cache.get(missing_key) is not None:
            raise NotFound(f"no tournament {tid!r} on {platform}", cached=True)
        try:
            live, raw = await self.lichess.fetch_tournament(tid)
        except NotFound:
            self.cache.set(missing_key, Payload(b'"data":null', source="api", fetched_at=time.time()),
                           self.config.not_found_ttl_s)
            raise NotFound(f"no tournament {tid!r} on {platform}") from None
        except UpstreamError:
            if stored is not None:
                log.warning("lichess failed for tournament %s: serving the stored row", tid)
                return Resolved(stored, stored.tournament, False)
            raise
        if live.status == "finished":
            await self.import_finished(live, raw)
            imported = await self._stored(platform, tid)
            assert imported is not None
            return Resolved(imported, imported.tournament, True)
        await store.upsert_tournaments(self.db, [(live, raw)], now_iso())
        return Resolved(None, live, True)

    async def import_finished(self, tournament: Tournament, raw: bytes | None) -> ImportReport:
        """Fetch every standing and every game of a finished tournament and store them in one transaction.

        Raises:
            UpstreamError: a fetch failed or a stream was truncated (nothing is written).
        """
        started = time.perf_counter()
        fetched_at = now_iso()
        standings = await self.lichess.fetch_standings(tournament, nb=self.config.max_standings)
        export = await self.lichess.fetch_games(tournament)
        if tournament.winner is None and standings:
            first = standings[0]
            winner = TournamentPlayer(username=first.username, title=first.title)
            tournament = msgspec.structs.replace(tournament, winner=winner)
        await store.import_tournament(self.db, tournament, raw, standings, export.games, fetched_at)
        report = ImportReport(
            tournament.id, len(standings), len(export.games), export.skipped, time.perf_counter() - started
        )
        if export.skipped:
            log.warning("import of %s skipped %d unreadable games", tournament.id, export.skipped)
        log.info(
            "imported tournament %s: %d standings, %d games in %.2f s",
            tournament.id, report.standings, report.games, report.seconds,
        )
        self.last_import = report
        return report

    # --- reads -----------------------------------------------------------------------------

    async def get(self, tid: str, platform: str = "lichess") -> Payload:
        """``GET /api/tournaments/{id}``: the tournament, with its first standings when known."""
        key = self.detail_key(platform, tid)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        return await self.flights.do(key, lambda: self._get_miss(key, tid, platform))

    async def refresh(self, tid: str, platform: str = "lichess") -> Payload:
        """Fetch a tournament again whatever the cache holds and re-cache it (the monitor job):
        an ongoing one for ``ongoing_ttl_s``, a finished one imported whole and cached forever.

        Raises NotFound / UpstreamError like :meth:`get` (a stored row is served stale instead).
        """
        key = self.detail_key(platform, tid)
        return await self.flights.do(key, lambda: self._get_miss(key, tid, platform))

    async def _get_miss(self, key: str, tid: str, platform: str) -> Payload:
        stored, model, fetched = await self.resolve(tid, platform)
        source = "api" if fetched else "database"
        if stored is not None and stored.imported_at is not None:
            page, _ = await store.get_standings(self.db, stored.pk, offset=0, limit=DETAIL_STANDINGS)
            model = msgspec.structs.replace(stored.tournament, standings=page)
            payload = Payload(encode_fields(model), source=source, fetched_at=_epoch(stored.fetched_at))
            self.cache.set(key, payload, None)
            return payload
        if stored is not None:  # upstream failed: the stored row, flagged stale, not cached
            return Payload(encode_fields(stored.tournament), source="database", stale=True,
                           fetched_at=_epoch(stored.fetched_at))
        payload = Payload(encode_fields(model), source="api", fetched_at=time.time())
        self.cache.set(key, payload, self.config.ongoing_ttl_s)
        return payload

    async def results(self, tid: str, page: int, limit: int, platform: str = "lichess") -> Payload:
        """``GET /api/tournaments/{id}/results``: standings in rank order, paginated."""
        key = f"results:{platform}:{tid}:{page}:{limit}"
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        return await self.flights.do(key, lambda: self._results_miss(key, tid, page, limit, platform))

    async def _live_or_stored(self, tid: str, platform: str) -> tuple[store.StoredTournament | None, Tournament]:
        stored = await self._stored(platform, tid)
        if stored is not None and stored.imported_at is None and stored.tournament.status in LIVE_STATUSES:
            return None, stored.tournament
        stored, model, _ = await self.resolve(tid, platform)
        return stored, model

    async def _results_miss(self, key: str, tid: str, page: int, limit: int, platform: str) -> Payload:
        offset = (page - 1) * limit
        stored, model = await self._live_or_stored(tid, platform)
        if stored is not None and stored.imported_at is not None:
            rows, total = await store.get_standings(self.db, stored.pk, offset=offset, limit=limit)
            payload = Payload(encode_fields(rows, pagination=Pagination.of(page, limit, total)),
                              source="database", fetched_at=_epoch(stored.fetched_at))
            self.cache.set(key, payload, None)
            return payload
        if stored is not None:
            raise UpstreamError(f"lichess is unavailable and the standings of {tid} are not stored", "lichess")
        rows = await self.lichess.fetch_standings(model, nb=offset + limit)
        total = model.nb_players if model.nb_players is not None else len(rows)
        payload = Payload(encode_fields(rows[offset:], pagination=Pagination.of(page, limit, max(total, len(rows)))),
                          source="api", fetched_at=time.time())
        self.cache.set(key, payload, self.config.ongoing_ttl_s)
        return payload

    async def games(self, tid: str, page: int, limit: int, platform: str = "lichess") -> Payload:
        """``GET /api/tournaments/{id}/games``: games newest first, paginated (JSON)."""
        key = f"games:{platform}:{tid}:{page}:{limit}"
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        return await self.flights.do(key, lambda: self._games_miss(key, tid, page, limit, platform))

    async def _games_page(
        self, tid: str, page: int, limit: int, platform: str
    ) -> tuple[list[tuple[Game, str | None]], int, str, float, bool]:
        """``(games with PGN, total, source, fetched_at, permanent)`` of one page."""
        offset = (page - 1) * limit
        stored, model = await self._live_or_stored(tid, platform)
        if stored is not None and stored.imported_at is not None:
            rows, total = await store.get_games(self.db, stored.pk, tid, offset=offset, limit=limit)
            return rows, total, "database", _epoch(stored.fetched_at), True
        if stored is not None:
            raise UpstreamError(f"lichess is unavailable and the games of {tid} are not stored", "lichess")
        export = await self.lichess.fetch_games(model)
        ordered = sorted(export.games, key=lambda g: g.game.started_at or "", reverse=True)
        rows = [(g.game, g.pgn or None) for g in ordered[offset: offset + limit]]
        return rows, len(ordered), "api", time.time(), False

    async def _games_miss(self, key: str, tid: str, page: int, limit: int, platform: str) -> Payload:
        rows, total, source, fetched_at, permanent = await self._games_page(tid, page, limit, platform)
        payload = Payload(encode_fields([g for g, _ in rows], pagination=Pagination.of(page, limit, total)),
                          source=source, fetched_at=fetched_at)
        self.cache.set(key, payload, None if permanent else self.config.ongoing_ttl_s)
        return payload

    async def games_pgn(self, tid: str, page: int, limit: int, platform: str = "lichess") -> tuple[str, int | None]:
        """The same page of games as PGN text (games separated by a blank line), and how long
        (seconds) it stays fresh: None for an imported tournament (never changes)."""
        rows, _, _, _, permanent = await self._games_page(tid, page, limit, platform)
        text = "\n".join((pgn or game_to_pgn(game)).rstrip("\n") + "\n" for game, pgn in rows)
        return text, None if permanent else self.config.ongoing_ttl_s

    async def list(self, status: str | None, platform: str | None, page: int, limit: int) -> Payload:
        """``GET /api/tournaments``: stored tournaments newest first, filtered and paginated."""
        key = f"tournaments:{status or '*'}:{platform or '*'}:{page}:{limit}"
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        return await self.flights.do(key, lambda: self._list_miss(key, status, platform, page, limit))

    async def _list_miss(self, key: str, status: str | None, platform: str | None, page: int, limit: int) -> Payload:
        source = "database"
        if await store.count_tournaments(self.db, statuses=LIVE_STATUSES) == 0:
            await self.flights.do("discover:lichess", self.discover)
            source = "api"
        rows, total = await store.list_tournaments(
            self.db, status=status, platform=platform, offset=(page - 1) * limit, limit=limit
        )
        payload = Payload(encode_fields(rows, pagination=Pagination.of(page, limit, total)),
                          source=source, fetched_at=time.time())
        ttl = self.config.upcoming_list_ttl_s if status == "upcoming" else self.config.list_ttl_s
        self.cache.set(key, payload, ttl)
        return payload

    async def batch(self, ids: list[str], platform: str = "lichess") -> tuple[list[Payload], list[str], bool]:
        """Each id's detail payload in the order asked, the ids that do not exist, and whether
        finding out that they do not exist took an upstream call (False: negative cache entries)."""
        async def one(tid: str) -> Payload | NotFound:
            try:
                return await self.get(tid, platform)
            except NotFound as exc:
                return exc

        results = await asyncio.gather(*(one(t) for t in ids))
        found = [p for p in results if isinstance(p, Payload)]
        missing = [t for t, p in zip(ids, results, strict=True) if isinstance(p, NotFound)]
        asked_upstream = any(isinstance(p, NotFound) and not p.cached for p in results)
        return found, missing, asked_upstream

    # --- jobs ------------------------------------------------------------------------------

    async def discover(self) -> int:
        """Store every tournament of Lichess's current list; returns how many (upserted)."""
        current = await self.lichess.fetch_current()
        await store.upsert_tournaments(self.db, [(t, None) for t in current], now_iso())
        return len(current)


def game_to_pgn(game: Game) -> str:
    """PGN text for a game stored without one (built with python-chess from its SAN moves)."""
    pgn = chess.pgn.Game()
    tags = {
        "Site": game.url, "White": game.white.username, "Black": game.black.username, "Result": game.result,
        "WhiteElo": game.white.rating, "BlackElo": game.black.rating, "ECO": game.opening.eco if game.opening else None,
        "Opening": game.opening.name if game.opening else None, "GameId": game.id,
    }
    for name, value in tags.items():
        if value is not None:
            pgn.headers[name] = str(value)
    if game.started_at:
        pgn.headers["UTCDate"], pgn.headers["UTCTime"] = game.started_at[:10].replace("-", "."), game.started_at[11:19]
    if game.initial_fen:
        pgn.setup(game.initial_fen)
    node: chess.pgn.GameNode = pgn
    board = pgn.board()
    for san in (game.moves or "").split():
        try:
            move = board.parse_san(san)
        except ValueError:
            break
        node = node.add_variation(move)
        board.push(move)
    return str(pgn) + "\n"
