"""The background jobs' bodies: plain async functions ``(JobContext) -> summary``.

The scheduler (:mod:`chessstats.scheduler`) only schedules them; what they do lives here, with
the services. ``JobContext`` is what they need of a process's resources
(:class:`chessstats.resources.Resources` is one).

Each returns a one-line summary ("refreshed 12 tournaments") and raises on failure (the
scheduler records the error and retries). A job that did part of its work and failed on the
rest raises after doing what it could, so a retry completes it.

The scheduler runs each under :func:`background_calls` (re-exported here from
:mod:`chessstats.upstream.gate`, which the scheduler may not import): their upstream calls give way
to users' requests at every gate and use at most ``background_share`` of its rate.

Cache keys written here (read by the routes that serve them):

* ``tournament:lichess:{id}`` (through :meth:`TournamentService.refresh`);
* ``players:lichess:top:{perfType}:100`` — leaderboard, 30 min;
* ``players:fide:top:100`` — FIDE top list, 1 day.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from chessstats import keys
from chessstats.cache import TTLCache
from chessstats.config import Config
from chessstats.errors import NotFound, UpstreamError, UpstreamRateLimited
from chessstats.services.chesscom import ChesscomService, import_latest_titled_tuesday
from chessstats.services.players import PlayerService
from chessstats.services.tournaments import TournamentService
from chessstats.store import Database
from chessstats.store import players as players_store
from chessstats.store import tournaments as tournaments_store
from chessstats.upstream.fide import FideClient
from chessstats.upstream.gate import background_calls
from chessstats.upstream.lichess import LichessClient
from chessstats.upstream.lichess_players import MAX_NB, fetch_leaderboard


class JobContext(Protocol):
    """What a job uses of a process's resources; ``now()`` returns an aware UTC datetime."""

    config: Config
    db: Database
    cache: TTLCache
    lichess: LichessClient
    fide: FideClient
    tournaments: TournamentService
    players: PlayerService
    chesscom_players: ChesscomService
    now: Callable[[], datetime]

log = logging.getLogger(__name__)

__all__ = ["JobContext", "background_calls", "cleanup", "fide_ratings", "lichess_top_players", "rankings_updater",
           "titled_tuesday", "tournament_discovery", "tournament_monitor"]

#: Perf types of the leaderboard jobs.
LEADERBOARD_PERFS = ("bullet", "blitz", "rapid", "classical")
LEADERBOARD_TTL_S = 1800
FIDE_TOP_TTL_S = 86_400
FIDE_TOP_LIMIT = 100


def leaderboard_key(perf_type: str, nb: int = MAX_NB) -> str:
    """Cache key of a Lichess leaderboard."""
    return keys.leaderboard(perf_type, nb)


def fide_top_key(limit: int = FIDE_TOP_LIMIT) -> str:
    """Cache key of the FIDE top list."""
    return keys.fide_top(limit)


async def tournament_monitor(ctx: JobContext) -> str:
    """Refresh every stored ongoing Lichess tournament (cache, row, player count, first
    standings page); a finished one is imported whole and cached forever; one the upstream no
    longer knows is marked cancelled. Fails only when every refresh failed."""
    rows, _ = await tournaments_store.list_tournaments(
        ctx.db, status="ongoing", platform="lichess", offset=0, limit=100_000)
    refreshed = finished = failed = 0
    gone: list[str] = []
    errors: list[str] = []
    for t in rows:
        try:
            payload = await ctx.tournaments.refresh(t.id)
            if payload.stale:  # the upstream failed; the service served the stored row
                failed += 1
                errors.append(f"{t.id}: lichess unavailable")
                continue
            stored = await tournaments_store.get_tournament(ctx.db, "lichess", t.id)
            if stored is not None and (stored.imported_at is not None or stored.tournament.status == "finished"):
                finished += 1  # its import runs in the background
            else:
                await ctx.tournaments.results(t.id, 1, 100)
                refreshed += 1
        except NotFound:
            gone.append(t.id)
        except UpstreamError as exc:
            failed += 1
            errors.append(f"{t.id}: {exc.message}")
    await ctx.tournaments.mark_gone("lichess", gone)  # (the refresh that found them gone marked them already)
    cancelled = len(gone)
    summary = f"refreshed {refreshed} tournaments, imported {finished} finished, cancelled {cancelled}"
    if failed:
        summary += f", {failed} failed"
        if refreshed + finished + cancelled == 0:
            raise UpstreamError(f"every refresh failed ({failed}): {errors[0]}", "lichess")
    return summary


async def tournament_discovery(ctx: JobContext) -> str:
    """Store the created and started arenas of Lichess's current list; stored live arenas that
    are in none of its lists are looked up: still known → updated (imported when finished),
    unknown → marked cancelled (never deleted)."""
    current = await ctx.lichess.fetch_current()
    live = [t for t in current if t.status in ("upcoming", "ongoing")]
    await ctx.tournaments.store_listed(live)
    listed = {t.id for t in current}
    vanished: list[str] = []
    for status in ("upcoming", "ongoing"):
        rows, _ = await tournaments_store.list_tournaments(
            ctx.db, status=status, platform="lichess", offset=0, limit=100_000)
        vanished += [t.id for t in rows if t.system != "swiss" and t.id not in listed]
    gone = []
    for tid in vanished:
        try:
            await ctx.tournaments.refresh(tid)
        except NotFound:
            gone.append(tid)
    await ctx.tournaments.mark_gone("lichess", gone)  # (the refresh that found them gone marked them already)
    cancelled = len(gone)
    upcoming = sum(t.status == "upcoming" for t in live)
    return (f"stored {len(live)} tournaments ({upcoming} upcoming, {len(live) - upcoming} ongoing); "
            f"re-checked {len(vanished)} no longer listed, cancelled {cancelled}")


async def rankings_updater(ctx: JobContext) -> str:
    """Lichess leaderboards (bullet, blitz, rapid, classical; top 100): cache for 30 min and
    store a snapshot each (through :meth:`PlayerService.refresh_leaderboard`, so that
    ``GET /api/players/lichess/top/{perfType}`` is then served without an upstream request).
    Raises after trying every perf when one failed."""
    done, errors = [], []
    pause = 0
    for perf in LEADERBOARD_PERFS:
        try:
            count = await ctx.players.refresh_leaderboard(perf)
        except (UpstreamError, NotFound) as exc:
            errors.append(f"{perf}: {exc.message}")
            if isinstance(exc, UpstreamRateLimited):
                pause = max(pause, exc.retry_after_s)
            continue
        done.append(f"{perf} {count}")
    if errors:
        message = f"leaderboards failed: {'; '.join(errors)} (stored: {', '.join(done) or 'none'})"
        if pause:  # the retry must wait for the upstream's pause
            raise UpstreamRateLimited(message, "lichess", pause)
        raise UpstreamError(message, "lichess")
    return f"stored 4 leaderboards ({', '.join(done)})"


async def fide_ratings(ctx: JobContext) -> str:
    """The FIDE open top list (community API ``/top_players/``) into players and their ``fide``
    accounts (FIDE ID, name, federation, standard rating), and into the cache for a day."""
    n, new, skipped_rows = await ctx.players.refresh_fide_top()
    return f"stored {n} FIDE players ({new} new, {n - new} updated), skipped {skipped_rows} rows without a FIDE ID"


async def lichess_top_players(ctx: JobContext) -> str:
    """The top 100 of each leaderboard perf into players: one account per username with its
    rating and progress per perf (merged with what is stored); then the profile of every stored,
    profiled account is read again (Lichess ``POST /users``, 300 per request)."""
    accounts: dict[str, players_store.LichessAccount] = {}
    for perf in LEADERBOARD_PERFS:
        for e in await fetch_leaderboard(ctx.lichess, perf, MAX_NB):
            account = accounts.setdefault(e.username.lower(),
                                          players_store.LichessAccount(e.username, e.title, {}))
            account.ratings[perf] = {"rating": e.rating, "progress": e.progress}
            account.title = account.title or e.title
    new, updated = await ctx.players.store_leaderboard_accounts(list(accounts.values()))
    refreshed, skipped = await ctx.players.refresh_profiles()
    return (f"stored {new + updated} Lichess players from {len(LEADERBOARD_PERFS)} leaderboards ({new} new, "
            f"{updated} updated); refreshed {refreshed} stored profiles, skipped {skipped}")


async def titled_tuesday(ctx: JobContext) -> str:
    """Import the latest finished Titled Tuesday from Chess.com, discovered from the tournament lists
    of ``[chesscom] titled_tuesday_players`` (see :func:`chessstats.services.chesscom.import_latest_titled_tuesday`)."""
    return await import_latest_titled_tuesday(ctx.chesscom_players, list(ctx.config.chesscom.titled_tuesday_players))


def _kib(n: int) -> str:
    return f"{n / 1024:.1f} KiB"


async def cleanup(ctx: JobContext) -> str:
    """Delete leaderboard snapshots older than ``scheduler.snapshot_retention_days``, cull
    expired cache entries, run ``PRAGMA optimize``; the summary gives sizes before and after."""
    db_before, cache_before = await ctx.db.size_bytes(), int(ctx.cache.stats()["sizeBytes"])
    days = ctx.config.scheduler.snapshot_retention_days
    deleted = await players_store.delete_snapshots_before(ctx.db, ctx.now(), days)
    culled = ctx.cache.cull()
    await ctx.db.execute_write("PRAGMA optimize")
    db_after, cache_after = await ctx.db.size_bytes(), int(ctx.cache.stats()["sizeBytes"])
    return (f"deleted {deleted} snapshots older than {days} days, culled {culled} cache entries; "
            f"database {_kib(db_before)} -> {_kib(db_after)}, cache {_kib(cache_before)} -> {_kib(cache_after)}")
