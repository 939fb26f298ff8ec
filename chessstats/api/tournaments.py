"""``/api/tournaments`` routes (docs/API.md, "Tournaments")."""

from __future__ import annotations

import functools
import time

import msgspec
from sanic import Blueprint, HTTPResponse, Request

from chessstats.api.envelope import respond, respond_text
from chessstats.api.params import Query, choice_param, int_param, list_param, parse_query, tournament_id
from chessstats.errors import BadRequest
from chessstats.models.common import PLATFORMS, TOURNAMENT_STATUSES
from chessstats.payload import Payload
from chessstats.services.chesscom import ChesscomTournaments
from chessstats.services.tournaments import TournamentService

bp = Blueprint("tournaments", url_prefix="/api/tournaments")

PGN = "application/x-chess-pgn; charset=utf-8"

MAX_BATCH_IDS = 50
MAX_PAGE = 100_000
#: Platforms whose tournaments are served.
TOURNAMENT_PLATFORMS = ("lichess", "chesscom")


def _service(request: Request) -> TournamentService:
    return request.app.ctx.tournaments  # type: ignore[no-any-return]


def _chesscom(request: Request) -> ChesscomTournaments:
    return request.app.ctx.resources.chesscom_players.tournaments  # type: ignore[no-any-return]


def _platform(query: Query) -> str:
    platform = choice_param(query, "platform", PLATFORMS, "lichess")
    assert platform is not None
    if platform not in TOURNAMENT_PLATFORMS:
        raise BadRequest(f"{platform} tournaments are not served; platform must be lichess or chesscom")
    return platform


@functools.lru_cache(maxsize=8192)
def _list_args(query_string: str) -> tuple[str | None, str | None, int, int]:
    """``(status, platform, page, limit)`` of ``GET /api/tournaments`` (memoised per query string)."""
    query = parse_query(query_string)
    return (choice_param(query, "status", TOURNAMENT_STATUSES), choice_param(query, "platform", PLATFORMS),
            int_param(query, "page", 1, 1, MAX_PAGE), int_param(query, "limit", 20, 1, 100))


@functools.lru_cache(maxsize=8192)
def _detail_args(tid: str, query_string: str) -> tuple[str, str]:
    """``(id, platform)`` of ``GET /api/tournaments/{id}`` (memoised)."""
    platform = _platform(parse_query(query_string))
    return tournament_id(tid, platform), platform


@functools.lru_cache(maxsize=8192)
def _page_args(tid: str, query_string: str, default_limit: int, max_limit: int) -> tuple[str, str, int, int]:
    """``(id, platform, page, limit)`` of a paginated tournament route (memoised)."""
    query = parse_query(query_string)
    platform = _platform(query)
    return (tournament_id(tid, platform), platform, int_param(query, "page", 1, 1, MAX_PAGE),
            int_param(query, "limit", default_limit, 1, max_limit))


@bp.route("", methods=["GET", "HEAD"], strict_slashes=False)
async def list_tournaments(request: Request) -> HTTPResponse:
    """Tournament summaries, newest first: ``?status=&platform=&page=&limit=`` (limit 1..100, default 20)."""
    status, platform, page, limit = _list_args(request.query_string)
    return respond(request, await _service(request).list(status, platform, page, limit))


@bp.route("/batch", methods=["GET", "HEAD"])
async def batch(request: Request) -> HTTPResponse:
    """Several tournaments in the order asked: ``?ids=a,b,c`` (at most 50); adds ``count``, ``notFound``
    (the upstream does not know them) and ``notYetKnown`` (not looked up yet, or the lookup failed: ask again)."""
    query = parse_query(request.query_string)
    ids = list_param(query, "ids")  # ?ids=a,b and ?ids=a&ids=b both work
    if not ids:
        raise BadRequest("ids is required: a comma-separated list of tournament ids")
    if len(ids) > MAX_BATCH_IDS:
        raise BadRequest(f"at most {MAX_BATCH_IDS} ids per batch, got {len(ids)}")
    platform = _platform(query)
    if platform != "lichess":
        raise BadRequest("batch serves Lichess tournaments only")
    ids = list(dict.fromkeys(tournament_id(i, platform) for i in ids))
    found, missing, not_yet, asked_upstream = await _service(request).batch(ids, platform)
    prefix = b'"data":'
    items = [p.fields[len(prefix):] for p in found]
    fields = b"".join((prefix, b"[", b",".join(items), b'],"count":', str(len(items)).encode(),
                       b',"notFound":', msgspec.json.encode(missing), b',"notYetKnown":', msgspec.json.encode(not_yet)))
    all_cached = not asked_upstream and not not_yet and all(p.cached for p in found)
    sources = {p.source for p in found} | ({"api"} if asked_upstream else set())
    source = "cache" if all_cached else ("api" if "api" in sources else "database")
    fetched_at = min((p.fetched_at for p in found), default=0.0) or time.time()
    expires = [p.expires_at for p in found if p.expires_at is not None]
    payload = Payload(fields, source=source, cached=all_cached, stale=any(p.stale for p in found),
                      fetched_at=fetched_at, expires_at=min(expires) if expires else None)
    return respond(request, payload)


@bp.route("/<tid:str>", methods=["GET", "HEAD"])
async def get_tournament(request: Request, tid: str) -> HTTPResponse:
    """One tournament (Lichess arena, else swiss), with its first standings when known."""
    tid, platform = _detail_args(tid, request.query_string)
    if platform == "chesscom":
        return respond(request, await _chesscom(request).get(tid))
    return respond(request, await _service(request).get(tid, platform))


@bp.route("/<tid:str>/results", methods=["GET", "HEAD"])
async def results(request: Request, tid: str) -> HTTPResponse:
    """Standings in rank order: ``?page=&limit=`` (limit 1..500, default 100)."""
    tid, platform, page, limit = _page_args(tid, request.query_string, 100, 500)
    if platform == "chesscom":
        return respond(request, await _chesscom(request).results(tid, page, limit))
    return respond(request, await _service(request).results(tid, page, limit, platform))


@bp.route("/<tid:str>/games", methods=["GET", "HEAD"])
async def games(request: Request, tid: str) -> HTTPResponse:
    """Games newest first: ``?page=&limit=`` (limit 1..200, default 50); ``?format=pgn`` for PGN text."""
    tid, platform, page, limit = _page_args(tid, request.query_string, 50, 200)
    fmt = choice_param(parse_query(request.query_string), "format", ("json", "pgn"), "json")
    service = _service(request)
    if platform == "chesscom":
        if fmt == "pgn":
            text, fresh_s = await _chesscom(request).games_pgn(tid, page, limit)
            return respond_text(request, text.encode("utf-8"), PGN, fresh_s)
        return respond(request, await _chesscom(request).games(tid, page, limit))
    if fmt == "pgn":
        text, fresh_s = await service.games_pgn(tid, page, limit, platform)
        return respond_text(request, text.encode("utf-8"), PGN, fresh_s)
    return respond(request, await service.games(tid, page, limit, platform))
