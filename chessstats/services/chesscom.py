"""Chess.com players: profiles (profile + stats), leaderboards, titled lists and game archives.

Cached reads go through the one read-through path (:class:`~chessstats.services.readthrough.ReadThrough`);
every upstream call goes through :class:`~chessstats.upstream.chesscom.ChesscomClient` (its shared
gate: one request in flight across workers). Each upstream body is stored with its validators
(:mod:`chessstats.store.upstream_responses`): a refresh is a conditional request (a 304 refreshes
the stored copy's freshness without re-downloading it), also after a cache clear or a restart.

* Profiles (``player:chesscom:<u>``): ``/player/{u}`` + ``/player/{u}/stats``, cached an hour; a
  closed account (``status`` starting with ``closed``) answers 410, an unknown one 404 (negative entry).
* Leaderboards (``players:chesscom:top:<board>``): one ``/leaderboards`` response (kept an hour)
  serves every board; each board's entry is cached an hour.
* Titled lists (``players:chesscom:titled:<title>``): ``/titled/{title}``, cached a day, served in pages.
* Games: ``/player/{u}/games/archives`` (checked at most every 5 minutes) and the monthly archives:
  a past month is stored once and never fetched again, the current month is refreshed with a
  conditional request at most every 5 minutes; a month that fails is reported, not fatal, and remembered
  (``fail:archive:chesscom:<u>:<YYYY-MM>``) so a repeat makes no upstream call for it; one request
  starts at most :data:`MONTH_FETCHES_PER_REQUEST` month fetches.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import msgspec

from chessstats import keys
from chessstats.errors import Gone, NotFound, UpstreamBusy, UpstreamError, UpstreamRateLimited
from chessstats.models.common import Pagination, now_iso, utc_iso
from chessstats.models.player import LichessUser
from chessstats.models.tournament import Clock, Tournament
from chessstats.payload import Payload, encode_fields
from chessstats.services.readthrough import Fresh, ReadThrough
from chessstats.services.tournaments import game_to_pgn
from chessstats.store import Database
from chessstats.store import players as pstore
from chessstats.store import tournaments as tstore
from chessstats.store import upstream_responses as responses
from chessstats.upstream import chesscom as cc
from chessstats.upstream.chesscom import ChesscomClient

log = logging.getLogger(__name__)

UPSTREAM = cc.UPSTREAM
#: Seconds a profile, a leaderboard board and a titled list stay fresh in the cache (API.md: 1 hour).
PROFILE_TTL_S = 3600
LEADERBOARD_TTL_S = 3600
#: Seconds a titled list stays fresh in the cache (API.md: 1 day).
TITLED_TTL_S = 86_400
#: Seconds the archive list and the current month are served from the stored copy before a
#: conditional request refreshes them.
CURRENT_MONTH_S = 300
#: Upstream month fetches one games request may start (months stored, or remembered as failed, cost
#: none): a request never queues more than this at the shared one-in-flight gate; the months left are
#: listed in ``notYetFetched`` and a later request goes on from there (past months are stored once).
MONTH_FETCHES_PER_REQUEST = 6
#: Seconds a past month's 404 is remembered (Chess.com lists months it then answers 404 for).
MONTH_NOT_FOUND_S = 3600
#: ``timeClass`` of the route → board of ``/leaderboards`` (other boards are accepted verbatim).
BOARDS = {"bullet": "live_bullet", "blitz": "live_blitz", "rapid": "live_rapid", "daily": "daily"}


def _month_path(url: str) -> tuple[str, int, int] | None:
    """``…/player/u/games/2020/05`` → (path relative to the base, 2020, 5)."""
    idx = url.find("/player/")
    if idx < 0:
        return None
    path = url[idx:]
    parts = path.rstrip("/").split("/")
    try:
        return path, int(parts[-2]), int(parts[-1])
    except (ValueError, IndexError):
        return None


class ChesscomService:
    """Chess.com reads over the read-through path, the stored responses and the Chess.com client.

    Public reads return a :class:`~chessstats.payload.Payload` or raise NotFound, Gone or
    UpstreamError (and its subclasses: ``upstream_blocked``, ``upstream_rate_limited``, ``upstream_busy``).
    """

    def __init__(self, db: Database, client: ChesscomClient, read: ReadThrough) -> None:
        self.db = db
        self.client = client
        self.read = read
        self.tournaments = ChesscomTournaments(self)

    # --- the conditional read of one upstream path ---------------------------------------------

    async def fetch(self, path: str, *, max_age_s: float = 0.0, immutable: bool = False) -> bytes:
        """The body of ``GET path``: the stored copy when it was checked less than ``max_age_s``
        seconds ago (or ``immutable`` and stored), else a conditional request with the stored
        validators (a 304 keeps the stored body and refreshes its ``checked_at``).

        Raises:
            the errors of :meth:`ChesscomClient.get`.
        """
        stored = await responses.get(self.db, UPSTREAM, path)
        body = _usable(stored, max_age_s, immutable)
        return body if body is not None else await self._request(path, stored)

    async def _request(self, path: str, stored: responses.StoredResponse | None) -> bytes:
        """``GET path`` upstream, conditional on ``stored`` (its validators); the answer stored, a 304
        refreshing the stored copy's ``checked_at``. Raises the errors of :meth:`ChesscomClient.get`."""
        answer = await self.client.get(
            path, etag=stored.etag if stored else None, last_modified=stored.last_modified if stored else None,
            stored_size=len(stored.body) if stored else 0)
        if answer.status == 304 and stored is not None:
            await responses.touch(self.db, UPSTREAM, path, time.time())
            return stored.body
        await responses.put(self.db, UPSTREAM, path, answer.body, answer.etag, answer.last_modified, time.time())
        return answer.body

    # --- profiles -------------------------------------------------------------------------------

    async def profile(self, username: str) -> Payload:
        """``GET /api/players/chesscom/{username}``: profile and stats merged (``/player/{u}``,
        ``/player/{u}/stats``), cached an hour.

        Raises:
            Gone: the account is closed (410). NotFound: no such user (404, remembered).
            UpstreamError (and subclasses): Chess.com failed and nothing is stored.
        """
        key = keys.chesscom_player(username)
        return self.read.cache.get(key) or await self.read.get(
            key, lambda: self._profile_fetch(username), fallback=lambda: self._profile_stored(username),
            upstream=UPSTREAM)

    async def _profile_fetch(self, username: str) -> Fresh:
        u = username.lower()
        profile = cc.decode(await self.fetch(f"/player/{u}"), "profile")
        stats = cc.decode(await self.fetch(f"/player/{u}/stats"), "stats")
        try:
            data = self._player(profile, stats)
        except Gone:
            await self._store_account(profile, stats, closed=True)
            raise
        account = await self._store_account(profile, stats)
        data["id"] = account["player_id"]
        return Fresh(Payload(encode_fields(data), source="api", fetched_at=time.time()), PROFILE_TTL_S,
                     tag=keys.player_tag(account["player_id"]))

    async def _store_account(self, profile: dict[str, Any], stats: Any, closed: bool = False) -> dict[str, Any]:
        """Store the account (a ``chesscom`` row of ``player_accounts``, with its own player when new) so
        it can be linked to a stored player and shown beside its Lichess and FIDE accounts."""
        ratings = {tc: {k: r[k] for k in ("rating", "games", "rd", "provisional")}
                   for tc, r in (cc.ratings_of(stats) if isinstance(stats, dict) else {}).items()}
        user = LichessUser(
            id=str(profile.get("username") or "").lower(), username=cc.display_name(profile),
            title=profile.get("title"), name=profile.get("name"), country=cc.country_code(profile.get("country")),
            status=str(profile.get("status") or ("closed" if closed else "basic")), ratings=ratings,
            created_at=utc_iso(profile.get("joined"), ms=False), seen_at=utc_iso(profile.get("last_online"), ms=False),
            url=profile.get("url") or "")
        return await pstore.upsert_lichess_profile(self.db, user, platform=cc.PLATFORM)

    async def _profile_stored(self, username: str) -> Payload | None:
        u = username.lower()
        profile = await responses.get(self.db, UPSTREAM, f"/player/{u}")
        stats = await responses.get(self.db, UPSTREAM, f"/player/{u}/stats")
        if profile is None or stats is None:
            return None
        try:
            data = self._player(cc.decode(profile.body, "profile"), cc.decode(stats.body, "stats"))
        except (Gone, UpstreamError):
            return None
        account = await pstore.get_account(self.db, cc.PLATFORM, u)
        data["id"] = account["player_id"] if account else None
        return Payload(encode_fields(data), source="database", stale=True,
                       fetched_at=min(profile.checked_at, stats.checked_at))

    @staticmethod
    def _player(profile: Any, stats: Any) -> dict[str, Any]:
        """The Player shape of a Chess.com profile and stats (``fideSelfReported``: the stats'
        self-reported ``fide`` value, never a FIDE rating). Raises Gone for a closed account."""
        if not isinstance(profile, dict) or not isinstance(stats, dict):
            raise UpstreamError("chesscom profile: unexpected body", UPSTREAM)
        status = profile.get("status")
        name = cc.display_name(profile)
        if isinstance(status, str) and status.startswith("closed"):
            raise Gone(f"the Chess.com account {name!r} is closed ({status})")
        fide = stats.get("fide")
        return {
            "id": None, "platform": cc.PLATFORM, "username": name, "name": profile.get("name"),
            "title": profile.get("title"), "country": cc.country_code(profile.get("country")), "status": status,
            "ratings": cc.ratings_of(stats), "fideId": None,
            "fideSelfReported": fide if isinstance(fide, int) and fide > 0 else None,
            "createdAt": utc_iso(profile.get("joined"), ms=False),
            "seenAt": utc_iso(profile.get("last_online"), ms=False), "url": profile.get("url"),
            "playerId": profile.get("player_id"), "followers": profile.get("followers"),
            "league": profile.get("league"),
        }

    # --- leaderboards and titled lists ----------------------------------------------------------

    async def leaderboard(self, board: str, nb: int) -> Payload:
        """``GET /api/players/chesscom/top/{timeClass}``: the first ``nb`` entries of one board of
        ``/leaderboards`` (one upstream response, kept an hour, serves every board).

        Raises:
            NotFound: Chess.com has no such board. UpstreamError (and subclasses).
        """
        from chessstats.services.players import cut

        key = keys.chesscom_top(board)
        payload = self.read.cache.get(key) or await self.read.get(
            key, lambda: self._board_fetch(board), upstream=UPSTREAM)
        return cut(payload, nb)

    async def _board_fetch(self, board: str) -> Fresh:
        data = cc.decode(await self.fetch("/leaderboards", max_age_s=LEADERBOARD_TTL_S), "leaderboards")
        if not isinstance(data, dict) or board not in data:
            raise NotFound(f"Chess.com has no leaderboard {board!r}")
        entries = cc.leaderboard_entries(data, board)
        return Fresh(Payload(encode_fields(entries), source="api", fetched_at=time.time()), LEADERBOARD_TTL_S)

    async def titled(self, title: str, page: int = 1, limit: int = 100) -> Payload:
        """``GET /api/players/chesscom/titled/{title}?page=&limit=``: ``{title, count, players: [usernames]}``
        (``/titled/{title}``; usernames lower-cased as Chess.com gives them) with ``players`` cut to one
        page and ``pagination`` beside ``data``; ``count`` is every holder of the title. The whole list
        is one cache entry, kept a day (:data:`TITLED_TTL_S`); every page is cut from it.

        Raises:
            UpstreamError (and subclasses): Chess.com failed and nothing is cached.
        """
        key = keys.chesscom_titled(title)
        whole = self.read.cache.get(key) or await self.read.get(
            key, lambda: self._titled_fetch(title), upstream=UPSTREAM)
        return titled_page(whole, page, limit)

    async def _titled_fetch(self, title: str) -> Fresh:
        data = cc.decode(await self.fetch(f"/titled/{title}"), "titled")
        players = list(data.get("players") or []) if isinstance(data, dict) else []
        out = {"title": title, "count": len(players), "players": players}
        return Fresh(Payload(encode_fields(out), source="api", fetched_at=time.time()), TITLED_TTL_S)

    # --- games ----------------------------------------------------------------------------------

    async def games(self, username: str, *, max_games: int, since: int | None, until: int | None,
                    time_class: str | None, now: datetime | None = None) -> Payload:
        """``GET /api/players/chesscom/{username}/games``: games newest first from the monthly
        archives (``since``/``until`` epoch milliseconds on the end time; ``time_class`` verbatim).

        Past months are stored once and never fetched again; the archive list and the current
        month are refreshed (conditionally) at most every 5 minutes. A month that fails (an
        upstream error or the ``{code, message}`` envelope) is listed in ``failedMonths`` and left out,
        and remembered (:meth:`ReadThrough.remember_failure`): a repeat within that interval makes no upstream call
        for it. At most :data:`MONTH_FETCHES_PER_REQUEST` months are fetched from the upstream per
        request; once that is spent, the months of the range not read are listed in ``notYetFetched``
        (``YYYY-MM``, newest first; absent when every month needed was read) and no older month is served.

        Raises:
            NotFound: no such user. UpstreamError (and subclasses): the archive list failed.
        """
        u = username.lower()
        now = now or datetime.now(UTC)
        walk = _MonthWalk()
        games: list[Any] = []
        for path, year, month in await self._archive_months(u):
            if len(games) >= max_games:
                break
            if since is not None and _month_end_ms(year, month) < since:
                break
            if until is not None and _month_start_ms(year, month) > until:
                continue
            data = await self._month(u, path, year, month, now, walk)
            if data is None:
                continue
            month_games = sorted(data.get("games") or [], key=lambda g: g.get("end_time") or 0, reverse=True)
            for raw in month_games:
                end_ms = (raw.get("end_time") or 0) * 1000
                if since is not None and end_ms < since or until is not None and end_ms > until:
                    continue
                if time_class and raw.get("time_class") != time_class:
                    continue
                games.append(cc.game_to_model(raw))
                if len(games) >= max_games:
                    break
        stamp = time.time()
        return Payload(encode_fields(games, **walk.fields()), source="api", fetched_at=stamp, expires_at=stamp)

    async def history(self, username: str, now: datetime | None = None) -> Payload:
        """``GET /api/players/chesscom/{username}/history``: ``[{perfType, points: [{date: YYYY-MM-DD,
        rating}]}]`` built from the monthly game archives (``/player/{u}/games/archives`` and
        ``/player/{u}/games/{YYYY}/{MM}``: Chess.com publishes no rating history, its archives carry
        each game's end time and the player's rating in it). ``perfType`` is the series' time class
        as the profile's ``ratings`` name it (``bullet blitz rapid daily``, ``daily960``; another
        variant ``<rules>_<timeClass>``); one point per UTC day with a game, the rating of that day's
        last game; oldest first; series ordered bullet, blitz, rapid, daily, then by name.

        The months are read as for :meth:`games` (stored past months never fetched again, failed
        months remembered and listed in ``failedMonths``, at most :data:`MONTH_FETCHES_PER_REQUEST`
        upstream month fetches per request, newest month first; the months that still need one are
        listed in ``notYetFetched``, the stored ones are served). Not cached as a whole; a past month's
        points are memoised in the process.

        Raises:
            NotFound: no such user. UpstreamError (and subclasses): the archive list failed.
        """
        u = username.lower()
        now = now or datetime.now(UTC)
        walk = _MonthWalk()
        last: dict[str, dict[str, tuple[int, int]]] = {}  # series → date → (end_time, rating)
        for path, year, month in await self._archive_months(u):
            current = (year, month) >= (now.year, now.month)
            points = None if current else _MONTH_POINTS.get((u, path))
            if points is None:
                data = await self._month(u, path, year, month, now, walk, contiguous=False)
                if data is None:
                    continue
                points = _rating_points(u, data)
                if not current:
                    if len(_MONTH_POINTS) >= _MONTH_POINTS_MAX:
                        _MONTH_POINTS.clear()
                    _MONTH_POINTS[(u, path)] = points
            for series, day, end, rating in points:
                days = last.setdefault(series, {})
                if day not in days or days[day][0] <= end:
                    days[day] = (end, rating)
        order = {tc: i for i, tc in enumerate(cc.TIME_CLASSES)}
        out = [{"perfType": series, "points": [{"date": day, "rating": last[series][day][1]}
                                               for day in sorted(last[series])]}
               for series in sorted(last, key=lambda name: (order.get(name, len(order)), name))]
        stamp = time.time()
        return Payload(encode_fields(out, **walk.fields()), source="api", fetched_at=stamp, expires_at=stamp)

    async def _archive_months(self, u: str) -> list[tuple[str, int, int]]:
        """``[(path, year, month)]`` of ``/player/{u}/games/archives`` (checked at most every 5 minutes),
        newest first. Raises NotFound (no such user), UpstreamError (the envelope, a failure)."""
        archives = cc.decode(await self.fetch(f"/player/{u}/games/archives", max_age_s=CURRENT_MONTH_S),
                             "archives")
        message = cc.error_envelope(archives)
        if message is not None:
            raise UpstreamError(f"chesscom archives of {u!r}: {message}", UPSTREAM)
        if not isinstance(archives, dict):
            raise UpstreamError(f"chesscom archives of {u!r}: unexpected body", UPSTREAM)
        months = [m for m in (_month_path(str(a)) for a in (archives.get("archives") or [])) if m is not None]
        months.sort(key=lambda m: (m[1], m[2]), reverse=True)
        return months

    async def _month(self, u: str, path: str, year: int, month: int, now: datetime, walk: _MonthWalk, *,
                     contiguous: bool = True) -> dict[str, Any] | None:
        """One monthly archive body (``{"games": [...]}``), or None when it is left out: it failed now or
        lately (listed in ``walk.failed``) or it needs an upstream request and the request's month-fetch
        budget is spent (``walk.pending``; with ``contiguous``, every later month of the walk too, stored
        or not: a newest-first list stops at the first gap). Raises UpstreamRateLimited and UpstreamBusy."""
        label = f"{year:04d}-{month:02d}"
        if walk.pending and contiguous:  # the budget is spent: every older month is left for a later request
            walk.pending.append(label)
            return None
        current = (year, month) >= (now.year, now.month)
        month_key = keys.chesscom_month(u, year, month)
        if self.read.failed_lately(month_key):  # no upstream call until its remembered interval ends
            walk.failed.append(label)
            return None
        stored = await responses.get(self.db, UPSTREAM, path)
        body = _usable(stored, CURRENT_MONTH_S, not current)
        try:
            if body is None:
                if walk.started >= MONTH_FETCHES_PER_REQUEST:
                    walk.pending.append(label)
                    return None
                walk.started += 1
                body = await self._request(path, stored)
            data = cc.decode(body, "games")
            message = cc.error_envelope(data)
            if message is not None:
                raise UpstreamError(f"chesscom {path}: {message}", UPSTREAM)
            if not isinstance(data, dict):
                raise UpstreamError(f"chesscom {path}: unexpected body", UPSTREAM)
        except (UpstreamRateLimited, UpstreamBusy):
            raise
        except (UpstreamError, NotFound) as exc:
            log.warning("chesscom: month %s of %s failed: %s", label, u, exc)
            # a past month's 404 does not change (Chess.com lists months it then answers 404 for)
            self.read.remember_failure(month_key, exc, not_found_ttl_s=None if current else MONTH_NOT_FOUND_S)
            walk.failed.append(label)
            return None
        return data


class _MonthWalk:
    """What one request's walk over the monthly archives left out: ``failed`` and ``pending`` months
    (``YYYY-MM``) and how many upstream month fetches it ``started``."""

    __slots__ = ("failed", "pending", "started")

    def __init__(self) -> None:
        self.failed: list[str] = []
        self.pending: list[str] = []
        self.started = 0

    def fields(self) -> dict[str, Any]:
        """The envelope members: ``failedMonths`` always, ``notYetFetched`` when months were left unread."""
        out: dict[str, Any] = {"failedMonths": self.failed}
        if self.pending:
            out["notYetFetched"] = self.pending
        return out


#: Rating points of past months, per (username, month path): ``[(series, YYYY-MM-DD, end_time, rating)]``.
_MONTH_POINTS: dict[tuple[str, str], list[tuple[str, str, int, int]]] = {}
_MONTH_POINTS_MAX = 4096


def _rating_points(u: str, data: dict[str, Any]) -> list[tuple[str, str, int, int]]:
    """``[(series, YYYY-MM-DD UTC, end_time (Unix seconds), rating (Elo))]`` of player ``u`` (lower-cased)
    in one monthly archive body: the rating the archive records for ``u``'s side of each game."""
    out = []
    for g in data.get("games") or []:
        if not isinstance(g, dict):
            continue
        end = g.get("end_time")
        if not isinstance(end, int) or isinstance(end, bool):
            continue
        side = next((s for s in (g.get("white"), g.get("black"))
                     if isinstance(s, dict) and str(s.get("username") or "").lower() == u), None)
        rating = side.get("rating") if side else None
        if not isinstance(rating, int) or isinstance(rating, bool) or rating <= 0:
            continue
        tc, rules = str(g.get("time_class") or ""), str(g.get("rules") or "chess")
        if not tc:
            continue
        series = cc.time_class_of(f"{rules}_{tc}") or f"{rules}_{tc}"
        out.append((series, datetime.fromtimestamp(end, UTC).strftime("%Y-%m-%d"), end, rating))
    return out


#: Pages cut from cached titled lists, per (entry, page, limit); cleared when full.
_TITLED_PAGES: dict[tuple[Any, ...], Payload] = {}
_TITLED_PAGES_MAX = 1024


def titled_page(whole: Payload, page: int, limit: int) -> Payload:
    """One page of a titled list payload (``{title, count, players}``): ``players`` cut to items
    ``(page-1)*limit .. page*limit`` and ``pagination`` added (``total`` = ``count``); freshness and
    flags kept. Memoised for payloads the cache answered (they repeat)."""
    memo = (whole.fields, page, limit, whole.fetched_at, whole.expires_at, whole.cached, whole.stale, whole.source)
    hit = _TITLED_PAGES.get(memo)
    if hit is not None:
        return hit
    data = msgspec.json.decode(b"{" + whole.fields + b"}")["data"]
    players = data.get("players") or []
    out_data = {**data, "count": len(players), "players": players[(page - 1) * limit: page * limit]}
    out = Payload(encode_fields(out_data, pagination=Pagination.of(page, limit, len(players))), source=whole.source,
                  fetched_at=whole.fetched_at, expires_at=whole.expires_at, cached=whole.cached, stale=whole.stale)
    if whole.cached:
        if len(_TITLED_PAGES) >= _TITLED_PAGES_MAX:
            _TITLED_PAGES.clear()
        _TITLED_PAGES[memo] = out
    return out


def _usable(stored: responses.StoredResponse | None, max_age_s: float, immutable: bool) -> bytes | None:
    """The stored body when it may be served without an upstream call (``immutable`` and stored, or
    checked less than ``max_age_s`` seconds ago), else None."""
    if stored is not None and (immutable or time.time() - stored.checked_at < max_age_s):
        return stored.body
    return None


def _month_start_ms(year: int, month: int) -> int:
    return int(datetime(year, month, 1, tzinfo=UTC).timestamp() * 1000)


def _month_end_ms(year: int, month: int) -> int:
    nxt = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    return int(nxt.timestamp() * 1000) - 1


# --- tournaments --------------------------------------------------------------------------------

#: Seconds an unfinished Chess.com tournament's pages stay fresh (a finished one: permanently).
TOURNAMENT_TTL_S = 300
#: Chess.com tournament ``status`` → ours (others kept verbatim).
TOURNAMENT_STATUS = {"finished": "finished", "in_progress": "ongoing", "registration": "upcoming"}


def tournament_model(tid: str, data: dict[str, Any]) -> Tournament:
    """Our Tournament of a Chess.com ``/tournament/{url-id}`` body (``finish_time``/``start_time`` Unix
    seconds → ISO 8601 UTC; ``system`` the settings' ``type``; no winner: a finished event marks none)."""
    settings = data.get("settings") or {}
    limit, increment = cc.clock_of({"time_control": settings.get("time_control")})
    status = str(data.get("status") or "")
    players = data.get("players")
    return Tournament(
        id=tid, platform=cc.PLATFORM, system=settings.get("type"), name=data.get("name"),
        status=TOURNAMENT_STATUS.get(status, status or "upcoming"), time_class=settings.get("time_class"),
        variant=settings.get("rules"), clock=Clock(limit=limit, increment=increment) if limit is not None else None,
        rated=settings.get("is_rated"), starts_at=utc_iso(data.get("start_time"), ms=False),
        finishes_at=utc_iso(data.get("finish_time"), ms=False),
        nb_players=len(players) if isinstance(players, list) else settings.get("registered_user_count"),
        url=data.get("url"),
    )


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class ChesscomTournaments:
    """Chess.com tournaments (``/tournament/{url-id}``, its rounds and groups) for the tournament routes:
    a finished one's bodies are stored once and never fetched again (its pages are cached permanently
    and its row stored, so ``GET /api/tournaments?platform=chesscom`` lists it); an unfinished one's
    pages are cached 5 minutes."""

    def __init__(self, service: ChesscomService) -> None:
        self.svc = service

    async def _body(self, path: str, finished: bool) -> Any:
        return cc.decode(await self.svc.fetch(path, max_age_s=TOURNAMENT_TTL_S, immutable=finished), "tournament")

    async def _detail(self, tid: str) -> tuple[Tournament, dict[str, Any]]:
        stored = await responses.get(self.svc.db, UPSTREAM, f"/tournament/{tid}")
        finished = stored is not None and b'"status":"finished"' in stored.body
        data = await self._body(f"/tournament/{tid}", finished)
        if not isinstance(data, dict) or cc.error_envelope(data) is not None:
            raise NotFound(f"Chess.com knows no tournament {tid!r}")
        model = tournament_model(tid, data)
        await tstore.upsert_tournaments(self.svc.db, [(model, None)], now_iso())
        return model, data

    def _ttl(self, t: Tournament) -> float | None:
        return None if t.status == "finished" else TOURNAMENT_TTL_S

    async def get(self, tid: str) -> Payload:
        """``GET /api/tournaments/{url-id}?platform=chesscom``: the detail (``/tournament/{url-id}``).

        Raises:
            NotFound: Chess.com knows no such tournament. UpstreamError (and subclasses).
        """
        key = keys.tournament(cc.PLATFORM, tid)
        return self.svc.read.cache.get(key) or await self.svc.read.get(key, lambda: self._get(tid), upstream=UPSTREAM)

    async def _get(self, tid: str) -> Fresh:
        t, _ = await self._detail(tid)
        payload = Payload(encode_fields(t), source="api", fetched_at=time.time())
        return Fresh(payload, self._ttl(t), tag=keys.tournament_tag(cc.PLATFORM, tid))

    async def _groups(self, tid: str) -> tuple[Tournament, list[tuple[int, int, dict[str, Any]]], float | None]:
        """Every group body of every round: ``([(round, group, body)], ttl)``. A round or group that
        fails is left out and the pages are then cached 5 minutes only (the bodies fetched are kept:
        a later request fetches what is missing); a finished event read whole is cached permanently."""
        t, data = await self._detail(tid)
        finished = t.status == "finished"
        out: list[tuple[int, int, dict[str, Any]]] = []
        complete = True
        for r, round_url in enumerate(data.get("rounds") or [], start=1):
            try:
                rnd = await self._body(_rel(str(round_url)), finished)
                for g, group_url in enumerate(rnd.get("groups") or [], start=1):
                    out.append((r, g, await self._body(_rel(str(group_url)), finished)))
            except (UpstreamRateLimited, UpstreamBusy):
                raise
            except (NotFound, UpstreamError) as exc:
                complete = False
                log.warning("chesscom: tournament %s round %d: %s", tid, r, exc)
        return t, out, (self._ttl(t) if complete else TOURNAMENT_TTL_S)

    async def results(self, tid: str, page: int, limit: int) -> Payload:
        """``/results``: one row per player from the deepest round group they played (deeper rounds
        first, then points, then tie-break), with ``round`` and ``group``; ``points`` and ``tieBreak``
        as floats (the upstream mixes integers and floats)."""
        key = keys.results(cc.PLATFORM, tid, page, limit)
        return self.svc.read.cache.get(key) or await self.svc.read.get(
            key, lambda: self._results(tid, page, limit), upstream=UPSTREAM)

    async def _results(self, tid: str, page: int, limit: int) -> Fresh:
        _, groups, ttl = await self._groups(tid)
        best: dict[str, dict[str, Any]] = {}
        for r, g, body in groups:
            for p in body.get("players") or []:
                name = str(p.get("username") or "")
                if name and (name not in best or best[name]["round"] <= r):
                    best[name] = {"username": name, "points": _num(p.get("points")),
                                  "tieBreak": _num(p.get("tie_break")), "round": r, "group": g,
                                  "isAdvancing": p.get("is_advancing")}
        rows = sorted(best.values(), key=lambda x: (-x["round"], -(x["points"] or 0), -(x["tieBreak"] or 0)))
        for i, row in enumerate(rows, start=1):
            row.update(rank=i, title=None, rating=None, score=None, performance=None)
        total = len(rows)
        page_rows = rows[(page - 1) * limit: page * limit]
        payload = Payload(encode_fields(page_rows, pagination=Pagination.of(page, limit, total)), source="api",
                          fetched_at=time.time())
        return Fresh(payload, ttl, tag=keys.tournament_tag(cc.PLATFORM, tid))

    async def games(self, tid: str, page: int, limit: int) -> Payload:
        """``/games``: the games of every group, newest first (Game shape, ``tournamentId`` the url-id)."""
        key = keys.games(cc.PLATFORM, tid, page, limit)
        return self.svc.read.cache.get(key) or await self.svc.read.get(
            key, lambda: self._games(tid, page, limit), upstream=UPSTREAM)

    async def games_pgn(self, tid: str, page: int, limit: int) -> tuple[str, int | None]:
        """The same page of games as PGN text (games separated by a blank line), from each game's own
        ``pgn`` (a game without one, such as bughouse, gets its tags and result built), and how long
        (seconds) it stays fresh: None once the event is finished and read whole."""
        _, groups, ttl = await self._groups(tid)
        raw = [g for _, _, body in groups for g in body.get("games") or []]
        raw.sort(key=lambda g: g.get("end_time") or 0, reverse=True)
        parts = []
        for g in raw[(page - 1) * limit: page * limit]:
            pgn = g.get("pgn")
            if not pgn:
                model = cc.game_to_model(g)
                model.tournament_id = tid
                pgn = game_to_pgn(model)
            parts.append(pgn.strip() + "\n")
        return "\n".join(parts), None if ttl is None else int(ttl)

    async def _games(self, tid: str, page: int, limit: int) -> Fresh:
        _, groups, ttl = await self._groups(tid)
        raw = [g for _, _, body in groups for g in body.get("games") or []]
        raw.sort(key=lambda g: g.get("end_time") or 0, reverse=True)
        games = []
        for g in raw[(page - 1) * limit: page * limit]:
            model = cc.game_to_model(g)
            model.tournament_id = tid
            games.append(model)
        payload = Payload(encode_fields(games, pagination=Pagination.of(page, limit, len(raw))), source="api",
                          fetched_at=time.time())
        return Fresh(payload, ttl, tag=keys.tournament_tag(cc.PLATFORM, tid))


def _rel(url: str) -> str:
    """``https://api.chess.com/pub/tournament/x/1`` → ``/tournament/x/1``."""
    idx = url.find("/tournament/")
    return url[idx:] if idx >= 0 else url


def titled_tuesday_ids(data: Any) -> list[str]:
    """The url-ids of the finished Titled Tuesdays in a ``/player/{u}/tournaments`` body
    (``titled-tuesday-blitz-<month>-<dd>-<yyyy>-<n>``, older ``-scc-grand-prix-titled-tuesday-blitz-<n>``)."""
    out = []
    for entry in (data.get("finished") or []) if isinstance(data, dict) else []:
        tid = str(entry.get("@id") or entry.get("url") or "").rstrip("/").rsplit("/", 1)[-1]
        if "titled-tuesday" in tid:
            out.append(tid)
    return out


def _serial(tid: str) -> int:
    """The trailing number of a url-id (Chess.com's tournament number: it grows with time)."""
    tail = tid.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else -1


async def import_latest_titled_tuesday(service: ChesscomService, players: list[str]) -> str:
    """The ``titled-tuesday`` job: discover Titled Tuesdays in the tournament lists of ``players``
    (``/player/{u}/tournaments``, kept an hour; a player whose list fails is skipped), take the latest
    finished one (the highest tournament number) and read it whole: detail, every round and group
    (stored once, never fetched again), its standings and games pages cached.

    Returns a one-line summary. Raises UpstreamError when no list could be read, NotFound when none
    names a Titled Tuesday."""
    found: set[str] = set()
    read = 0
    for u in players:
        try:
            body = cc.decode(await service.fetch(f"/player/{u.lower()}/tournaments", max_age_s=3600), "tournaments")
        except (UpstreamRateLimited, UpstreamBusy):
            raise
        except (NotFound, UpstreamError) as exc:
            log.warning("titled-tuesday: the tournament list of %s failed: %s", u, exc)
            continue
        read += 1
        found.update(titled_tuesday_ids(body))
    if not read:
        raise UpstreamError("titled-tuesday: no tournament list could be read", UPSTREAM)
    if not found:
        raise NotFound(f"titled-tuesday: no Titled Tuesday in the tournament lists of {', '.join(players)}")
    tid = max(found, key=_serial)
    t = service.tournaments
    await t.get(tid)
    results = await t.results(tid, 1, 100)
    await t.games(tid, 1, 50)
    total = msgspec.json.decode(b"{" + results.fields + b"}")["pagination"]["total"]
    return f"imported {tid} ({total} players; {len(found)} Titled Tuesdays discovered from {read} lists)"
