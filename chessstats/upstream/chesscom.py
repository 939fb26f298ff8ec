"""Chess.com's Published-Data API (``CHESS_COM_API_URL``, default ``https://api.chess.com/pub``).

A polite client: every request carries the User-Agent of :func:`~chessstats.upstream.http.build_client`
(app name, version and the configured contact; Chess.com's edge answers an HTML 403 to clients it
cannot identify, reported as ``upstream_blocked``), goes through the shared ``chesscom`` gate
(``max_in_flight = 1`` across every worker: parallel requests draw 429; a 429 pauses every worker)
and is conditional when validators are known: the weak ``ETag`` and the ``Last-Modified`` string of
the stored response are sent back verbatim as ``If-None-Match`` / ``If-Modified-Since``
(``Last-Modified`` is not an HTTP date here, ``Friday, 25-Oct-2024 02:32:13 GMT+0000``: never parsed).

Endpoints read (paths relative to the base): ``/player/{u}`` (profile), ``/player/{u}/stats``,
``/player/{u}/games/archives``, ``/player/{u}/games/{YYYY}/{MM}``, ``/leaderboards``,
``/titled/{title}``. Timestamps are Unix **seconds**; they are turned into ISO 8601 UTC. The error
envelope is ``{"code": 0, "message": ...}`` (404 for an unknown user: :class:`~chessstats.errors.NotFound`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import msgspec

from chessstats.errors import UpstreamError
from chessstats.models.common import utc_iso
from chessstats.models.game import Game, GamePlayer, Opening
from chessstats.redisconn import RedisBackend
from chessstats.upstream.gate import GateSettings, UpstreamGate, open_gate
from chessstats.upstream.http import GatedClient, build_client, check_response

if TYPE_CHECKING:
    from chessstats.config import Config

UPSTREAM = "chesscom"
PLATFORM = "chesscom"
#: A Chess.com username: letters, digits, ``_`` and ``-`` (at most 50 characters).
USERNAME = re.compile(r"^[A-Za-z0-9_-]{1,50}$")
#: Time classes of the API contract; leaderboards add variants, kept verbatim.
TIME_CLASSES = ("bullet", "blitz", "rapid", "daily")
#: Result codes of a drawn side.
DRAW_CODES = frozenset({"agreed", "repetition", "stalemate", "insufficient", "50move", "timevsinsufficient"})
#: Result codes of a losing side.
LOSS_CODES = frozenset({"checkmated", "resigned", "timeout", "abandoned", "lose", "bughousepartnerlose",
                        "kingofthehill", "threecheck"})
#: Our game ``status`` for a result code (the loser's, or the draw's); other codes are kept verbatim.
STATUS_OF = {"checkmated": "mate", "resigned": "resign", "timeout": "outoftime", "abandoned": "abandoned",
             "stalemate": "stalemate", "agreed": "draw", "repetition": "draw", "insufficient": "draw",
             "50move": "draw", "timevsinsufficient": "draw"}


@dataclass(slots=True)
class Conditional:
    """The answer to a conditional GET: ``status`` 200 (``body`` new) or 304 (``body`` empty: the
    stored one is current), and the validators to store (the new ones, or the ones sent on a 304)."""

    status: int
    body: bytes
    etag: str | None
    last_modified: str | None


class ChesscomClient(GatedClient):
    """Client of Chess.com's Published-Data API; every request goes through :attr:`gate`.

    **Parameters:**
    * **base_url** - ``CHESS_COM_API_URL`` (with the ``/pub`` prefix).
    * **contact** - *(optional)* put into the User-Agent (without one Chess.com may answer 403).
    * **timeout_s** - *(optional)* total deadline of a request, seconds. Defaults to 20.
    * **transport** - *(optional)* an httpx transport (tests).
    * **gate** - *(optional)* the shared gate; None builds one local to this process (one in flight).
    """

    def __init__(self, base_url: str, *, contact: str = "", timeout_s: float = 20.0,
                 transport: httpx.AsyncBaseTransport | None = None, gate: UpstreamGate | None = None) -> None:
        self._client = build_client(base_url, contact=contact, timeout_s=timeout_s, transport=transport)
        self.gate = gate or UpstreamGate(UPSTREAM, GateSettings(timeout_s=timeout_s, max_in_flight=1))
        #: conditional requests answered 304 by this process, and the stored bytes they did not re-download
        self.not_modified = 0
        self.bytes_saved = 0

    async def get(self, path: str, *, etag: str | None = None, last_modified: str | None = None,
                  stored_size: int = 0, max_wait_s: float | None = None) -> Conditional:
        """``GET path`` through the gate, conditional when validators are given (sent verbatim).

        Args:
            path: relative to the base, e.g. ``/player/hikaru``.
            etag / last_modified: the stored response's validators (None: unconditional).
            stored_size: bytes of the stored body (counted as saved on a 304).
            max_wait_s: seconds to wait for a turn at the gate; None for its ``max_queue_wait_s``.

        Returns:
            A :class:`Conditional`; any Content-Type is accepted (the PGN one repeats its charset).

        Raises:
            NotFound: 404 ``{code, message}`` (unknown user). UpstreamBlocked: an HTML 403 page.
            UpstreamRateLimited: 429 (the gate pauses every worker). UpstreamBusy: no turn in time.
            UpstreamError: 5xx, another status, a timeout.
        """
        headers = {"Accept": "application/json"}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        async with self.gate.request(max_wait_s=max_wait_s) as call:
            resp = await self._client.get(path, headers=headers)
            call.status = resp.status_code
            if resp.status_code == 304:
                self.not_modified += 1
                self.bytes_saved += stored_size
                return Conditional(304, b"", resp.headers.get("etag") or etag,
                                   resp.headers.get("last-modified") or last_modified)
            check_response(resp, self.gate.name, default_429_s=self.gate.settings.pause_after_429_s)
            return Conditional(resp.status_code, resp.content, resp.headers.get("etag"),
                               resp.headers.get("last-modified"))


def open_chesscom(config: Config, data_dir: str | Path | None,
                  transport: httpx.AsyncBaseTransport | None = None,
                  redis: RedisBackend | None = None) -> ChesscomClient:
    """The Chess.com client of ``config`` (``[chesscom]``, ``[upstream] contact``) whose gate shares its
    slot (one request in flight) and state with every process using ``<data_dir>/gate``."""
    table = config.chesscom
    return ChesscomClient(table.url, contact=config.upstream.contact, timeout_s=table.timeout_s,
                          transport=transport, gate=open_gate(UPSTREAM, table, data_dir, redis))


# --- shapes -------------------------------------------------------------------------------------

_decode = msgspec.json.decode


def decode(body: bytes, what: str) -> Any:
    """Decode a JSON body; an undecodable one is an :class:`UpstreamError`."""
    try:
        return _decode(body)
    except msgspec.DecodeError as exc:
        raise UpstreamError(f"chesscom {what}: unparsable body: {exc}", UPSTREAM) from exc


def error_envelope(data: Any) -> str | None:
    """The message of Chess.com's ``{code, message}`` error envelope, or None for another body."""
    if isinstance(data, dict) and "code" in data and "message" in data and len(data) <= 3:
        return str(data["message"])
    return None


def country_code(url: str | None) -> str | None:
    """``https://api.chess.com/pub/country/CA`` → ``CA`` (None when absent)."""
    if not url:
        return None
    code = url.rstrip("/").rsplit("/", 1)[-1]
    return code or None


def display_name(profile: dict[str, Any]) -> str:
    """The username as the player spells it: the last segment of the profile ``url`` when it matches
    the lower-cased ``username``, else ``username``."""
    username = str(profile.get("username") or "")
    url = str(profile.get("url") or "")
    spelled = url.rstrip("/").rsplit("/", 1)[-1]
    return spelled if spelled.lower() == username.lower() and spelled else username


def time_class_of(stats_key: str) -> str | None:
    """``chess_blitz`` → ``blitz``, ``chess960_daily`` → ``daily960`` (variants verbatim); None for
    a key that is not a rated game type (``fide``, ``tactics``, ``puzzle_rush``)."""
    if stats_key.startswith("chess_"):
        return stats_key[len("chess_"):]
    if stats_key.startswith("chess") and "_" in stats_key:
        variant, tc = stats_key[len("chess"):].split("_", 1)
        return f"{tc}{variant}"
    return None


def ratings_of(stats: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{timeClass: {rating, rd, games, provisional, record: {win, loss, draw}}}`` from ``/stats``
    (``last.rating``/``last.rd``; ``games`` is win + loss + draw)."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in stats.items():
        tc = time_class_of(key)
        if tc is None or not isinstance(value, dict):
            continue
        last = value.get("last") or {}
        record = value.get("record") or {}
        counts = {k: record.get(k) for k in ("win", "loss", "draw")}
        games = sum(v for v in counts.values() if isinstance(v, int)) if record else None
        out[tc] = {"rating": last.get("rating"), "rd": last.get("rd"), "games": games, "provisional": None,
                   "record": counts}
    return out


def leaderboard_entries(data: dict[str, Any], board: str) -> list[dict[str, Any]]:
    """The entries of one ``/leaderboards`` board (``live_blitz``, ``daily`` …) as LeaderboardEntry
    dicts plus ``name``, ``country`` (code) and ``status``."""
    out = []
    for i, e in enumerate(data.get(board) or []):
        out.append({"rank": e.get("rank") or i + 1, "username": e.get("username"), "title": e.get("title"),
                    "rating": e.get("score"), "progress": (e.get("trend_score") or {}).get("delta"),
                    "fideId": None, "federation": country_code(e.get("country")), "name": e.get("name"),
                    "status": e.get("status"), "url": e.get("url")})
    return out


_MOVE_NUMBER = re.compile(r"^\d+\.(\.\.)?$")
_RESULTS = {"1-0", "0-1", "1/2-1/2", "*"}


def san_moves(pgn: str | None) -> str | None:
    """The SAN moves of a Chess.com PGN, separated by spaces (tags, clock comments, move numbers and
    the result removed); None when there is no PGN."""
    if not pgn:
        return None
    body = pgn.split("\n\n", 1)[1] if "\n\n" in pgn else pgn
    body = re.sub(r"\{[^}]*\}", " ", body)
    body = re.sub(r"\([^)]*\)", " ", body)
    moves = [t for t in body.split() if not _MOVE_NUMBER.match(t) and t not in _RESULTS and not t.startswith("$")]
    return " ".join(moves)


def result_of(white: str | None, black: str | None) -> tuple[str, str | None, str | None]:
    """``(result, status, winner)`` from the two sides' result codes: ``win`` against a loss code is
    decisive; two draw codes are a draw; anything else (an unknown code) is ``*`` with the code kept
    verbatim as the status."""
    w, b = white or "", black or ""
    if w == "win" and b in LOSS_CODES:
        return "1-0", STATUS_OF.get(b, b), "white"
    if b == "win" and w in LOSS_CODES:
        return "0-1", STATUS_OF.get(w, w), "black"
    if w in DRAW_CODES and b in DRAW_CODES:
        return "1/2-1/2", STATUS_OF.get(w, w), None
    unknown = next((c for c in (w, b) if c not in DRAW_CODES and c not in LOSS_CODES and c != "win"), w or b)
    return "*", unknown or None, None


def game_id(game: dict[str, Any]) -> str:
    """The upstream's id of a game: the numeric id of its URL (``…/game/live/4814018950``), else its uuid."""
    url = str(game.get("url") or "")
    tail = url.rstrip("/").rsplit("/", 1)[-1]
    return tail if tail.isdigit() else str(game.get("uuid") or url)


def _clock(tc: str | None) -> tuple[int | None, int | None]:
    if not tc or "/" in tc:
        return None, None
    base, _, inc = tc.partition("+")
    return (int(base) if base.isdigit() else None), (int(inc) if inc.isdigit() else 0)


def game_to_model(game: dict[str, Any]) -> Game:
    """Our Game of one archive game (``end_time`` in Unix seconds → ISO 8601 UTC; ``moves`` None when
    the game has no PGN, e.g. bughouse; ``variant`` the upstream's ``rules``)."""
    white, black = game.get("white") or {}, game.get("black") or {}
    result, status, winner = result_of(white.get("result"), black.get("result"))
    pgn = game.get("pgn")
    eco_url = game.get("eco")
    eco = None
    if pgn:
        m = re.search(r'^\[ECO "([^"]*)"\]', pgn, re.M)
        eco = m.group(1) if m else None
    opening = None
    if eco or eco_url:
        name = str(eco_url).rstrip("/").rsplit("/", 1)[-1].replace("-", " ") if eco_url else None
        opening = Opening(eco=eco, name=name)
    started = None
    if pgn:
        d = re.search(r'^\[UTCDate "(\d{4})\.(\d\d)\.(\d\d)"\]', pgn, re.M)
        t = re.search(r'^\[UTCTime "(\d\d:\d\d:\d\d)"\]', pgn, re.M)
        if d and t:
            started = f"{d.group(1)}-{d.group(2)}-{d.group(3)}T{t.group(1)}Z"
    tournament = game.get("tournament")
    return Game(
        id=game_id(game), platform=PLATFORM, url=game.get("url"),
        white=GamePlayer(username=white.get("username"), rating=white.get("rating")),
        black=GamePlayer(username=black.get("username"), rating=black.get("rating")),
        result=result, status=status, winner=winner, variant=game.get("rules"), time_class=game.get("time_class"),
        rated=game.get("rated"), initial_fen=game.get("initial_setup") or None, opening=opening,
        moves=san_moves(pgn), started_at=started, ended_at=utc_iso(game.get("end_time"), ms=False),
        tournament_id=str(tournament).rstrip("/").rsplit("/", 1)[-1] if tournament else None,
    )


def clock_of(game: dict[str, Any]) -> tuple[int | None, int | None]:
    """``(limit, increment)`` seconds of a live ``time_control`` (``"180+2"``); None for daily (``"1/86400"``)."""
    return _clock(game.get("time_control"))
