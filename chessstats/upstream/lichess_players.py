"""Lichess players (leaderboards, profiles, rating histories, games, FIDE mirror), through the
shared :class:`~chessstats.upstream.lichess.LichessClient`
(its upstream gate: in-flight slot, rate, 429 pause, deadline, breaker; and its error mapping).

Endpoint: ``GET /player/top/{nb}/{perfType}`` (``Accept: application/vnd.lichess.v3+json``),
answering ``{"users": [{id, username, title?, patron?, perfs: {<perf>: {rating, progress}}}]}``.
``nb`` is at most 100 per Lichess's spec, and there is no leaderboard for correspondence.

Also: ``GET /user/{username}`` (profile), ``POST /users`` (up to 300 profiles), ``GET
/user/{username}/rating-history`` (zero-based months), ``GET /games/user/{username}`` (NDJSON) and
Lichess's FIDE mirror ``GET /fide/player/{id}``, ``/fide/player/{id}/ratings`` (packed
``YYYYMMRRRR`` points) and ``/fide/player?q=``.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import msgspec

from chessstats.errors import NotFound, UpstreamError
from chessstats.models import Game
from chessstats.models.common import utc_iso
from chessstats.models.player import FidePlayer, LichessUser
from chessstats.upstream.http import iter_ndjson
from chessstats.upstream.lichess import LichessClient, _game_decoder, game_to_model

#: Lichess's media type for leaderboards.
LEADERBOARD_MEDIA_TYPE = "application/vnd.lichess.v3+json"
#: The largest ``nb`` Lichess documents.
MAX_NB = 100


class _Perf(msgspec.Struct, kw_only=True):
    rating: int | None = None
    progress: int | None = None


class _TopUser(msgspec.Struct, kw_only=True):
    id: str | None = None
    username: str
    title: str | None = None
    perfs: dict[str, _Perf] = {}


class _Top(msgspec.Struct, kw_only=True):
    users: list[_TopUser] = []


_top_decoder = msgspec.json.Decoder(_Top)


class LeaderboardEntry(msgspec.Struct, rename="camel", kw_only=True):
    """``{rank, username, title, rating, progress, fideId, federation}`` (API.md LeaderboardEntry);
    rank counts from 1; fields the upstream does not have are null."""

    rank: int
    username: str
    title: str | None = None
    rating: int | None = None
    progress: int | None = None
    fide_id: int | None = None
    federation: str | None = None


async def fetch_leaderboard(client: LichessClient, perf_type: str, nb: int = MAX_NB, *,
                            max_wait_s: float | None = None) -> list[LeaderboardEntry]:
    """``GET /player/top/{nb}/{perfType}``: the top ``nb`` (1..100) players of a perf, in rank order.

    Args:
        max_wait_s: seconds to wait for a turn at the gate; None for its ``max_queue_wait_s``.

    Raises:
        ValueError: ``nb`` out of 1..100.
        NotFound / UpstreamError / UpstreamRateLimited / UpstreamBusy: as every Lichess request
            (an undecodable body is an UpstreamError counted by the gate's breaker).
    """
    if not 1 <= nb <= MAX_NB:
        raise ValueError(f"nb must be 1..{MAX_NB}, got {nb}")
    async with client._request(f"/player/top/{nb}/{perf_type}", accept=LEADERBOARD_MEDIA_TYPE,
                               max_wait_s=max_wait_s) as resp:
        top = _top_decoder.decode(await resp.aread())
    out = []
    for rank, user in enumerate(top.users, 1):
        perf = user.perfs.get(perf_type)
        out.append(LeaderboardEntry(rank=rank, username=user.username, title=user.title,
                                    rating=perf.rating if perf else None, progress=perf.progress if perf else None))
    return out


# --- users: profile, rating history, games ----------------------------------------------------

#: Lichess's rating-history series names → perf types (an unknown name is kept verbatim).
HISTORY_NAMES = {
    "UltraBullet": "ultraBullet", "Bullet": "bullet", "Blitz": "blitz", "Rapid": "rapid", "Classical": "classical",
    "Correspondence": "correspondence", "Chess960": "chess960", "King of the Hill": "kingOfTheHill",
    "Three-check": "threeCheck", "Antichess": "antichess", "Atomic": "atomic", "Horde": "horde",
    "Racing Kings": "racingKings", "Crazyhouse": "crazyhouse", "Puzzles": "puzzle",
}


class _UserPerf(msgspec.Struct, kw_only=True):
    games: int | None = None
    rating: int | None = None
    rd: int | None = None
    prog: int | None = None
    prov: bool | None = None
    runs: int | None = None


class _Profile(msgspec.Struct, kw_only=True):
    flag: str | None = None
    country: str | None = None
    realName: str | None = None
    fideRating: int | None = None


class _UserWire(msgspec.Struct, kw_only=True):
    id: str
    username: str
    title: str | None = None
    perfs: dict[str, _UserPerf] = {}
    createdAt: int | None = None
    seenAt: int | None = None
    profile: _Profile | None = None
    disabled: bool = False
    tosViolation: bool = False
    url: str | None = None


_user_decoder = msgspec.json.Decoder(_UserWire)
_users_decoder = msgspec.json.Decoder(list[_UserWire])


class _Series(msgspec.Struct, kw_only=True):
    name: str
    points: list[list[int]] = []


_history_decoder = msgspec.json.Decoder(list[_Series])


def _user(wire: _UserWire, site: str, raw: bytes = b"") -> LichessUser:
    ratings: dict[str, dict[str, Any]] = {}
    for perf, p in wire.perfs.items():
        if p.rating is None and p.games is None:  # storm, racer, streak: runs and scores, no rating
            continue
        played = bool(p.games)
        ratings[perf] = {"rating": p.rating if played else None, "games": p.games, "rd": p.rd if played else None,
                         "provisional": bool(p.prov) if played else None}
    status = "closed" if wire.disabled else ("tosViolation" if wire.tosViolation else "active")
    profile = wire.profile
    country = (profile.flag or profile.country) if profile else None
    return LichessUser(
        id=wire.id, username=wire.username, title=wire.title, name=profile.realName if profile else None,
        country=country, status=status, ratings=ratings, created_at=utc_iso(wire.createdAt),
        seen_at=utc_iso(wire.seenAt), url=wire.url or f"{site}/@/{wire.username}", raw=raw,
    )


async def fetch_user(client: LichessClient, username: str, *, max_wait_s: float | None = None) -> LichessUser:
    """``GET /user/{username}``: one account, closed (``disabled``) and flagged (``tosViolation``) ones
    included (their ``status`` says so).

    Raises:
        NotFound: Lichess knows no such account.
        UpstreamError (and its subclasses): as every Lichess request.
    """
    async with client._request(f"/user/{username}", max_wait_s=max_wait_s) as resp:
        raw = await resp.aread()
        wire = _user_decoder.decode(raw)
    if wire.id != username.lower():
        raise NotFound(f"lichess: user {username!r} answered as {wire.id!r}")
    return _user(wire, client.site, raw)


async def fetch_users(client: LichessClient, usernames: list[str], *,
                      max_wait_s: float | None = None) -> list[LichessUser]:
    """``POST /users`` (body: comma-separated ids, at most 300): the accounts Lichess knows, in no
    particular order (unknown ones are left out).

    Raises:
        ValueError: more than 300 usernames. UpstreamError (and subclasses): as every Lichess request.
    """
    if len(usernames) > MAX_USERS_PER_POST:
        raise ValueError(f"at most {MAX_USERS_PER_POST} usernames per call, got {len(usernames)}")
    async with client._request("/users", method="POST", content=",".join(usernames).encode(),
                               max_wait_s=max_wait_s) as resp:
        wires = _users_decoder.decode(await resp.aread())
    return [_user(w, client.site) for w in wires]


#: ``POST /users`` takes at most this many ids.
MAX_USERS_PER_POST = 300


def history_date(point: list[int]) -> str | None:
    """``YYYY-MM-DD`` of a Lichess rating point ``[year, month, day, rating]`` whose month counts
    from 0 (January = 0); None when it is not a calendar date."""
    if len(point) < 4:
        return None
    try:
        return date(point[0], point[1] + 1, point[2]).isoformat()
    except ValueError:
        return None


async def fetch_rating_history(client: LichessClient, username: str, *,
                               max_wait_s: float | None = None) -> list[dict[str, Any]]:
    """``GET /user/{username}/rating-history``: ``[{"perfType", "points": [{"date", "rating"}]}]``
    in Lichess's order, dates as ``YYYY-MM-DD`` (zero-based months converted), empty series kept.

    Raises:
        NotFound: no such account. UpstreamError (and subclasses): as every Lichess request.
    """
    async with client._request(f"/user/{username}/rating-history", max_wait_s=max_wait_s) as resp:
        series = _history_decoder.decode(await resp.aread())
    out = []
    for s in series:
        points = [{"date": d, "rating": p[3]} for p in s.points if (d := history_date(p)) is not None]
        out.append({"perfType": HISTORY_NAMES.get(s.name, s.name), "points": points})
    return out


async def fetch_user_games(client: LichessClient, username: str, *, max_games: int, since: int | None = None,
                           until: int | None = None, perf_type: str | None = None,
                           max_wait_s: float | None = None) -> list[Game]:
    """``GET /games/user/{username}`` as NDJSON (``max``, ``since``/``until`` epoch ms, ``perfType``):
    the games, in Lichess's order (newest first). A streamed export: its deadline is the gate's
    ``stream_timeout_s``; a stream cut inside a record is an UpstreamError, never a short list.

    Raises:
        NotFound: no such account. UpstreamError (and subclasses): as every Lichess request.
    """
    params: dict[str, str | int] = {"max": max_games, "opening": "true", "clocks": "false", "evals": "false"}
    if since is not None:
        params["since"] = since
    if until is not None:
        params["until"] = until
    if perf_type:
        params["perfType"] = perf_type
    games: list[Game] = []
    async with client._request(f"/games/user/{username}", accept="application/x-ndjson", params=params,
                               stream=True, max_wait_s=max_wait_s) as resp:
        ctype = resp.headers.get("content-type", "")
        if "json" not in ctype:
            raise UpstreamError(f"lichess: unexpected Content-Type {ctype!r} for a user's games", "lichess")
        async for line in iter_ndjson(resp.aiter_bytes(), _game_decoder):
            games.append(game_to_model(line, client.site))
    return games


# --- Lichess's FIDE mirror --------------------------------------------------------------------


class _FideWire(msgspec.Struct, kw_only=True):
    id: int | str
    name: str | None = None
    federation: str | None = None
    year: int | str | None = None
    title: str | None = None
    standard: int | str | None = None
    rapid: int | str | None = None
    blitz: int | str | None = None
    gender: str | None = None
    inactive: bool | int | str | None = None


_fide_decoder = msgspec.json.Decoder(_FideWire)
_fide_list_decoder = msgspec.json.Decoder(list[_FideWire])
_fide_ratings_decoder = msgspec.json.Decoder(dict[str, list[int | str]])


def fide_rating(value: int | str | None) -> int | None:
    """A FIDE rating from scraped text: ``0``, ``"0"``, ``""``, None or non-numbers are None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value or None
    if value is None:
        return None
    text = value.strip()
    return int(text) or None if text.isdigit() else None


def fide_id(value: int | str | None) -> int | None:
    """A FIDE id whether it arrives as ``"90000006"`` or ``90000006``; None when it is not a number."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    text = value.strip()
    return int(text) if text.isdigit() and int(text) > 0 else None


def _inactive(value: bool | int | str | None) -> bool | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "i", "wi", "yes")
    return bool(value)


def _fide_player(w: _FideWire) -> FidePlayer | None:
    fid = fide_id(w.id)
    if fid is None:
        return None
    name = w.name.strip() if w.name else None
    fed = w.federation.strip() if w.federation else None
    title = w.title.strip() if w.title else None
    return FidePlayer(fide_id=fid, name=name or None, federation=fed or None, title=title or None,
                      birth_year=fide_rating(w.year), sex=w.gender, inactive=_inactive(w.inactive),
                      ratings={"standard": fide_rating(w.standard), "rapid": fide_rating(w.rapid),
                               "blitz": fide_rating(w.blitz)}, source="lichess")


async def fetch_fide_player(client: LichessClient, fid: int, *, max_wait_s: float | None = None) -> FidePlayer:
    """``GET /fide/player/{id}`` (Lichess's FIDE mirror): name, federation, birth year, title,
    standard/rapid/blitz ratings (values cleaned: ``0``/``""`` ratings are None).

    Raises:
        NotFound: no such FIDE id. UpstreamError (and subclasses): as every Lichess request.
    """
    async with client._request(f"/fide/player/{fid}", max_wait_s=max_wait_s) as resp:
        player = _fide_player(_fide_decoder.decode(await resp.aread()))
    if player is None:
        raise UpstreamError(f"lichess: FIDE player {fid} answered without a numeric id", "lichess")
    return player


async def search_fide(client: LichessClient, query: str, *, max_wait_s: float | None = None) -> list[FidePlayer]:
    """``GET /fide/player?q=``: the FIDE players whose name matches (rows without a numeric id skipped)."""
    async with client._request("/fide/player", params={"q": query}, max_wait_s=max_wait_s) as resp:
        rows = _fide_list_decoder.decode(await resp.aread())
    return [p for w in rows if (p := _fide_player(w)) is not None]


def fide_history_point(packed: int | str) -> tuple[str, int | None] | None:
    """``(YYYY-MM-01, rating)`` of a packed ``YYYYMMRRRR`` point (``2015081568``: August 2015, 1568);
    None when it is not one."""
    text = str(packed).strip()
    if not text.isdigit() or len(text) < 7:
        return None
    year, month, rating = int(text[:4]), int(text[4:6]), int(text[6:])
    if not 1 <= month <= 12:
        return None
    return f"{year:04d}-{month:02d}-01", rating or None


async def fetch_fide_ratings(client: LichessClient, fid: int, *,
                             max_wait_s: float | None = None) -> list[dict[str, Any]]:
    """``GET /fide/player/{id}/ratings``: ``[{"perfType": standard|rapid|blitz, "points": [{"date", "rating"}]}]``,
    points oldest first (only the months where the rating changed, as Lichess lists them).

    Raises:
        NotFound: no such FIDE id. UpstreamError (and subclasses): as every Lichess request.
    """
    async with client._request(f"/fide/player/{fid}/ratings", max_wait_s=max_wait_s) as resp:
        series = _fide_ratings_decoder.decode(await resp.aread())
    out = []
    for perf in ("standard", "rapid", "blitz", *sorted(set(series) - {"standard", "rapid", "blitz"})):
        points = []
        for packed in series.get(perf, []):
            point = fide_history_point(packed)
            if point is not None and point[1] is not None:
                points.append({"date": point[0], "rating": point[1]})
        points.sort(key=lambda p: p["date"])
        out.append({"perfType": perf, "points": points})
    return out
