"""Players (Lichess and FIDE): leaderboards, profiles, rating histories, games, one identity across platforms.

Every cached read goes through the one read-through path (:class:`~chessstats.services.readthrough.ReadThrough`):
fresh entries are hits, expired ones are served stale while one background revalidation refreshes
them, misses make one fetch per key across every worker, failures are remembered (a 404 or a closed
account as a negative entry). Every upstream call goes through the client's gate.

* Leaderboards (``players:lichess:top:<perf>:100``) are filled by the ``rankings-updater`` job
  (hourly, a snapshot stored each time) and cached 30 minutes; a route asking for ``nb`` players
  gets the first ``nb`` of that one entry. A miss is served from the latest snapshot while it is
  younger than 30 minutes, else fetched from Lichess (and snapshotted).
* The FIDE top list (``players:fide:top:100``) is filled by the ``fide-ratings`` job (daily) from
  the community FIDE API; stored players are the fallback when it fails.
* Lichess profiles are cached an hour and stored (one row per lower-cased username); a closed
  account is stored as ``closed`` and answered 410 ``gone``; an unknown one is a 404 negative entry.
* Rating histories are stored in the database and fetched again at most every 30 days.
* A player's games are streamed from Lichess on every request (never cached).
* FIDE profiles, histories and searches come from Lichess's FIDE mirror; the community FIDE API is
  the fallback for profiles when Lichess fails. Each FIDE value says which upstream it came from.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import msgspec

from chessstats import keys
from chessstats.cache import TTLCache
from chessstats.errors import BadRequest, Conflict, Gone, NotFound, UpstreamError
from chessstats.models.common import Model
from chessstats.models.player import FidePlayer, LichessAccount, Player, Rating
from chessstats.payload import Payload, encode_fields, epoch_of
from chessstats.services.readthrough import Fetch, Fresh, ReadThrough
from chessstats.store import Database
from chessstats.store import players as store
from chessstats.upstream import lichess_players as lp
from chessstats.upstream.fide import FideClient
from chessstats.upstream.fide_site import fetch_official_top
from chessstats.upstream.lichess import LichessClient

log = logging.getLogger(__name__)

#: Seconds a leaderboard stays fresh in the cache (API.md: 30 min).
LEADERBOARD_TTL_S = 1800
#: Players per stored leaderboard (what Lichess serves at most); routes cut it to ``nb``.
LEADERBOARD_NB = lp.MAX_NB
#: Seconds the FIDE top list stays fresh (a day; FIDE publishes monthly).
FIDE_TOP_TTL_S = 86_400
#: Rows of the stored FIDE top list; routes cut it to ``limit``.
FIDE_TOP_LIMIT = 100
#: Seconds a profile (Lichess or FIDE) stays fresh (API.md: 1 hour).
PROFILE_TTL_S = 3600
#: Seconds a served rating history stays fresh in the cache.
HISTORY_TTL_S = 86_400
#: A stored rating history is fetched again when older than this (seconds; "refreshed monthly").
HISTORY_REFRESH_S = 30 * 86_400
#: Seconds a FIDE search stays fresh (API.md: 1 day).
FIDE_SEARCH_TTL_S = 86_400
#: Seconds a stored player (``GET /api/players/{id}``) stays cached; a link change drops it at once.
STORED_PLAYER_TTL_S = 300

LICHESS = "lichess"
FIDE = "fide"
CHESSCOM = "chesscom"


class FideTopEntry(Model, kw_only=True):
    """A row of the FIDE top list: the LeaderboardEntry fields (``username`` is the name) plus
    ``name``, ``birthYear`` and ``source`` (the upstream the values came from)."""

    rank: int
    username: str
    name: str | None = None
    title: str | None = None
    rating: int | None = None
    progress: int | None = None
    fide_id: int | None = None
    federation: str | None = None
    birth_year: int | None = None
    source: str = FIDE


class StoredPlayer(Model, kw_only=True):
    """``GET /api/players/{id}``: a stored player and every linked account with its latest ratings."""

    id: int
    name: str | None = None
    title: str | None = None
    federation: str | None = None
    fide_id: int | None = None
    birth_year: int | None = None
    accounts: list[Player] = []


def _epoch(iso: str | None) -> float:
    return epoch_of(iso) if iso else time.time()


#: Cut payloads kept per (entry, n): a hot leaderboard URL is cut (and rendered) once per cache entry.
_CUTS: dict[tuple[bytes, int, float, float | None, bool, bool, str], Payload] = {}
_CUTS_MAX = 1024


def cut(payload: Payload, n: int) -> Payload:
    """The same payload with its ``data`` list cut to the first ``n`` items (metadata kept);
    memoised per entry (its fields, freshness and flags) and ``n``."""
    memo = (payload.fields, n, payload.fetched_at, payload.expires_at, payload.cached, payload.stale, payload.source)
    hit = _CUTS.get(memo)
    if hit is not None:
        return hit
    data = msgspec.json.decode(b"{" + payload.fields + b"}")["data"]
    if len(data) <= n:
        return payload
    out = Payload(encode_fields(data[:n]), source=payload.source, fetched_at=payload.fetched_at,
                  expires_at=payload.expires_at, cached=payload.cached, stale=payload.stale)
    if payload.cached:  # only what the cache answers repeats
        if len(_CUTS) >= _CUTS_MAX:
            _CUTS.clear()
        _CUTS[memo] = out
    return out


def _labelled(series: list[dict[str, Any]], source: str = LICHESS) -> list[dict[str, Any]]:
    """FIDE rating series, each labelled with the upstream it came from (``lichess``: its FIDE mirror;
    ``fide``: the community FIDE API)."""
    return [{**s, "source": source} for s in series]


def _ratings(stored: dict[str, Any]) -> dict[str, Rating]:
    fields = ("rating", "games", "rd", "provisional")
    return {perf: Rating(**{k: v for k, v in r.items() if k in fields}) for perf, r in stored.items()
            if isinstance(r, dict)}


def account_to_player(account: dict[str, Any]) -> Player:
    """The API Player of a stored account (a :func:`chessstats.store.players.get_account` dict or an
    account of :func:`chessstats.store.players.get_player`)."""
    platform = account["platform"]
    fide_id = account.get("player_fide_id")
    if platform == FIDE:
        fide_id = int(account["username"])
    inactive = account.get("inactive")
    return Player(
        id=account.get("player_id"), platform=platform, username=account["username"], name=account.get("name"),
        title=account.get("title"), country=account.get("country"), status=account.get("status") or "active",
        ratings=_ratings(account.get("ratings") or {}), fide_id=fide_id,
        created_at=account.get("upstream_created_at"), seen_at=account.get("seen_at"), url=account.get("url"),
        birth_year=account.get("player_birth_year") if platform == FIDE else None,
        sex=account.get("player_sex") if platform == FIDE else None,
        inactive=None if inactive is None else bool(inactive), source=account.get("source"),
    )


def fide_to_player(p: FidePlayer, player_id: int | None) -> Player:
    """The API Player of a FIDE player read from an upstream (``id``: our id when stored)."""
    return Player(
        id=player_id, platform=FIDE, username=str(p.fide_id), name=p.name, title=p.title, country=p.federation,
        ratings={k: Rating(rating=v) for k, v in p.ratings.items()}, fide_id=p.fide_id,
        url=f"https://ratings.fide.com/profile/{p.fide_id}", birth_year=p.birth_year, sex=p.sex,
        inactive=p.inactive, source=p.source,
    )


class PlayerService:
    """Player reads over the read-through path, the store and the Lichess and FIDE clients.

    Every public read returns a :class:`~chessstats.payload.Payload` or raises
    :class:`~chessstats.errors.NotFound`, :class:`~chessstats.errors.Gone`,
    :class:`~chessstats.errors.UpstreamError` (or one of its subclasses).
    """

    def __init__(self, db: Database, cache: TTLCache, lichess: LichessClient, fide: FideClient,
                 read: ReadThrough) -> None:
        self.db = db
        self.cache = cache
        self.lichess = lichess
        self.fide = fide
        self.read = read
        #: rows without a FIDE id skipped, and players first stored, by this process's last top-list fetch
        self.fide_top_skipped = 0
        self.fide_top_new = 0

    # --- leaderboards ------------------------------------------------------------------------

    async def leaderboard(self, perf_type: str, nb: int) -> Payload:
        """``GET /api/players/lichess/top/{perfType}?nb=``: the first ``nb`` of the stored top 100
        (Lichess ``GET /player/top/100/{perfType}`` on a miss with no recent snapshot)."""
        key = keys.leaderboard(perf_type, LEADERBOARD_NB)
        payload = self.cache.get(key) or await self.read.get(
            key, lambda: self._leaderboard_fetch(perf_type), fallback=lambda: self._leaderboard_stored(perf_type),
            upstream=LICHESS)
        return cut(payload, nb)

    async def refresh_leaderboard(self, perf_type: str) -> int:
        """Fetch a leaderboard from Lichess whatever the cache holds, cache it and store a snapshot
        (the ``rankings-updater`` job); returns how many players it has.

        Raises:
            UpstreamError (and its subclasses), NotFound: as the Lichess client.
        """
        payload = await self.read.refresh(keys.leaderboard(perf_type, LEADERBOARD_NB),
                                          lambda: self._leaderboard_upstream(perf_type))
        return len(msgspec.json.decode(b"{" + payload.fields + b"}")["data"])

    async def _leaderboard_upstream(self, perf_type: str) -> Fresh:
        entries = await lp.fetch_leaderboard(self.lichess, perf_type, LEADERBOARD_NB)
        now = time.time()
        await store.insert_snapshot(self.db, LICHESS, perf_type, datetime.fromtimestamp(now, UTC),
                                    msgspec.json.encode(entries))
        return Fresh(Payload(encode_fields(entries), source="api", fetched_at=now), LEADERBOARD_TTL_S)

    async def _leaderboard_fetch(self, perf_type: str) -> Fresh:
        snapshot = await store.latest_snapshot(self.db, LICHESS, perf_type)
        if snapshot is not None:
            taken = _epoch(snapshot[0])
            left = taken + LEADERBOARD_TTL_S - time.time()
            if left > 1:
                data = msgspec.json.decode(snapshot[1])
                return Fresh(Payload(encode_fields(data), source="database", fetched_at=taken), left)
        return await self._leaderboard_upstream(perf_type)

    async def _leaderboard_stored(self, perf_type: str) -> Payload | None:
        snapshot = await store.latest_snapshot(self.db, LICHESS, perf_type)
        if snapshot is None:
            return None
        return Payload(encode_fields(msgspec.json.decode(snapshot[1])), source="database", stale=True,
                       fetched_at=_epoch(snapshot[0]))

    async def fide_top(self, limit: int) -> Payload:
        """``GET /api/players/fide/top?limit=``: the first ``limit`` of the FIDE open top 100
        (community FIDE API ``GET /top_players/`` on a miss, the official site's table
        ``a_top.php?list=open`` when it fails; stored players when both fail)."""
        key = keys.fide_top(FIDE_TOP_LIMIT)
        payload = self.cache.get(key) or await self.read.get(
            key, self._fide_top_upstream, fallback=self._fide_top_stored, upstream=FIDE)
        return cut(payload, limit)

    async def refresh_fide_top(self) -> tuple[int, int, int]:
        """Fetch the FIDE top list whatever the cache holds, store its players and cache it (the
        ``fide-ratings`` job); returns ``(players stored, of which new, rows skipped)``.

        Raises:
            UpstreamError (and its subclasses): the community API failed or its list is empty.
        """
        self.fide_top_skipped = self.fide_top_new = 0
        payload = await self.read.refresh(keys.fide_top(FIDE_TOP_LIMIT), self._fide_top_upstream)
        stored = len(msgspec.json.decode(b"{" + payload.fields + b"}")["data"])
        return stored, self.fide_top_new, self.fide_top_skipped

    async def _fide_top_upstream(self) -> Fresh:
        try:
            top = await self.fide.fetch_top(FIDE_TOP_LIMIT)
            if not top.players:
                raise UpstreamError("fide: the top list is empty", FIDE)
        except UpstreamError as first:  # both failed: the community API's error is the one reported
            try:
                top = await fetch_official_top(self.fide)
            except UpstreamError:
                raise first from None
            log.warning("fide top list from the official site (the community API failed: %s)", first.message)
        known = await store.existing_accounts(self.db, FIDE, [str(p.fide_id) for p in top.players])
        await store.upsert_fide_players(self.db, top.players)
        self.fide_top_new = len({p.fide_id for p in top.players} - {int(k) for k in known})
        entries = [FideTopEntry(rank=i, username=p.name or str(p.fide_id), name=p.name, title=p.title,
                                rating=p.ratings.get("standard"), fide_id=p.fide_id, federation=p.federation,
                                birth_year=p.birth_year, source=p.source)
                   for i, p in enumerate(top.players, 1)]
        self.fide_top_skipped = top.skipped
        return Fresh(Payload(encode_fields(entries), source="api", fetched_at=time.time()), FIDE_TOP_TTL_S)

    async def _fide_top_stored(self) -> Payload | None:
        rows = await store.stored_fide_top(self.db, FIDE_TOP_LIMIT)
        if not rows:
            return None
        entries = [FideTopEntry(rank=i, username=r["name"] or str(r["fide_id"]), name=r["name"], title=r["title"],
                                rating=r["rating"], fide_id=r["fide_id"], federation=r["federation"],
                                birth_year=r["birth_year"], source=r["source"] or FIDE)
                   for i, r in enumerate(rows, 1)]
        fetched = min(_epoch(r["fetched_at"]) for r in rows)
        return Payload(encode_fields(entries), source="database", stale=True, fetched_at=fetched)

    # --- Lichess profiles, histories, games --------------------------------------------------

    async def lichess_profile(self, username: str) -> Payload:
        """``GET /api/players/lichess/{username}``: the profile (Lichess ``GET /user/{username}``), one
        cache entry and one row whatever the case asked.

        Raises:
            Gone: the account is closed (stored as closed). NotFound: Lichess knows no such user.
            UpstreamError (and subclasses): Lichess failed and nothing is stored.
        """
        key = keys.lichess_player(username)
        return self.cache.get(key) or await self.read.get(
            key, lambda: self._profile_fetch(username), fallback=lambda: self._profile_stored(username),
            upstream=LICHESS)

    async def _profile_fetch(self, username: str) -> Fresh:
        stored = await store.get_account(self.db, LICHESS, username)
        if stored is not None and stored["status"] == "closed" \
                and time.time() - _epoch(stored["fetched_at"]) < PROFILE_TTL_S:
            raise Gone(f"the Lichess account {stored['username']!r} is closed")
        user = await lp.fetch_user(self.lichess, username.lower())
        account = await store.upsert_lichess_profile(self.db, user)
        if user.status == "closed":
            raise Gone(f"the Lichess account {user.username!r} is closed")
        return await self._profile_fresh(account)()

    @staticmethod
    def _profile_fresh(account: dict[str, Any]) -> Fetch:
        """A fetch that answers a just-stored profile (no upstream request)."""
        async def fresh() -> Fresh:
            payload = Payload(encode_fields(account_to_player(account)), source="api", fetched_at=time.time())
            return Fresh(payload, PROFILE_TTL_S, tag=keys.player_tag(account["player_id"]))
        return fresh

    async def _profile_stored(self, username: str) -> Payload | None:
        account = await store.get_account(self.db, LICHESS, username)
        if account is None or account["status"] is None or account["status"] == "closed":
            return None  # a leaderboard-only row is not a profile
        return Payload(encode_fields(account_to_player(account)), source="database", stale=True,
                       fetched_at=_epoch(account["fetched_at"]))

    async def _profiled_account(self, username: str) -> dict[str, Any]:
        """The stored account of a Lichess user, fetching its profile first when it is not stored."""
        account = await store.get_account(self.db, LICHESS, username)
        if account is None or account["status"] is None:
            await self.lichess_profile(username)
            account = await store.get_account(self.db, LICHESS, username)
            if account is None:
                raise NotFound(f"no Lichess user {username!r}")
        if account["status"] == "closed":
            raise Gone(f"the Lichess account {account['username']!r} is closed")
        return account

    async def lichess_history(self, username: str) -> Payload:
        """``GET /api/players/lichess/{username}/history``: ``[{perfType, points: [{date, rating}]}]``
        from the database, fetched from Lichess (``GET /user/{username}/rating-history``) when the
        stored copy is older than 30 days or absent (one upstream request; an account first seen
        here is stored with its history, its profile fields filled when the profile is asked for).

        Raises:
            Gone, NotFound, UpstreamError: as :meth:`lichess_profile`.
        """
        key = keys.lichess_history(username)
        return self.cache.get(key) or await self.read.get(
            key, lambda: self._history_fetch(username), fallback=lambda: self._history_stored(username),
            upstream=LICHESS)

    async def _history_fetch(self, username: str) -> Fresh:
        account = await store.get_account(self.db, LICHESS, username)
        if account is not None and account["status"] == "closed":
            raise Gone(f"the Lichess account {account['username']!r} is closed")
        if account is None:  # the history alone makes the row (its profile fills it when asked for)
            series = await lp.fetch_rating_history(self.lichess, username.lower())
            account = await store.ensure_account(self.db, LICHESS, username)
            return await self._history_store(account, series)
        tag = keys.player_tag(account["player_id"])
        fetched = account.get("history_fetched_at")
        if fetched and time.time() - _epoch(fetched) < HISTORY_REFRESH_S:
            series = await store.rating_history(self.db, account["id"])
            return Fresh(Payload(encode_fields(series), source="database", fetched_at=_epoch(fetched)),
                         HISTORY_TTL_S, tag=tag)
        series = await lp.fetch_rating_history(self.lichess, account["username"].lower())
        return await self._history_store(account, series)

    async def _history_store(self, account: dict[str, Any], series: list[dict[str, Any]]) -> Fresh:
        tag = keys.player_tag(account["player_id"])
        payload = Payload(encode_fields(series), source="api", fetched_at=time.time())
        if not series:  # Lichess answers [] to anonymous callers when it has no cached copy: ask again later
            return Fresh(payload, PROFILE_TTL_S, tag=tag)
        await store.replace_rating_history(self.db, account["id"], series, LICHESS)
        return Fresh(payload, HISTORY_TTL_S, tag=tag)

    async def _history_stored(self, username: str) -> Payload | None:
        account = await store.get_account(self.db, LICHESS, username)
        if account is None or not account.get("history_fetched_at") or account["status"] == "closed":
            return None
        series = await store.rating_history(self.db, account["id"])
        return Payload(encode_fields(series), source="database", stale=True,
                       fetched_at=_epoch(account["history_fetched_at"]))

    async def lichess_games(self, username: str, *, max_games: int, since: int | None, until: int | None,
                            perf_type: str | None) -> Payload:
        """``GET /api/players/lichess/{username}/games``: the games, newest first, streamed from Lichess
        (``GET /games/user/{username}``, NDJSON) on every request: never cached.

        Raises:
            NotFound: no such user. UpstreamError: Lichess failed or the stream was cut.
        """
        games = await lp.fetch_user_games(self.lichess, username.lower(), max_games=max_games, since=since, until=until,
                                          perf_type=perf_type)
        games.sort(key=lambda g: g.started_at or "", reverse=True)
        now = time.time()
        return Payload(encode_fields(games), source="api", fetched_at=now, expires_at=now)

    async def store_leaderboard_accounts(self, accounts: list[LichessAccount]) -> tuple[int, int]:
        """Store Lichess accounts seen on leaderboards (ratings merged per perf); returns
        ``(new, updated)``."""
        known = await store.existing_accounts(self.db, LICHESS, [a.username for a in accounts])
        await store.upsert_lichess_accounts(self.db, accounts)
        new = sum(a.username.lower() not in known for a in accounts)
        return new, len(accounts) - new

    async def refresh_profiles(self) -> tuple[int, int]:
        """Read the profile of every stored, profiled Lichess account again, 300 per request (Lichess
        ``POST /users``), store them and drop their cached profiles (the ``lichess-top-players`` job).
        Their cache entries are replaced (a closed account's is dropped). Returns ``(refreshed,
        skipped)``: skipped accounts are the ones Lichess no longer returns.

        Raises:
            UpstreamError (and its subclasses): a request failed (what was refreshed before stays).
        """
        usernames = await store.profiled_usernames(self.db, LICHESS)
        refreshed = 0
        for i in range(0, len(usernames), lp.MAX_USERS_PER_POST):
            batch = usernames[i: i + lp.MAX_USERS_PER_POST]
            for user in await lp.fetch_users(self.lichess, [u.lower() for u in batch]):
                account = await store.upsert_lichess_profile(self.db, user)
                key = keys.lichess_player(user.username)
                if user.status == "closed":
                    self.cache.delete(key)
                else:
                    await self.read.refresh(key, self._profile_fresh(account))
                refreshed += 1
        return refreshed, len(usernames) - refreshed

    # --- FIDE --------------------------------------------------------------------------------

    async def fide_profile(self, fid: int) -> Payload:
        """``GET /api/players/fide/{fideId}``: Lichess's FIDE mirror (``GET /fide/player/{id}``), the
        community FIDE API (``/player_info/``) when Lichess fails; stored (player + ``fide`` account).

        Raises:
            NotFound: no such FIDE id. UpstreamError: both upstreams failed and nothing is stored.
        """
        key = keys.fide_player(fid)
        return self.cache.get(key) or await self.read.get(
            key, lambda: self._fide_fetch(fid), fallback=lambda: self._fide_stored(fid), upstream=LICHESS)

    async def _fide_fetch(self, fid: int) -> Fresh:
        try:
            player = await lp.fetch_fide_player(self.lichess, fid)
        except NotFound:
            raise
        except UpstreamError as first:
            try:
                player = await self.fide.fetch_player(fid)
            except NotFound:
                raise
            except UpstreamError:
                raise first from None
        await store.upsert_fide_players(self.db, [player])
        account = await store.get_account(self.db, FIDE, str(fid))
        player_id = account["player_id"] if account else None
        payload = Payload(encode_fields(fide_to_player(player, player_id)), source="api", fetched_at=time.time())
        return Fresh(payload, PROFILE_TTL_S, tag=keys.player_tag(player_id) if player_id else None)

    async def _fide_stored(self, fid: int) -> Payload | None:
        account = await store.get_account(self.db, FIDE, str(fid))
        if account is None:
            return None
        return Payload(encode_fields(account_to_player(account)), source="database", stale=True,
                       fetched_at=_epoch(account["fetched_at"]))

    async def fide_history(self, fid: int) -> Payload:
        """``GET /api/players/fide/{fideId}/history``: ``[{perfType: standard|rapid|blitz, points}]``
        from the database, fetched from Lichess's mirror (``GET /fide/player/{id}/ratings``) when
        older than 30 days or absent (the profile is fetched first when the player is not stored), the
        community FIDE API (``/player_history/``) when Lichess fails. Each series carries ``source``.

        Raises:
            NotFound, UpstreamError: as :meth:`fide_profile`.
        """
        key = keys.fide_history(fid)
        return self.cache.get(key) or await self.read.get(
            key, lambda: self._fide_history_fetch(fid), fallback=lambda: self._fide_history_stored(fid),
            upstream=LICHESS)

    async def _fide_history_fetch(self, fid: int) -> Fresh:
        account = await store.get_account(self.db, FIDE, str(fid))
        if account is None:
            await self.fide_profile(fid)
            account = await store.get_account(self.db, FIDE, str(fid))
            if account is None:
                raise NotFound(f"no FIDE player {fid}")
        tag = keys.player_tag(account["player_id"]) if account["player_id"] else None
        fetched = account.get("history_fetched_at")
        if fetched and time.time() - _epoch(fetched) < HISTORY_REFRESH_S:
            series = await store.rating_history(self.db, account["id"], with_source=True)
            return Fresh(Payload(encode_fields(series), source="database", fetched_at=_epoch(fetched)),
                         HISTORY_TTL_S, tag=tag)
        source = LICHESS
        try:
            series = await lp.fetch_fide_ratings(self.lichess, fid)
        except NotFound:
            raise
        except UpstreamError as first:
            try:
                series, source = await self.fide.fetch_history(fid), FIDE
            except UpstreamError:  # NotFound included: Lichess's failure is the one to report
                raise first from None
        await store.replace_rating_history(self.db, account["id"], series, source)
        return Fresh(Payload(encode_fields(_labelled(series, source)), source="api", fetched_at=time.time()),
                     HISTORY_TTL_S, tag=tag)

    async def _fide_history_stored(self, fid: int) -> Payload | None:
        account = await store.get_account(self.db, FIDE, str(fid))
        if account is None or not account.get("history_fetched_at"):
            return None
        series = await store.rating_history(self.db, account["id"], with_source=True)
        return Payload(encode_fields(series), source="database", stale=True,
                       fetched_at=_epoch(account["history_fetched_at"]))

    async def fide_search(self, query: str) -> Payload:
        """``GET /api/players/fide/search?q=``: FIDE players whose name matches (Lichess's mirror
        ``GET /fide/player?q=``), each with our id when stored; cached a day.

        Raises:
            UpstreamError (and subclasses): Lichess failed.
        """
        key = keys.fide_search(query)
        return self.cache.get(key) or await self.read.get(key, lambda: self._fide_search_fetch(query),
                                                          upstream=LICHESS)

    async def _fide_search_fetch(self, query: str) -> Fresh:
        found = await lp.search_fide(self.lichess, query)
        ids = await store.player_ids_by_fide_id(self.db, [p.fide_id for p in found])
        players = [fide_to_player(p, ids.get(p.fide_id)) for p in found]
        return Fresh(Payload(encode_fields(players), source="api", fetched_at=time.time()), FIDE_SEARCH_TTL_S)

    # --- one identity ------------------------------------------------------------------------

    async def stored_player(self, player_id: int) -> Payload:
        """``GET /api/players/{id}``: a stored player with every linked account (database).

        Raises:
            NotFound: no such player.
        """
        key = keys.stored_player(player_id)
        return self.cache.get(key) or await self.read.get(key, lambda: self._stored_player_fetch(player_id))

    async def _stored_player_fetch(self, player_id: int) -> Fresh:
        row = await store.get_player(self.db, player_id)
        if row is None:
            raise NotFound(f"no stored player {player_id}")
        model = StoredPlayer(
            id=row["id"], name=row["name"], title=row["title"], federation=row["federation"], fide_id=row["fide_id"],
            birth_year=row["birth_year"],
            accounts=[account_to_player({**a, "player_fide_id": row["fide_id"], "player_birth_year": row["birth_year"],
                                         "player_sex": row.get("sex")}) for a in row["accounts"]],
        )
        return Fresh(Payload(encode_fields(model), source="database", fetched_at=time.time()), STORED_PLAYER_TTL_S,
                     tag=keys.player_tag(player_id))

    async def link(self, player_id: int, platform: str, account: str) -> Payload:
        """``POST /api/admin/players/{id}/links``: link an account (fetched and stored first when it is
        not stored yet) to a stored player; answers the player with its accounts.

        Raises:
            BadRequest: a platform not served yet. NotFound: no such player or account.
            Conflict: the link conflicts with an existing one (409; ``details`` show both).
        """
        if platform == LICHESS:
            await self._profiled_account(account)
        elif platform == FIDE:
            if await store.get_account(self.db, FIDE, account) is None:
                await self.fide_profile(int(account))
        elif platform == CHESSCOM:  # stored by the Chess.com profile read the route makes first
            if await store.get_account(self.db, CHESSCOM, account) is None:
                raise NotFound(f"no Chess.com account {account!r} is stored")
        else:
            raise BadRequest(f"{platform} accounts cannot be linked: platform must be lichess, chesscom or fide")
        try:
            moved_from = await store.link_account(self.db, player_id, platform, account)
        except LookupError as exc:
            raise NotFound(str(exc)) from None
        except store.LinkConflict as exc:
            raise Conflict(str(exc), existing=exc.existing, requested=exc.requested) from None
        for pid in {player_id, moved_from}:
            if pid is not None:
                self.cache.evict_tag(keys.player_tag(pid))
                self.cache.delete(keys.stored_player(pid))
                self.read.forget_failure(keys.stored_player(pid))
        return await self.stored_player(player_id)
