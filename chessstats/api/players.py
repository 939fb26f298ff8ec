"""``/api/players`` routes (docs/API.md, "Players") and ``POST /api/admin/players/{id}/links``."""

from __future__ import annotations

import functools
import re

import msgspec
from sanic import Blueprint, HTTPResponse, Request

from chessstats.api.admin import read_body, require_token
from chessstats.api.envelope import json_response, respond
from chessstats.api.params import Query, choice_param, int_param, parse_query
from chessstats.errors import BadRequest, Conflict
from chessstats.models.common import PERF_TYPES
from chessstats.services.chesscom import ChesscomService
from chessstats.services.players import PlayerService

bp = Blueprint("players", url_prefix="/api/players")
admin_bp = Blueprint("players_admin", url_prefix="/api/admin/players")
admin_bp.on_request(require_token)

#: Perf types with a Lichess leaderboard (none for correspondence).
LEADERBOARD_PERFS = tuple(p for p in PERF_TYPES if p != "correspondence")
#: A Lichess username: 2 to 30 letters, digits, ``_`` or ``-``.
LICHESS_USERNAME = re.compile(r"^[A-Za-z0-9_-]{2,30}$")
#: FIDE ids are positive integers (at most 10 digits).
FIDE_ID = re.compile(r"^[0-9]{1,10}$")
#: Shortest FIDE search query.
MIN_QUERY = 3
#: ``since``/``until`` upper bound (epoch milliseconds, year 2286).
MAX_EPOCH_MS = 9_999_999_999_999
#: Largest ``page`` of a paginated players route (as the tournament routes).
MAX_PAGE = 100_000
#: Largest stored player id: SQLite's (and PostgreSQL's ``bigint``) largest integer.
MAX_PLAYER_ID = 2**63 - 1


def _service(request: Request) -> PlayerService:
    return request.app.ctx.resources.players  # type: ignore[no-any-return]


def lichess_username(value: str) -> str:
    """Validate a Lichess username (400 otherwise); case is kept (lookups are case-insensitive)."""
    if not LICHESS_USERNAME.match(value):
        raise BadRequest(f"malformed Lichess username {value[:40]!r}: 2 to 30 letters, digits, _ or -")
    return value


def player_id(value: int) -> int:
    """Validate a stored player id from the route: 1..2**63-1 (400 otherwise: a malformed id; a
    well-formed id no player has is 404 from the service)."""
    if not 1 <= value <= MAX_PLAYER_ID:
        shown = str(value)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise BadRequest(f"malformed player id {shown}: expected a whole number from 1 to {MAX_PLAYER_ID}")
    return value


def fide_id(value: str) -> int:
    """Validate a FIDE id: a positive integer (400 otherwise)."""
    if not FIDE_ID.match(value) or int(value) == 0:
        raise BadRequest(f"malformed FIDE id {value[:40]!r}: expected a positive whole number")
    return int(value)


@functools.lru_cache(maxsize=4096)
def _top_args(perf_type: str, query_string: str) -> tuple[str, int]:
    """``(perfType, nb)`` of a leaderboard request (memoised)."""
    if perf_type not in LEADERBOARD_PERFS:
        raise BadRequest(f"unknown perf type {perf_type[:40]!r}: one of {', '.join(LEADERBOARD_PERFS)}")
    return perf_type, int_param(parse_query(query_string), "nb", 100, 1, 200)


def _time_range(query: Query) -> tuple[int, int]:
    """``(since, until)`` of a games request in epoch milliseconds (-1 when absent).

    Raises:
        BadRequest: either is not a whole number in 0..MAX_EPOCH_MS, or ``since`` is after ``until``.
    """
    since = int_param(query, "since", -1, 0, MAX_EPOCH_MS)
    until = int_param(query, "until", -1, 0, MAX_EPOCH_MS)
    if since >= 0 and until >= 0 and since > until:
        raise BadRequest(f"since ({since}) is after until ({until}): both are epoch milliseconds, since <= until")
    return since, until


@functools.lru_cache(maxsize=4096)
def _games_args(username: str, query_string: str) -> tuple[str, int, int | None, int | None, str | None]:
    """``(username, max, since, until, perfType)`` of a player's games request (memoised)."""
    query = parse_query(query_string)
    since, until = _time_range(query)
    return (lichess_username(username), int_param(query, "max", 100, 1, 300), None if since < 0 else since,
            None if until < 0 else until, choice_param(query, "perfType", PERF_TYPES))


@bp.route("/lichess/top/<perf_type:str>", methods=["GET", "HEAD"])
async def lichess_top(request: Request, perf_type: str) -> HTTPResponse:
    """A Lichess leaderboard: ``?nb=`` 1..200 (default 100; Lichess serves at most 100); 400 listing
    the valid perf types for another."""
    perf, nb = _top_args(perf_type, request.query_string)
    return respond(request, await _service(request).leaderboard(perf, nb))


@bp.route("/fide/top", methods=["GET", "HEAD"])
async def fide_top(request: Request) -> HTTPResponse:
    """The FIDE open top list: ``?limit=`` 1..100 (default 100)."""
    limit = int_param(parse_query(request.query_string), "limit", 100, 1, 100)
    return respond(request, await _service(request).fide_top(limit))


@bp.route("/fide/search", methods=["GET", "HEAD"])
async def fide_search(request: Request) -> HTTPResponse:
    """FIDE players whose name matches ``?q=`` (at least 3 characters, else 400)."""
    values = parse_query(request.query_string).get("q") or [""]
    q = " ".join(values[0].split())
    if len(q) < MIN_QUERY:
        raise BadRequest(f"q must have at least {MIN_QUERY} characters, got {q[:40]!r}")
    if len(q) > 100:
        raise BadRequest("q must have at most 100 characters")
    return respond(request, await _service(request).fide_search(q))


@bp.route("/fide/<fid:str>", methods=["GET", "HEAD"])
async def fide_profile(request: Request, fid: str) -> HTTPResponse:
    """A FIDE profile by FIDE id (400 when not a number; 404 when unknown)."""
    return respond(request, await _service(request).fide_profile(fide_id(fid)))


@bp.route("/fide/<fid:str>/history", methods=["GET", "HEAD"])
async def fide_history(request: Request, fid: str) -> HTTPResponse:
    """A FIDE rating history: standard, rapid and blitz series of ``{date: YYYY-MM-01, rating}``."""
    return respond(request, await _service(request).fide_history(fide_id(fid)))


@bp.route("/lichess/<username:str>", methods=["GET", "HEAD"])
async def lichess_profile(request: Request, username: str) -> HTTPResponse:
    """A Lichess profile (case-insensitive username); 410 for a closed account, 404 for an unknown one."""
    return respond(request, await _service(request).lichess_profile(lichess_username(username)))


@bp.route("/lichess/<username:str>/history", methods=["GET", "HEAD"])
async def lichess_history(request: Request, username: str) -> HTTPResponse:
    """A Lichess rating history: one series per perf type of ``{date: YYYY-MM-DD, rating}``."""
    return respond(request, await _service(request).lichess_history(lichess_username(username)))


@bp.route("/lichess/<username:str>/games", methods=["GET", "HEAD"])
async def lichess_games(request: Request, username: str) -> HTTPResponse:
    """A Lichess player's games, newest first: ``?max=`` 1..300 (default 100), ``since``/``until``
    (epoch ms), ``perfType``. Never cached."""
    name, max_games, since, until, perf = _games_args(username, request.query_string)
    payload = await _service(request).lichess_games(name, max_games=max_games, since=since, until=until,
                                                    perf_type=perf)
    return respond(request, payload)


#: A Chess.com username: letters, digits, ``_`` and ``-``.
CHESSCOM_USERNAME = re.compile(r"^[A-Za-z0-9_-]{1,50}$")
#: Titles Chess.com lists at ``/titled/{title}``.
CHESSCOM_TITLES = ("GM", "WGM", "IM", "WIM", "FM", "WFM", "NM", "WNM", "CM", "WCM")
#: Boards of Chess.com's ``/leaderboards`` served by ``/chesscom/top/{timeClass}`` (the contract's time
#: classes, then the upstream's own board names verbatim).
CHESSCOM_BOARDS = {"bullet": "live_bullet", "blitz": "live_blitz", "rapid": "live_rapid", "daily": "daily",
                   **{b: b for b in ("daily960", "live_bullet", "live_blitz", "live_rapid", "live_bughouse",
                                     "live_blitz960", "live_threecheck", "live_crazyhouse", "live_kingofthehill")}}


def _chesscom(request: Request) -> ChesscomService:
    return request.app.ctx.resources.chesscom_players  # type: ignore[no-any-return]


def chesscom_username(value: str) -> str:
    """Validate a Chess.com username (letters, digits, ``_``, ``-``; 400 otherwise, no upstream call)."""
    if not CHESSCOM_USERNAME.match(value):
        raise BadRequest(f"malformed Chess.com username {value[:40]!r}: letters, digits, _ or - only")
    return value


@bp.route("/chesscom/top/<time_class:str>", methods=["GET", "HEAD"])
async def chesscom_top(request: Request, time_class: str) -> HTTPResponse:
    """A Chess.com leaderboard: ``bullet blitz rapid daily`` (or a board name such as ``daily960``),
    ``?nb=`` 1..50 (default 50: Chess.com lists 50). One upstream ``/leaderboards`` serves every board."""
    board = CHESSCOM_BOARDS.get(time_class)
    if board is None:
        raise BadRequest(f"unknown time class {time_class[:40]!r}: one of {', '.join(CHESSCOM_BOARDS)}")
    nb = int_param(parse_query(request.query_string), "nb", 50, 1, 200)
    return respond(request, await _chesscom(request).leaderboard(board, nb))


@bp.route("/chesscom/titled/<title:str>", methods=["GET", "HEAD"])
async def chesscom_titled(request: Request, title: str) -> HTTPResponse:
    """The Chess.com usernames holding ``title`` (``GM WGM IM WIM FM WFM NM WNM CM WCM``; 400 otherwise),
    paginated: ``?page=`` from 1, ``?limit=`` 1..500 (default 100)."""
    if title.upper() not in CHESSCOM_TITLES:
        raise BadRequest(f"unknown title {title[:40]!r}: one of {', '.join(CHESSCOM_TITLES)}")
    query = parse_query(request.query_string)
    page, limit = int_param(query, "page", 1, 1, MAX_PAGE), int_param(query, "limit", 100, 1, 500)
    return respond(request, await _chesscom(request).titled(title.upper(), page, limit))


@bp.route("/chesscom/<username:str>", methods=["GET", "HEAD"])
async def chesscom_profile(request: Request, username: str) -> HTTPResponse:
    """A Chess.com profile merged with its stats (case-insensitive username); 410 closed, 404 unknown."""
    return respond(request, await _chesscom(request).profile(chesscom_username(username)))


@bp.route("/chesscom/<username:str>/games", methods=["GET", "HEAD"])
async def chesscom_games(request: Request, username: str) -> HTTPResponse:
    """A Chess.com player's games from the monthly archives, newest first: ``?max=`` 1..300 (default
    100), ``since``/``until`` (epoch ms), ``timeClass`` (verbatim)."""
    name = chesscom_username(username)
    query = parse_query(request.query_string)
    since, until = _time_range(query)
    tc = (query.get("timeClass") or [None])[0]
    payload = await _chesscom(request).games(
        name, max_games=int_param(query, "max", 100, 1, 300), since=None if since < 0 else since,
        until=None if until < 0 else until, time_class=tc or None)
    return respond(request, payload)


@bp.route("/chesscom/<username:str>/history", methods=["GET", "HEAD"])
async def chesscom_history(request: Request, username: str) -> HTTPResponse:
    """A Chess.com rating history built from the monthly game archives: one series per time class of
    ``{date: YYYY-MM-DD, rating}`` (the day's last game), with ``failedMonths`` and, when this request's
    month-fetch budget ran out, ``notYetFetched``. Never cached as a whole."""
    return respond(request, await _chesscom(request).history(chesscom_username(username)))


@bp.route("/<pid:int>", methods=["GET", "HEAD"])
async def stored_player(request: Request, pid: int) -> HTTPResponse:
    """A stored player by our integer id, with every linked account and its latest ratings; 400 for an
    id outside 1..2**63-1, 404 for an id no player has."""
    return respond(request, await _service(request).stored_player(player_id(pid)))


class _LinkBody(msgspec.Struct):
    platform: str
    account: str | int


@admin_bp.post("/<pid:int>/links")
async def link(request: Request, pid: int) -> HTTPResponse:
    """Link an account to a stored player: body ``{"platform": "lichess"|"chesscom"|"fide", "account": ...}``.
    Answers the player with its accounts; 409 ``conflict`` with ``existing`` and ``requested`` when
    the link contradicts another; 404 when the player or account is unknown; 400 for a player id outside
    1..2**63-1 (checked before the body is read: no upstream call)."""
    pid = player_id(pid)
    try:
        body = msgspec.json.decode(await read_body(request), type=_LinkBody)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise BadRequest(f'bad JSON body: expected {{"platform": ..., "account": ...}} ({exc})') from None
    account = str(body.account)
    if body.platform == "lichess":
        account = lichess_username(account)
    elif body.platform == "fide":
        account = str(fide_id(account))
    elif body.platform == "chesscom":
        account = chesscom_username(account)
        await _chesscom(request).profile(account)  # fetched and stored first (404 / 410 as the profile route)
    else:
        raise BadRequest(f"platform must be lichess, chesscom or fide, got {body.platform[:40]!r}")
    try:
        payload = await _service(request).link(pid, body.platform, account)
    except Conflict as exc:
        return json_response(request, {"success": False, "error": exc.message, "code": exc.code, **exc.details}, 409)
    return respond(request, payload)
