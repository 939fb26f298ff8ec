"""``/api/tournaments`` routes (docs/API.md, "Tournaments")."""

from __future__ import annotations

import time

from sanic import Blueprint, HTTPResponse, Request

from chessstats.api.envelope import respond, respond_text
from chessstats.api.params import choice_param, int_param, query_values, tournament_id
from chessstats.errors import BadRequest
from chessstats.models.common import PLATFORMS, TOURNAMENT_STATUSES
from chessstats.payload import Payload
from chessstats.services.tournaments import TournamentService

bp = Blueprint("tournaments", url_prefix="/api/tournaments")

PGN = "application/x-chess-pgn; charset=utf-8"

MAX_BATCH_IDS = 50
MAX_PAGE = 100_000
#: Platforms whose tournaments are served (Chess.com comes with its client).
TOURNAMENT_PLATFORMS = ("lichess",)


def _service(request: Request) -> TournamentService:
    return request.app.ctx.tournaments  # type: ignore[no-any-return]


def _platform(request: Request) -> str:
    platform = choice_param(request, "platform", PLATFORMS, "lichess")
    assert platform is not None
    if platform not in TOURNAMENT_PLATFORMS:
        raise BadRequest(f"{platform} tournaments are not served yet; platform must be lichess")
    return platform


@bp.route("", methods=["GET", "HEAD"], strict_slashes=False)
async def list_tournaments(request: Request) -> HTTPResponse:
    """Tournament summaries, newest first: ``?status=&platform=&page=&limit=`` (limit 1..100, default 20)."""
    status = choice_param(request, "status", TOURNAMENT_STATUSES)
    platform = choice_param(request, "platform", PLATFORMS)
    page = int_param(request, "page", 1, 1, MAX_PAGE)
    limit = int_param(request, "limit", 20, 1, 100)
    return respond(request, await _service(request).list(status, platform, page, limit))


@bp.route("/batch", methods=["GET", "HEAD"])
async def batch(request: Request) -> HTTPResponse:
    """Several tournaments in the order asked: ``?ids=a,b,c`` (at most 50); adds ``count`` and ``notFound``."""
    raw = ",".join(query_values(request, "ids"))  # ?ids=a,b and ?ids=a&ids=b both work
    ids = [part.strip() for part in raw.split(",") if part.strip()]
    if not ids:
        raise BadRequest("ids is required: a comma-separated list of tournament ids")
    if len(ids) > MAX_BATCH_IDS:
        raise BadRequest(f"at most {MAX_BATCH_IDS} ids per batch, got {len(ids)}")
    platform = _platform(request)
    ids = list(dict.fromkeys(tournament_id(i, platform) for i in ids))
    found, missing, asked_upstream = await _service(request).batch(ids, platform)
    prefix = b'"data":'
    items = [p.fields[len(prefix):] for p in found]
    missing_json = b"[" + b",".join(b'"' + m.encode() + b'"' for m in missing) + b"]"
    fields = b"".join((prefix, b"[", b",".join(items), b'],"count":', str(len(items)).encode(),
                       b',"notFound":', missing_json))
    all_cached = not asked_upstream and all(p.cached for p in found)
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
    platform = _platform(request)
    return respond(request, await _service(request).get(tournament_id(tid, platform), platform))


@bp.route("/<tid:str>/results", methods=["GET", "HEAD"])
async def results(request: Request, tid: str) -> HTTPResponse:
    """Standings in rank order: ``?page=&limit=`` (limit 1..500, default 100)."""
    platform = _platform(request)
    page = int_param(request, "page", 1, 1, MAX_PAGE)
    limit = int_param(request, "limit", 100, 1, 500)
    return respond(request, await _service(request).results(tournament_id(tid, platform), page, limit, platform))


@bp.route("/<tid:str>/games", methods=["GET", "HEAD"])
async def games(request: Request, tid: str) -> HTTPResponse:
    """Games newest first: ``?page=&limit=`` (limit 1..200, default 50); ``?format=pgn`` for PGN text."""
    platform = _platform(request)
    page = int_param(request, "page", 1, 1, MAX_PAGE)
    limit = int_param(request, "limit", 50, 1, 200)
    fmt = choice_param(request, "format", ("json", "pgn"), "json")
    service = _service(request)
    tid = tournament_id(tid, platform)
    if fmt == "pgn":
        text, fresh_s = await service.games_pgn(tid, page, limit, platform)
        return respond_text(request, text.encode("utf-8"), PGN, fresh_s)
    return respond(request, await service.games(tid, page, limit, platform))

