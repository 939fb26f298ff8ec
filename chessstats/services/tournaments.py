"""Tournaments: cache → database → upstream, through the one read-through path.

* Every cached route goes through :class:`~chessstats.services.readthrough.ReadThrough`: fresh
  entries are hits, expired ones are served stale while one background revalidation refreshes
  them, misses make one fetch per key across every worker, failures are remembered briefly.
* An ongoing or upcoming tournament is cached ``ongoing_ttl_s`` (5 min) and fetched from Lichess;
  when Lichess fails or is slow and the row is stored, the stored row is served stale.
* A finished one is imported whole (info, every standing, every game) by a background task
  (:class:`~chessstats.services.imports.ImportService`); a request waits for it at most
  ``import_wait_s`` and then answers with what is known and ``importState``. Once complete it is
  served from the database and cached permanently (unless some games were not final yet).
* An imported tournament's detail and standings pages are stored encoded by its import: on a cache
  miss they are one quick indexed read (:func:`~chessstats.store.tournaments.get_detail_doc`,
  :func:`~chessstats.store.tournaments.get_standings_doc`) wrapped in the envelope, before (and
  instead of) the read-through path: there is no upstream call to coalesce or remember. A
  tournament imported before those documents existed goes the read-through way, built from its rows.
* What one route learns (a tournament started, finished, cancelled, gone) updates the database
  and drops every cached entry that shows it, lists included.
* The list comes from the database, kept filled by the discovery job; a database that knows no
  upcoming or ongoing tournament is filled from Lichess's current list on a list miss.
"""

from __future__ import annotations

import asyncio
import logging
import time

import msgspec

from chessstats import keys
from chessstats.cache import TTLCache
from chessstats.config import TournamentsConfig
from chessstats.errors import NotFound, UpstreamError
from chessstats.models import Game, Pagination, Tournament
from chessstats.models.common import now_iso
from chessstats.payload import Payload, encode_fields, epoch_of
from chessstats.services.imports import ImportService, invalidate_tournament
from chessstats.services.readthrough import Fresh, ReadThrough
from chessstats.store import Database
from chessstats.store import imports as istore
from chessstats.store import tournaments as store
from chessstats.upstream.lichess import LichessClient

log = logging.getLogger(__name__)

#: Standings rows embedded in a tournament detail (its first page).
DETAIL_STANDINGS = store.DETAIL_STANDINGS
#: Upstream statuses a discovery keeps live; others are history.
LIVE_STATUSES = ("upcoming", "ongoing")
UPSTREAM = "lichess"


def _epoch(iso: str | None) -> float:
    return epoch_of(iso) if iso else time.time()


class TournamentService:
    """Tournament reads over the read-through path, the store, the imports and the Lichess client.

    Every public read returns a :class:`~chessstats.payload.Payload` or raises
    :class:`~chessstats.errors.NotFound`, :class:`~chessstats.errors.UpstreamError` (or one of its
    subclasses: rate limited, busy, blocked).
    """

    def __init__(self, db: Database, cache: TTLCache, lichess: LichessClient, config: TournamentsConfig,
                 read: ReadThrough, imports: ImportService) -> None:
        self.db = db
        self.cache = cache
        self.lichess = lichess
        self.config = config
        self.read = read
        self.imports = imports

    # --- what every route learns -------------------------------------------------------------

    async def _learned(self, platform: str, tournament: Tournament, stored: store.StoredTournament | None,
                       raw: bytes | None) -> None:
        """Store what the upstream just said of a tournament; when its status changed, drop every
        cached entry that shows it (lists included)."""
        await store.upsert_tournaments(self.db, [(tournament, raw)], now_iso())
        if stored is None or stored.tournament.status != tournament.status:
            invalidate_tournament(self.cache, platform, tournament.id)

    async def mark_gone(self, platform: str, tids: list[str]) -> int:
        """The upstream no longer knows these stored live tournaments: mark them cancelled (never
        deleted) and drop every cached entry that shows them; returns how many changed."""
        changed = await store.cancel_tournaments(self.db, platform, tids)
        for tid in tids:
            invalidate_tournament(self.cache, platform, tid)
        if changed:
            log.info("%d tournaments gone upstream: marked cancelled (%s)", changed, ", ".join(tids[:5]))
        return changed

    async def store_listed(self, tournaments: list[Tournament]) -> int:
        """Store tournaments from an upstream list (discovery); every one whose status changed is
        dropped from the cache, and so are the lists. Returns how many were stored."""
        for t in tournaments:
            stored = await store.get_tournament(self.db, t.platform, t.id)
            if stored is not None and stored.tournament.status != t.status:
                invalidate_tournament(self.cache, t.platform, t.id)
        await store.upsert_tournaments(self.db, [(t, None) for t in tournaments], now_iso())
        if tournaments:
            self.cache.evict_tag(keys.LISTS_TAG)
        return len(tournaments)

    # --- detail ------------------------------------------------------------------------------

    async def get(self, tid: str, platform: str = "lichess") -> Payload:
        """``GET /api/tournaments/{id}``: the tournament, with its first standings when known."""
        key = keys.tournament(platform, tid)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        if platform == UPSTREAM:
            doc = await store.get_detail_doc(self.db, platform, tid)
            if doc is not None:
                return self.read.keep(key, self._doc_fresh(doc, platform, tid))
        return await self.read.get(key, lambda: self._fetch_detail(tid, platform),
                                   fallback=lambda: self._stored_detail(tid, platform), upstream=UPSTREAM)

    async def refresh(self, tid: str, platform: str = "lichess") -> Payload:
        """Fetch a tournament again whatever the cache holds and re-cache it (the monitor job).

        Raises NotFound / UpstreamError like :meth:`get`.
        """
        return await self.read.refresh(keys.tournament(platform, tid), lambda: self._fetch_detail(tid, platform))

    def _doc_fresh(self, doc: store.StoredDoc, platform: str, tid: str, fields: bytes | None = None) -> Fresh:
        """A stored document of an imported tournament as a fetch result: source ``database``, cached
        like :meth:`_imported_detail` (permanent unless some of its games were not final). ``fields``:
        the envelope's fields when the document is not a whole stored answer (``doc.body`` None)."""
        if doc.body is not None:
            payload = Payload(None, source="database", fetched_at=_epoch(doc.fetched_at),
                              etag=doc.etag, body=doc.body)
        else:
            payload = Payload(fields or b"", source="database", fetched_at=_epoch(doc.fetched_at))
        ttl = self.config.ongoing_ttl_s if doc.pending_games else None
        return Fresh(payload, ttl, tag=keys.tournament_tag(platform, tid))

    async def _imported_detail(self, stored: store.StoredTournament, record: istore.ImportRecord | None,
                               source: str) -> Fresh:
        page, _ = await store.get_standings(self.db, stored.pk, offset=0, limit=DETAIL_STANDINGS)
        model = msgspec.structs.replace(stored.tournament, standings=page, import_state="complete")
        payload = Payload(encode_fields(model), source=source, fetched_at=_epoch(stored.fetched_at))
        return Fresh(payload, self._imported_ttl(record), tag=keys.tournament_tag(stored.tournament.platform,
                                                                                    stored.tournament.id))

    def _imported_ttl(self, record: istore.ImportRecord | None) -> float | None:
        """Permanent, unless some imported games were not final (then they are refreshed)."""
        return self.config.ongoing_ttl_s if record is not None and record.pending_games else None

    async def _importing(self, stored: store.StoredTournament, record: istore.ImportRecord | None,
                         source: str) -> Fresh:
        """The detail of a finished tournament whose import is not complete: what is known. Not cached
        while the import is queued or running; cached ``ongoing_ttl_s`` when it failed (the entry is
        dropped when its retry starts)."""
        state = record.state if record else "queued"
        model = msgspec.structs.replace(stored.tournament, import_state=state)
        return Fresh(Payload(encode_fields(model), source=source, fetched_at=_epoch(stored.fetched_at)),
                     self.config.ongoing_ttl_s, cache=state == "failed",
                     tag=keys.tournament_tag(stored.tournament.platform, stored.tournament.id))

    async def _finished(self, platform: str, tid: str, source: str, *, wait: bool = True) -> Fresh | None:
        """A stored finished tournament: imported → from the database; otherwise its import is
        requested and (with ``wait``) waited for up to ``import_wait_s``. None when it is not
        stored as finished."""
        stored = await store.get_tournament(self.db, platform, tid)
        if stored is None or (stored.imported_at is None and stored.tournament.status != "finished"):
            return None
        record = await self.imports.state(platform, tid)
        if stored.imported_at is not None:  # complete (a re-import under way serves the previous one)
            return await self._imported_detail(stored, record, source)
        if record is None or record.state == "complete":  # complete but not stored: the store was replaced
            record = await self.imports.request(platform, tid, force=record is not None)
        if wait and record.state in ("queued", "importing"):
            record = await self.imports.wait(platform, tid, self.config.import_wait_s) or record
            stored = await store.get_tournament(self.db, platform, tid) or stored
            if stored.imported_at is not None:
                return await self._imported_detail(stored, record, source)
        return await self._importing(stored, record, source)

    async def _fetch_detail(self, tid: str, platform: str) -> Fresh:
        if platform != "lichess":
            raise NotFound(f"no {platform} tournament {tid!r}")
        finished = await self._finished(platform, tid, "database")
        if finished is not None:
            return finished
        stored = await store.get_tournament(self.db, platform, tid)
        try:
            live, raw = await self.lichess.fetch_tournament(tid)
        except NotFound:
            if stored is not None:
                await self.mark_gone(platform, [tid])
            raise NotFound(f"no tournament {tid!r} on {platform}") from None
        if live.id != tid:  # the upstream's spelling of the id (it matched case-insensitively)
            stored = await store.get_tournament(self.db, platform, live.id)
        await self._learned(platform, live, stored, raw)
        if live.status == "finished":
            finished = await self._finished(platform, live.id, "api")
            assert finished is not None
            return finished
        payload = Payload(encode_fields(live), source="api", fetched_at=time.time())
        return Fresh(payload, self.config.ongoing_ttl_s, tag=keys.tournament_tag(platform, live.id))

    async def _stored_detail(self, tid: str, platform: str) -> Payload | None:
        """The stored row of a tournament, flagged stale (the upstream failed or is slow)."""
        stored = await store.get_tournament(self.db, platform, tid)
        if stored is None:
            return None
        if stored.imported_at is not None or stored.tournament.status == "finished":
            fresh = await self._finished(platform, tid, "database", wait=False)
            if fresh is not None:
                return fresh.payload
        return Payload(encode_fields(stored.tournament), source="database", stale=True,
                       fetched_at=_epoch(stored.fetched_at))

    async def _model(self, tid: str, platform: str) -> tuple[store.StoredTournament | None, Tournament]:
        """The stored row and model of a tournament, resolving it through the detail when unknown."""
        stored = await store.get_tournament(self.db, platform, tid)
        if stored is None:
            await self.get(tid, platform)
            stored = await store.get_tournament(self.db, platform, tid)
            if stored is None:
                raise NotFound(f"no tournament {tid!r} on {platform}")
        return stored, stored.tournament

    # --- standings and games ---------------------------------------------------------------

    async def results(self, tid: str, page: int, limit: int, platform: str = "lichess") -> Payload:
        """``GET /api/tournaments/{id}/results``: standings in rank order, paginated."""
        key = keys.results(platform, tid, page, limit)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        if platform == UPSTREAM:
            doc = await store.get_standings_doc(self.db, platform, tid, offset=(page - 1) * limit, limit=limit)
            if doc is not None:
                fields = None if doc.body is not None else store.standings_fields(doc.data, page, limit, doc.total)
                return self.read.keep(key, self._doc_fresh(doc, platform, tid, fields))
        return await self.read.get(key, lambda: self._fetch_results(tid, page, limit, platform), upstream=UPSTREAM)

    async def _import_page(self, stored: store.StoredTournament, page: int, limit: int) -> Fresh | None:
        """A page of an imported tournament's rows is served from the database; while its import
        runs, an empty page with ``importState`` (not cached). None for a live tournament."""
        if stored.imported_at is None and stored.tournament.status != "finished":
            return None
        platform, tid = stored.tournament.platform, stored.tournament.id
        detail = await self._finished(platform, tid, "database")
        assert detail is not None
        stored = await store.get_tournament(self.db, platform, tid) or stored
        if stored.imported_at is not None:
            return None  # imported: the caller reads its page
        record = await self.imports.state(platform, tid)
        state = record.state if record else "queued"
        payload = Payload(encode_fields([], pagination=Pagination.of(page, limit, 0), importState=state),
                          source="database", fetched_at=_epoch(stored.fetched_at))
        return Fresh(payload, self.config.ongoing_ttl_s, cache=state == "failed",
                     tag=keys.tournament_tag(platform, tid))

    async def _fetch_results(self, tid: str, page: int, limit: int, platform: str) -> Fresh:
        offset = (page - 1) * limit
        stored, model = await self._model(tid, platform)
        assert stored is not None
        waiting = await self._import_page(stored, page, limit)
        if waiting is not None:
            return waiting
        stored = await store.get_tournament(self.db, platform, tid) or stored
        if stored.imported_at is not None:
            record = await self.imports.state(platform, tid)
            rows, total = await store.get_standings(self.db, stored.pk, offset=offset, limit=limit)
            payload = Payload(encode_fields(rows, pagination=Pagination.of(page, limit, total)),
                              source="database", fetched_at=_epoch(stored.fetched_at))
            return Fresh(payload, self._imported_ttl(record), tag=keys.tournament_tag(platform, tid))
        rows = await self.lichess.fetch_standings(model, nb=offset + limit)
        total = model.nb_players if model.nb_players is not None else len(rows)
        payload = Payload(encode_fields(rows[offset:], pagination=Pagination.of(page, limit, max(total, len(rows)))),
                          source="api", fetched_at=time.time())
        return Fresh(payload, self.config.ongoing_ttl_s, tag=keys.tournament_tag(platform, tid))

    async def games(self, tid: str, page: int, limit: int, platform: str = "lichess") -> Payload:
        """``GET /api/tournaments/{id}/games``: games newest first, paginated (JSON)."""
        key = keys.games(platform, tid, page, limit)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        return await self.read.get(key, lambda: self._fetch_games(tid, page, limit, platform), upstream=UPSTREAM)

    async def _games_page(
        self, tid: str, page: int, limit: int, platform: str
    ) -> tuple[list[tuple[Game, str | None]], int, str, float, float | None, Fresh | None]:
        """``(games with PGN, total, source, fetched_at, ttl or None, importing page or None)``."""
        offset = (page - 1) * limit
        stored, model = await self._model(tid, platform)
        assert stored is not None
        waiting = await self._import_page(stored, page, limit)
        if waiting is not None:
            return [], 0, "database", waiting.payload.fetched_at, 0, waiting
        stored = await store.get_tournament(self.db, platform, tid) or stored
        if stored.imported_at is not None:
            record = await self.imports.state(platform, tid)
            rows, total = await store.get_games(self.db, stored.pk, tid, offset=offset, limit=limit)
            return rows, total, "database", _epoch(stored.fetched_at), self._imported_ttl(record), None
        export = await self.lichess.fetch_games(model)
        ordered = sorted(export.games, key=lambda g: g.game.started_at or "", reverse=True)
        rows = [(g.game, g.pgn or None) for g in ordered[offset: offset + limit]]
        return rows, len(ordered), "api", time.time(), self.config.ongoing_ttl_s, None

    async def _fetch_games(self, tid: str, page: int, limit: int, platform: str) -> Fresh:
        rows, total, source, fetched_at, ttl, waiting = await self._games_page(tid, page, limit, platform)
        if waiting is not None:
            return waiting
        payload = Payload(encode_fields([g for g, _ in rows], pagination=Pagination.of(page, limit, total)),
                          source=source, fetched_at=fetched_at)
        return Fresh(payload, ttl, tag=keys.tournament_tag(platform, tid))

    async def games_pgn(self, tid: str, page: int, limit: int, platform: str = "lichess") -> tuple[str, int | None]:
        """The same page of games as PGN text (games separated by a blank line), and how long
        (seconds) it stays fresh: None for an imported tournament (never changes)."""
        rows, _, _, _, ttl, waiting = await self._games_page(tid, page, limit, platform)
        text = "\n".join((pgn or game_to_pgn(game)).rstrip("\n") + "\n" for game, pgn in rows)
        if waiting is not None:
            return text, 0
        return text, None if ttl is None else int(ttl)

    # --- lists -------------------------------------------------------------------------------

    async def list(self, status: str | None, platform: str | None, page: int, limit: int) -> Payload:
        """``GET /api/tournaments``: stored tournaments newest first, filtered and paginated."""
        key = keys.tournament_list(status, platform, page, limit)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        return await self.read.get(key, lambda: self._fetch_list(status, platform, page, limit), upstream=UPSTREAM)

    async def _fetch_list(self, status: str | None, platform: str | None, page: int, limit: int) -> Fresh:
        source = "database"
        if await store.count_tournaments(self.db, statuses=LIVE_STATUSES) == 0:
            await self.read.refresh("discover:lichess", self._discover_fresh)
            source = "api"
        rows, total = await store.list_tournaments(
            self.db, status=status, platform=platform, offset=(page - 1) * limit, limit=limit
        )
        payload = Payload(encode_fields(rows, pagination=Pagination.of(page, limit, total)),
                          source=source, fetched_at=time.time())
        ttl = self.config.upcoming_list_ttl_s if status == "upcoming" else self.config.list_ttl_s
        return Fresh(payload, ttl, tag=keys.LISTS_TAG)

    async def _discover_fresh(self) -> Fresh:
        count = await self.discover()
        return Fresh(Payload(b'"data":' + str(count).encode(), source="api", fetched_at=time.time()), None,
                     cache=False)

    async def reimport(self, tid: str, platform: str = "lichess") -> istore.ImportRecord | None | bool:
        """Queue a re-import (``POST /api/admin/tournaments/{id}/reimport``): the import record, None
        when the tournament is not stored, False when it is not finished."""
        stored = await store.get_tournament(self.db, platform, tid)
        if stored is None:
            return None
        if stored.imported_at is None and stored.tournament.status != "finished":
            return False
        self.read.forget_failure(keys.tournament(platform, tid))
        record = await self.imports.request(platform, tid, trigger="reimport", force=True)
        if stored.imported_at is None:  # a failed import's cached answers go; an imported one stays served
            invalidate_tournament(self.cache, platform, tid)
        return record

    # --- batch -------------------------------------------------------------------------------

    async def batch(self, ids: list[str],
                    platform: str = "lichess") -> tuple[list[Payload], list[str], list[str], bool]:
        """Each id's detail payload in the order asked, the ids the upstream does not know, the ids
        not yet known (more unknown ids than ``batch_max_upstream`` upstream lookups, or a failed
        lookup), and whether the answer took an upstream call.

        Ids that are cached or stored are answered first; at most ``batch_max_upstream`` of the
        others start an upstream lookup (each coalesced and remembered like a single request).
        """
        known: dict[str, Payload | NotFound | UpstreamError] = {}
        answered: list[str] = []
        unknown: list[str] = []
        for tid in ids:
            key = keys.tournament(platform, tid)
            if self.cache.get(key) is not None or self.cache.get_stale(key) is not None \
                    or self.cache.get_stale(keys.failure(key)) is not None \
                    or await store.get_tournament(self.db, platform, tid) is not None:
                answered.append(tid)
            else:
                unknown.append(tid)
        looked_up = unknown[: self.config.batch_max_upstream]
        later = unknown[self.config.batch_max_upstream:]
        asked = answered + looked_up  # concurrently: each waits for the upstream at most client_wait_s
        results = await asyncio.gather(*(self._one(t, platform) for t in asked))
        known.update(zip(asked, results, strict=True))
        found = [p for t in ids if isinstance(p := known.get(t), Payload)]
        missing = [t for t in ids if isinstance(known.get(t), NotFound)]
        not_yet = [t for t in ids if t in later or isinstance(known.get(t), UpstreamError)]
        asked_upstream = bool(looked_up) or any(isinstance(p, NotFound) and not p.cached for p in known.values())
        return found, missing, not_yet, asked_upstream

    async def _one(self, tid: str, platform: str) -> Payload | NotFound | UpstreamError:
        try:
            return await self.get(tid, platform)
        except (NotFound, UpstreamError) as exc:
            return exc

    # --- jobs --------------------------------------------------------------------------------

    async def discover(self) -> int:
        """Store every tournament of Lichess's current list; returns how many (upserted). Lists
        are dropped from the cache when a stored tournament's status changed."""
        return await self.store_listed(await self.lichess.fetch_current())


def game_to_pgn(game: Game) -> str:
    """PGN text for a game stored without one (built with python-chess from its SAN moves)."""
    import chess.pgn  # python-chess (about 3 MiB of RSS): imported on first use, not at start

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
