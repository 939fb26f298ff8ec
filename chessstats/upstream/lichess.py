"""The Lichess API client (``LICHESS_API_URL``, default ``https://lichess.org/api``).

Lichess asks for one request at a time: every request, streams included, goes through the
upstream's :class:`~chessstats.upstream.gate.UpstreamGate` (``client.gate``), shared by every worker
process of the host: in-flight slots (``max_in_flight``, 1), strict rate spacing (``rate``), the
pause after a 429 (``Retry-After`` or ``pause_after_429_s``, doubled when repeated), a total
deadline per call (``timeout_s``; ``stream_timeout_s`` for the NDJSON/PGN exports), a bounded wait
for a turn (``max_queue_wait_s``) and a circuit breaker. Build it with :func:`open_lichess`.

Endpoints used: ``GET /tournament`` (current arenas), ``GET /tournament/{id}`` (arena),
``GET /swiss/{id}``, ``GET /tournament|swiss/{id}/results`` (NDJSON standings) and
``GET /tournament|swiss/{id}/games`` (NDJSON asked for, PGN accepted: the body is read by its
Content-Type). Wire Structs are private to this module; callers get our models.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import msgspec

from chessstats.errors import NotFound, UpstreamError
from chessstats.models import Clock, Game, GamePlayer, Opening, Standing, Tournament, TournamentPlayer
from chessstats.models.common import utc_iso
from chessstats.models.game import ParsedGame
from chessstats.redisconn import RedisBackend
from chessstats.upstream.gate import GateSettings, UpstreamGate, open_gate, parse_rate
from chessstats.upstream.http import GatedClient, build_client, gated_stream, iter_ndjson

if TYPE_CHECKING:
    from chessstats.config import Config

log = logging.getLogger(__name__)

UPSTREAM = "lichess"
#: Seconds of PGN reading between two yields to the event loop while a games export streams in.
PGN_SLICE_S = 0.001

# --- wire shapes (Lichess's spelling) --------------------------------------------------------


class _Wire(msgspec.Struct, kw_only=True):
    pass


class _Key(_Wire):
    key: str | None = None


class _Clock(_Wire):
    limit: int | None = None
    increment: int | None = None


class _Winner(_Wire):
    name: str | None = None
    title: str | None = None


class _Podium(_Wire):
    name: str
    rank: int | None = None
    title: str | None = None


class _Arena(_Wire):
    """Arena in ``/tournament`` lists (status 10/20/30, epoch ms) and ``/tournament/{id}`` (ISO, flags)."""

    id: str
    fullName: str | None = None
    system: str | None = None
    startsAt: int | str | None = None
    finishesAt: int | str | None = None
    minutes: int | None = None
    nbPlayers: int | None = None
    perf: _Key | None = None
    clock: _Clock | None = None
    variant: str | _Key | None = None
    rated: bool | None = None
    status: int | None = None
    isFinished: bool = False
    isStarted: bool = False
    winner: _Winner | None = None
    podium: list[_Podium] | None = None


class _Swiss(_Wire):
    id: str
    name: str | None = None
    startsAt: int | str | None = None
    clock: _Clock | None = None
    variant: str | None = None
    nbPlayers: int | None = None
    status: str | None = None
    rated: bool | None = None


class _Current(_Wire):
    created: list[_Arena] = []
    started: list[_Arena] = []
    finished: list[_Arena] = []


class _ResultLine(_Wire):
    rank: int
    username: str
    title: str | None = None
    rating: int | None = None
    score: int | None = None
    points: float | None = None
    tieBreak: float | None = None
    performance: int | None = None
    team: str | None = None


class _User(_Wire):
    name: str | None = None
    title: str | None = None


class _Side(_Wire):
    user: _User | None = None
    name: str | None = None
    aiLevel: int | None = None
    rating: int | None = None
    ratingDiff: int | None = None


class _Players(_Wire):
    white: _Side = msgspec.field(default_factory=_Side)
    black: _Side = msgspec.field(default_factory=_Side)


class _Opening(_Wire):
    eco: str | None = None
    name: str | None = None


class _TourRef(_Wire):
    id: str | None = None


class _GameJson(_Wire):
    id: str
    rated: bool | None = None
    variant: str | None = None
    speed: str | None = None
    perf: str | None = None
    createdAt: int | None = None
    lastMoveAt: int | None = None
    status: str | None = None
    players: _Players = msgspec.field(default_factory=_Players)
    winner: str | None = None
    initialFen: str | None = None
    opening: _Opening | None = None
    moves: str | None = None
    pgn: str | None = None
    arenaTour: _TourRef | None = None
    swissTour: _TourRef | None = None


_arena_decoder = msgspec.json.Decoder(_Arena)
_swiss_decoder = msgspec.json.Decoder(_Swiss)
_current_decoder = msgspec.json.Decoder(_Current)
_result_decoder = msgspec.json.Decoder(_ResultLine)
_game_decoder = msgspec.json.Decoder(_GameJson)

# --- conversions -----------------------------------------------------------------------------

#: Statuses that end a game; with no ``winner`` such a game is a draw (e.g. ``outoftime`` against
#: insufficient material). Every other status without a winner (created, started, aborted,
#: noStart, unknownFinish, cheat, a status we do not know) gives ``*``.
ENDED_WITHOUT_WINNER_IS_DRAW = frozenset(
    {"draw", "stalemate", "outoftime", "timeout", "insufficientMaterialClaim", "variantEnd", "mate", "resign"}
)


def game_result(winner: str | None, status: str | None) -> str:
    """The result (``1-0 0-1 1/2-1/2 *``) from Lichess's ``winner`` and ``status``.

    A missing winner means a draw only when the status says the game ended (see
    :data:`ENDED_WITHOUT_WINNER_IS_DRAW`); aborted, unstarted and running games give ``*``.
    """
    if winner == "white":
        return "1-0"
    if winner == "black":
        return "0-1"
    if status in ENDED_WITHOUT_WINNER_IS_DRAW:
        return "1/2-1/2"
    return "*"


def speed_of(clock: Clock | None) -> str | None:
    """Lichess's speed for a clock: estimated duration ``limit + 40 × increment`` seconds.

    < 30 ultraBullet, < 180 bullet, < 480 blitz, < 1500 rapid, else classical (lila ``Speed``).
    """
    if clock is None or clock.limit is None:
        return None
    total = clock.limit + 40 * (clock.increment or 0)
    for bound, name in ((30, "ultraBullet"), (180, "bullet"), (480, "blitz"), (1500, "rapid")):
        if total < bound:
            return name
    return "classical"


def _variant(value: str | _Key | None) -> str | None:
    return value.key if isinstance(value, _Key) else value


def _clock(value: _Clock | None) -> Clock | None:
    return None if value is None else Clock(limit=value.limit, increment=value.increment)


def _arena_status(arena: _Arena) -> str:
    if arena.isFinished or arena.status == 30:
        return "finished"
    if arena.isStarted or arena.status == 20:
        return "ongoing"
    return "upcoming"


def arena_to_model(arena: _Arena, site: str) -> Tournament:
    """Our Tournament from a Lichess arena. ``finishesAt`` of a detail is ``startsAt + minutes``."""
    starts_at = utc_iso(arena.startsAt)
    finishes_at = utc_iso(arena.finishesAt)
    if finishes_at is None and starts_at is not None and arena.minutes is not None:
        start = datetime.fromisoformat(starts_at.replace("Z", "+00:00"))
        finishes_at = utc_iso(start + timedelta(minutes=arena.minutes))
    winner = None
    if arena.winner is not None and arena.winner.name:
        winner = TournamentPlayer(username=arena.winner.name, title=arena.winner.title)
    elif arena.podium:
        first = min(arena.podium, key=lambda p: p.rank or 0)
        winner = TournamentPlayer(username=first.name, title=first.title)
    return Tournament(
        id=arena.id, platform="lichess", system=arena.system or "arena", name=arena.fullName,
        status=_arena_status(arena), perf_type=arena.perf.key if arena.perf else None,
        variant=_variant(arena.variant), clock=_clock(arena.clock), rated=arena.rated,
        starts_at=starts_at, finishes_at=finishes_at, nb_players=arena.nbPlayers, winner=winner,
        url=f"{site}/tournament/{arena.id}",
    )


def swiss_to_model(swiss: _Swiss, site: str) -> Tournament:
    """Our Tournament from a Lichess swiss; its perf type follows from variant and clock."""
    status = {"created": "upcoming", "started": "ongoing", "finished": "finished"}.get(swiss.status or "", swiss.status)
    clock = _clock(swiss.clock)
    variant = swiss.variant
    perf = variant if variant and variant not in ("standard", "fromPosition") else speed_of(clock)
    return Tournament(
        id=swiss.id, platform="lichess", system="swiss", name=swiss.name, status=status or "upcoming",
        perf_type=perf, variant=variant, clock=clock, rated=swiss.rated, starts_at=utc_iso(swiss.startsAt),
        finishes_at=None, nb_players=swiss.nbPlayers, winner=None, url=f"{site}/swiss/{swiss.id}",
    )


def _side(side: _Side) -> GamePlayer:
    user = side.user
    username = user.name if user else side.name
    if username is None and side.aiLevel is not None:
        username = f"Stockfish level {side.aiLevel}"
    return GamePlayer(
        username=username, title=user.title if user else None, rating=side.rating, rating_diff=side.ratingDiff
    )


def game_to_model(game: _GameJson, site: str, tournament_id: str | None = None) -> Game:
    """Our Game from a Lichess game JSON (``/games`` NDJSON, ``/game/export``)."""
    tour = game.arenaTour or game.swissTour
    return Game(
        id=game.id, platform="lichess", url=f"{site}/{game.id}", white=_side(game.players.white),
        black=_side(game.players.black), result=game_result(game.winner, game.status), status=game.status,
        winner=game.winner, variant=game.variant, perf_type=game.perf, rated=game.rated,
        initial_fen=game.initialFen,
        opening=Opening(eco=game.opening.eco, name=game.opening.name) if game.opening else None,
        moves=game.moves, started_at=utc_iso(game.createdAt), ended_at=utc_iso(game.lastMoveAt),
        tournament_id=tournament_id or (tour.id if tour else None),
    )


def decode_game(line: bytes, site: str = "https://lichess.org") -> Game:
    """Decode one Lichess game JSON document into our Game (raises msgspec errors when malformed)."""
    return game_to_model(_game_decoder.decode(line), site)


# --- the client ------------------------------------------------------------------------------


@dataclass(slots=True)
class GamesExport:
    """The games of a tournament: ``games`` in export order, ``skipped`` unreadable ones."""

    games: list[ParsedGame]
    skipped: int


class LichessClient(GatedClient):
    """Lichess API client; every request goes through :attr:`gate`.

    **Parameters:**
    * **base_url** - the API base including ``/api``.
    * **token** - *(optional)* a personal API token sent as ``Authorization: Bearer``.
    * **contact** - *(optional)* put into the User-Agent.
    * **timeout_s** - *(optional)* connect/read timeout of the HTTP client, seconds (the gate's
      total deadline is ``gate.settings.timeout_s``). Defaults to 20.
    * **max_requests_per_s** - *(optional, deprecated)* the rate of a gate built here when no
      ``gate`` is given. Defaults to 2.
    * **transport** - *(optional)* an httpx transport (tests).
    * **gate** - *(optional)* the shared :class:`~chessstats.upstream.gate.UpstreamGate`; None
      builds one local to this process (see :func:`open_lichess` for the shared one).

    Every ``fetch_*`` takes ``max_wait_s`` (seconds to wait for a turn; None: the gate's
    ``max_queue_wait_s``) and raises :class:`~chessstats.errors.NotFound`,
    :class:`~chessstats.errors.Gone`, :class:`~chessstats.errors.UpstreamRateLimited`,
    :class:`~chessstats.errors.UpstreamBusy`, :class:`~chessstats.errors.UpstreamBlocked` or
    :class:`~chessstats.errors.UpstreamError`.
    """

    def __init__(
        self, base_url: str, *, token: str = "", contact: str = "", timeout_s: float = 20.0,
        max_requests_per_s: float | None = None, transport: httpx.AsyncBaseTransport | None = None,
        gate: UpstreamGate | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = build_client(base_url, contact=contact, timeout_s=timeout_s, headers=headers,
                                    transport=transport)
        base = base_url.rstrip("/")
        self.site = base[: -len("/api")] if base.endswith("/api") else base
        if gate is None:
            rate = parse_rate(f"{max_requests_per_s or 2.0}/1s")
            gate = UpstreamGate(UPSTREAM, GateSettings(timeout_s=timeout_s, rate=rate))
        self.gate = gate

    @asynccontextmanager
    async def _request(self, path: str, *, accept: str = "application/json",
                       params: dict[str, str | int] | None = None, stream: bool = False,
                       max_wait_s: float | None = None, method: str = "GET",
                       content: bytes | None = None) -> AsyncIterator[httpx.Response]:
        """One request through the gate; the block reads the body (its errors are mapped and counted)."""
        async with gated_stream(self.gate, self._client, path, accept=accept, params=params, stream=stream,
                                max_wait_s=max_wait_s, method=method, content=content) as resp:
            yield resp

    async def _json(self, path: str, decoder: msgspec.json.Decoder[object], *,
                    max_wait_s: float | None = None) -> tuple[object, bytes]:
        async with self._request(path, max_wait_s=max_wait_s) as resp:
            body = await resp.aread()
            return decoder.decode(body), body

    async def fetch_current(self, *, max_wait_s: float | None = None) -> list[Tournament]:
        """``GET /tournament``: created, started and finished arenas, as Tournaments."""
        current, _ = await self._json("/tournament", _current_decoder, max_wait_s=max_wait_s)
        if not isinstance(current, _Current):
            raise UpstreamError(f"{UPSTREAM}: unexpected body for /tournament", UPSTREAM)
        return [arena_to_model(a, self.site) for a in (*current.created, *current.started, *current.finished)]

    @staticmethod
    def _same_id(asked: str, answered: str, kind: str) -> None:
        """Accept an answer whose id differs from the asked one only by case; else NotFound."""
        if answered != asked and answered.lower() != asked.lower():
            raise NotFound(f"{UPSTREAM}: {kind} {asked!r} answered with another id {answered!r}")

    async def fetch_arena(self, tournament_id: str, *, max_wait_s: float | None = None) -> tuple[Tournament, bytes]:
        """``GET /tournament/{id}``: the arena and the raw body. Raises NotFound for no such arena.

        The model carries Lichess's id (which may differ from ``tournament_id`` by case only).
        """
        arena, raw = await self._json(f"/tournament/{tournament_id}", _arena_decoder, max_wait_s=max_wait_s)
        if not isinstance(arena, _Arena):
            raise UpstreamError(f"{UPSTREAM}: unexpected body for arena {tournament_id!r}", UPSTREAM)
        self._same_id(tournament_id, arena.id, "arena")
        return arena_to_model(arena, self.site), raw

    async def fetch_swiss(self, tournament_id: str, *, max_wait_s: float | None = None) -> tuple[Tournament, bytes]:
        """``GET /swiss/{id}``: the swiss and the raw body. Raises NotFound for no such swiss.

        The model carries Lichess's id (which may differ from ``tournament_id`` by case only).
        """
        swiss, raw = await self._json(f"/swiss/{tournament_id}", _swiss_decoder, max_wait_s=max_wait_s)
        if not isinstance(swiss, _Swiss):
            raise UpstreamError(f"{UPSTREAM}: unexpected body for swiss {tournament_id!r}", UPSTREAM)
        self._same_id(tournament_id, swiss.id, "swiss")
        return swiss_to_model(swiss, self.site), raw

    async def fetch_tournament(self, tournament_id: str, *,
                               max_wait_s: float | None = None) -> tuple[Tournament, bytes]:
        """An arena, or (when Lichess has no arena with that id) a swiss. Raises NotFound for neither."""
        try:
            return await self.fetch_arena(tournament_id, max_wait_s=max_wait_s)
        except NotFound:
            return await self.fetch_swiss(tournament_id, max_wait_s=max_wait_s)

    async def fetch_standings(self, tournament: Tournament, nb: int | None = None, *,
                              max_wait_s: float | None = None) -> list[Standing]:
        """``GET /{tournament|swiss}/{id}/results`` (NDJSON): the standings in rank order.

        A streamed export: its deadline is the gate's ``stream_timeout_s``.

        Args:
            tournament: the arena or swiss (its ``system`` picks the endpoint).
            nb: at most this many rows; None for all.
            max_wait_s: seconds to wait for a turn; None for the gate's bound.
        """
        kind = "swiss" if tournament.system == "swiss" else "tournament"
        params: dict[str, str | int] = {"nb": nb} if nb else {}
        rows: list[Standing] = []
        async with self._request(f"/{kind}/{tournament.id}/results", accept="application/x-ndjson", params=params,
                                 stream=True, max_wait_s=max_wait_s) as r:
            async for line in iter_ndjson(r.aiter_bytes(), _result_decoder):
                rows.append(Standing(
                    rank=line.rank, username=line.username, title=line.title, rating=line.rating,
                    score=line.score if kind == "tournament" else None,
                    points=line.points, tie_break=line.tieBreak, performance=line.performance, team=line.team,
                ))
        return rows

    async def fetch_games(self, tournament: Tournament, *, max_wait_s: float | None = None) -> GamesExport:
        """``GET /{tournament|swiss}/{id}/games``: every game, NDJSON asked for, PGN accepted.

        NDJSON is requested with ``pgnInJson``, ``opening`` and ``clocks=false``; a body served as
        ``application/x-chess-pgn`` is read with python-chess instead. A streamed export: its deadline
        is the gate's ``stream_timeout_s``.
        """
        # python-chess (about 3 MiB of RSS) is imported by the first games export, not at start
        from chessstats.upstream.pgn import PgnReader, pgn_tags, stated_fide_ids

        kind = "swiss" if tournament.system == "swiss" else "tournament"
        params: dict[str, str | int] = {"pgnInJson": "true", "opening": "true", "clocks": "false", "evals": "false"}
        async with self._request(
            f"/{kind}/{tournament.id}/games", accept="application/x-ndjson", params=params, stream=True,
            max_wait_s=max_wait_s,
        ) as resp:
            ctype = resp.headers.get("content-type", "")
            if "pgn" in ctype:
                # Read game by game as the export streams in (the whole body is never held), on the
                # event loop in slices of PGN_SLICE_S seconds with a yield after each, so that other
                # requests go on (most games cost ~0.1 ms; a replayed one ~1-5 ms). Inside the gate's
                # block, so that a cut-off export counts as the upstream's failure.
                reader = PgnReader(tournament_id=tournament.id, perf_type=tournament.perf_type,
                                   rated=tournament.rated)
                decoder = codecs.getincrementaldecoder("utf-8")()
                async for chunk in resp.aiter_bytes():
                    reader.feed(decoder.decode(chunk))
                    while reader.parse(PGN_SLICE_S):
                        await asyncio.sleep(0)
                    await asyncio.sleep(0)
                reader.feed(decoder.decode(b"", final=True))
                reader.close()
                return GamesExport(reader.games, reader.skipped)
            if "json" not in ctype:
                raise UpstreamError(f"{UPSTREAM}: unexpected Content-Type {ctype!r} for games", UPSTREAM)
            out: list[ParsedGame] = []
            async for raw in iter_ndjson(resp.aiter_bytes(), _game_decoder):
                model = game_to_model(raw, self.site, tournament.id)
                out.append(ParsedGame(model, raw.pgn or "", stated_fide_ids(pgn_tags(raw.pgn)) if raw.pgn else None))
            return GamesExport(out, 0)


def open_lichess(config: Config, data_dir: str | Path | None,
                 transport: httpx.AsyncBaseTransport | None = None,
                 redis: RedisBackend | None = None) -> LichessClient:
    """The Lichess client of ``config`` (``[lichess]``, ``[upstream] contact``) whose gate shares its
    slots and state with every process using ``<data_dir>/gate`` (None: this process only).

    Raises:
        ValueError: ``lichess.rate`` does not parse (the config loader checks it first).
    """
    table = config.lichess
    return LichessClient(
        table.url, token=table.token, contact=config.upstream.contact, timeout_s=table.timeout_s,
        transport=transport, gate=open_gate(UPSTREAM, table, data_dir, redis),
    )


class _Stats(_Wire):
    games: int | None = None


class _Counts(_Wire):
    nbPlayers: int | None = None
    stats: _Stats | None = None


_counts_decoder = msgspec.json.Decoder(_Counts)


def upstream_counts(raw: bytes | None) -> tuple[int | None, int | None]:
    """``(players, games)`` a tournament detail body (``GET /tournament/{id}`` or ``/swiss/{id}``)
    reports: ``nbPlayers`` and ``stats.games``; None where absent or when the body is unreadable."""
    if not raw:
        return None, None
    try:
        counts = _counts_decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None, None
    return counts.nbPlayers, counts.stats.games if counts.stats else None
