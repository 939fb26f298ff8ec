"""Imports of finished tournaments: background tasks of the service that no client can cancel.

A request that notices a finished tournament calls :meth:`ImportService.request` (a row in
``imports``, state ``queued``) and may :meth:`~ImportService.wait` a bounded time for it; the
import itself runs in a runner task of every worker process, claimed across workers by a file
lock, so a client hang-up, a response timeout or a second client never cancels or corrupts it.
A process killed in the middle leaves the row ``importing`` with its lock free: the next runner
(at start, or within ``import_poll_s``) takes it up again.

An import is verified before it is final: what was fetched must match the upstream's own counts
(``nbPlayers`` and ``stats.games`` of the tournament detail), or the shortfall must be explained
(games the export could not read; a few players without a standing row); otherwise nothing is
stored, the attempt is recorded as failed and retried later with a growing delay. Games whose
status was not final yet are refreshed until they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiosqlite
import msgspec

from chessstats import keys, metrics
from chessstats.cache import TTLCache
from chessstats.config import TournamentsConfig
from chessstats.errors import ChessstatsError, NotFound, UpstreamError
from chessstats.locks import FileLock, Locks, as_locks
from chessstats.models import TournamentPlayer
from chessstats.models.common import now_iso
from chessstats.redisconn import RedisLock
from chessstats.store import Database
from chessstats.store import imports as istore
from chessstats.store import players as pstore
from chessstats.store import tournaments as tstore
from chessstats.upstream.gate import background_calls
from chessstats.upstream.lichess import LichessClient, upstream_counts

log = logging.getLogger(__name__)

#: Game statuses that are not final: such games are refreshed after the import until they end.
NON_FINAL_STATUSES = frozenset({"created", "started"})
#: Players the upstream counts that may lack a standing row (joined, then withdrew before playing).
PLAYER_SLACK = 2
IMPORT_LOCK_STRIPES = 64


#: Seconds after a re-import when its tournament's cached entries are dropped a second time.
DROP_AGAIN_AFTER_S = 1.0


def invalidate_tournament(cache: TTLCache, platform: str, tid: str, *, again_after_s: float | None = None) -> int:
    """Drop every cached entry that shows tournament ``tid`` (detail, standings and games pages)
    and every tournament list, in every worker; returns how many entries went.

    ``again_after_s``: drop them once more that many seconds later (needs a running loop). For a
    write that replaced stored documents: a quick read (``chessstats.store.db``: batched per
    event-loop turn, one snapshot per batch) whose snapshot predates the write caches what it read
    one loop turn after reading it, which may fall after this drop, in this process or another.
    """
    count = cache.evict_tag(keys.tournament_tag(platform, tid)) + cache.evict_tag(keys.LISTS_TAG)
    if again_after_s is not None:
        asyncio.get_running_loop().call_later(again_after_s, invalidate_tournament, cache, platform, tid)
    return count


def _iso_in(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ShortImport(UpstreamError):
    """Raised when an export holds fewer standings or games than the upstream says exist."""


def check_counts(expected: tuple[int | None, int | None], players: int, games: int, skipped: int) -> str:
    """Compare what was fetched with the upstream's counts; returns the check's summary.

    Args:
        expected: ``(players, games)`` the upstream reports (None: not reported).
        players: standings rows fetched. games: games read. skipped: games the export held but
            that could not be read (an explained shortfall).

    Raises:
        ShortImport: fewer rows than reported, beyond what is explained.
    """
    want_players, want_games = expected
    notes = []
    if want_players is not None:
        missing = want_players - players
        if missing > PLAYER_SLACK:
            raise ShortImport(f"the standings export ended after {players} of {want_players} players", "lichess")
        notes.append(f"{players}/{want_players} players" + (f" ({missing} without a standing)" if missing > 0 else ""))
    else:
        notes.append(f"{players} players (no upstream count)")
    if want_games is not None:
        if games + skipped < want_games:
            raise ShortImport(f"the games export ended after {games + skipped} of {want_games} games", "lichess")
        notes.append(f"{games}/{want_games} games" + (f" ({skipped} unreadable)" if skipped else ""))
    else:
        notes.append(f"{games} games (no upstream count)")
    return "verified: " + ", ".join(notes)


class ImportService:
    """Runs tournament imports in the background of every worker process (one at a time each).

    **Parameters:**
    * **db**, **cache**, **lichess** - the process's resources.
    * **config** - ``[tournaments]``: ``import_wait_s``, ``import_poll_s``, ``import_retry_base_s``,
      ``import_max_attempts``, ``pending_refresh_s``, ``max_standings``.
    * **locks_dir** - the striped import locks: a :class:`~chessstats.locks.Locks` (flock files or Redis
      leases) or the directory of their files (``<data dir>/locks``).
    """

    def __init__(self, db: Database, cache: TTLCache, lichess: LichessClient, config: TournamentsConfig,
                 locks_dir: Locks | Path) -> None:
        self.db = db
        self.cache = cache
        self.lichess = lichess
        self.config = config
        self.locks = as_locks(locks_dir)
        self.locks_dir = self.locks.directory
        self._wake = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self.completed = 0
        self.failed = 0

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start this process's runner (picks up queued, interrupted and due imports)."""
        if self._runner is None:
            self._runner = asyncio.get_running_loop().create_task(self._loop(), name="imports")

    async def stop(self) -> None:
        """Stop the runner; an import under way is left for the next start (its lock is freed)."""
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None

    # --- requests ----------------------------------------------------------------------------

    async def request(self, platform: str, tid: str, *, trigger: str = "request",
                      force: bool = False) -> istore.ImportRecord:
        """Queue the import of a stored, finished tournament (no-op when already queued or done).

        ``force`` queues it again (``POST /api/admin/tournaments/{id}/reimport``). Returns the record;
        a record queued again carries nothing of its previous run (start, finish, duration, summary,
        counts: None) but its pending games (:func:`chessstats.store.imports.request_import`).
        """
        record = await istore.request_import(self.db, platform, tid, trigger=trigger, now=now_iso(), force=force)
        self._wake.set()
        return record

    async def state(self, platform: str, tid: str) -> istore.ImportRecord | None:
        """The import record of a tournament, or None."""
        return await istore.get_import(self.db, platform, tid)

    async def wait(self, platform: str, tid: str, timeout_s: float) -> istore.ImportRecord | None:
        """Wait up to ``timeout_s`` seconds for the import to be complete or failed; returns its record."""
        deadline = time.monotonic() + timeout_s
        while True:
            record = await istore.get_import(self.db, platform, tid)
            if record is None or record.state in ("complete", "failed") or time.monotonic() >= deadline:
                return record
            await asyncio.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    # --- the runner --------------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            try:
                with background_calls():  # imports give way to users' requests at the upstream gate
                    await self.run_due()
            except asyncio.CancelledError:
                raise
            except Exception:  # the runner must survive anything (a full disk, a closed database)
                log.exception("import runner pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.import_poll_s)
            self._wake.clear()

    def _lock(self, platform: str, tid: str) -> FileLock | RedisLock:
        digest = hashlib.blake2b(f"{platform}:{tid}".encode(), digest_size=4).digest()
        return self.locks.lock(f"import-{int.from_bytes(digest, 'big') % IMPORT_LOCK_STRIPES:02d}")

    async def run_due(self) -> int:
        """Run every import that is due and not taken by another worker; returns how many ran.

        While the database cannot be written (a full disk, within the last ``import_poll_s`` × 6
        seconds) nothing is started: an import would download its exports only to fail to store them.
        """
        ran = 0
        failed_at = self.db.storage_error_at
        if self.db.storage_error and failed_at and time.time() - failed_at < self.config.import_poll_s * 6:
            return 0
        for record in await istore.due_imports(self.db, now_iso(), self.config.import_max_attempts):
            lock = self._lock(record.platform, record.external_id)
            try:
                if not lock.acquire():
                    continue  # another worker runs it (or another import on the same stripe)
            except OSError as exc:
                log.warning("import lock unavailable: %s", exc)
                continue
            try:
                fresh = await istore.get_import_by_id(self.db, record.id)
                if fresh is None or fresh.state != record.state or fresh.attempt != record.attempt:
                    continue
                if not await istore.claim(self.db, fresh, now_iso()):
                    continue
                ran += 1
                if fresh.state == "complete":
                    await self._refresh_pending(fresh)
                else:
                    await self._import(fresh)
            finally:
                lock.release()
        return ran

    def _retry_in(self, attempt: int, exc: Exception | None = None) -> float:
        delay = min(3600.0, self.config.import_retry_base_s * 2 ** max(0, attempt - 1))
        return max(delay, float(getattr(exc, "retry_after_s", 0) or 0))

    async def _import(self, record: istore.ImportRecord) -> None:
        platform, tid = record.platform, record.external_id
        started = time.perf_counter()
        attempt = record.attempt + 1
        expected: tuple[int | None, int | None] = (None, None)
        # nothing of this tournament is cached while it imports (answers say importState); what
        # was cached before (its live pages, a failed attempt's answer) goes now
        invalidate_tournament(self.cache, platform, tid)
        try:
            stored = await tstore.get_tournament(self.db, platform, tid)
            reimport = stored is not None and stored.imported_at is not None
            raw = await tstore.get_raw(self.db, stored.pk) if stored is not None else None
            model = stored.tournament if stored is not None else None
            if model is None or raw is None or model.status != "finished" or upstream_counts(raw) == (None, None):
                model, raw = await self.lichess.fetch_tournament(tid, max_wait_s=self.config.import_queue_wait_s)
            if model.status != "finished":
                raise UpstreamError(f"tournament {tid} is {model.status}, not finished", "lichess")
            expected = upstream_counts(raw)
            standings = await self.lichess.fetch_standings(model, nb=self.config.max_standings,
                                                           max_wait_s=self.config.import_queue_wait_s)
            export = await self.lichess.fetch_games(model, max_wait_s=self.config.import_queue_wait_s)
            summary = check_counts(expected, len(standings), len(export.games), export.skipped)
            if model.winner is None and standings:
                first = standings[0]
                model = msgspec.structs.replace(model, winner=TournamentPlayer(username=first.username,
                                                                                title=first.title))
            pending = sum(g.game.status in NON_FINAL_STATUSES for g in export.games)
            if pending:
                summary += f"; {pending} games not finished yet, refreshed later"
            duration_ms = int((time.perf_counter() - started) * 1000)
            now = now_iso()

            async def complete(conn: aiosqlite.Connection, pk: int) -> None:
                await istore.mark_complete(
                    conn, record.id, now=now, duration_ms=duration_ms, expected=expected,
                    stored=(len(standings), len(export.games)), skipped=export.skipped, pending=pending,
                    next_attempt_at=_iso_in(self.config.pending_refresh_s) if pending else None, summary=summary)

            await tstore.import_tournament(self.db, model, raw, standings, export.games, now, after=complete)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await istore.release(self.db, record.id, now_iso())
            raise
        except NotFound as exc:
            self.failed += 1
            await istore.mark_failed(self.db, record.id, now=now_iso(), duration_ms=self._ms(started),
                                     error=exc.message, next_attempt_at=None, expected=expected)
            metrics.record_import("not_found", time.perf_counter() - started)
            log.warning("import of %s failed: the upstream no longer knows it", tid)
            invalidate_tournament(self.cache, platform, tid)
            return
        except (ChessstatsError, OSError) as exc:
            self.failed += 1
            message = exc.message if isinstance(exc, ChessstatsError) else f"{type(exc).__name__}: {exc}"
            retry_in = self._retry_in(attempt, exc)
            await istore.mark_failed(self.db, record.id, now=now_iso(), duration_ms=self._ms(started),
                                     error=message, next_attempt_at=_iso_in(retry_in), expected=expected)
            metrics.record_import("failed", time.perf_counter() - started)
            log.warning("import of %s failed (attempt %d): %s; retried in %.0f s", tid, attempt, message, retry_in)
            return
        self.completed += 1
        metrics.record_import("complete", time.perf_counter() - started)
        log.info("imported tournament %s: %d standings, %d games in %.2f s (%s)", tid, len(standings),
                 len(export.games), duration_ms / 1000, summary)
        await self._link_stated_fide_ids(export.games)
        if reimport:  # the previous import may have been cached meanwhile (and read just before the commit)
            invalidate_tournament(self.cache, platform, tid, again_after_s=DROP_AGAIN_AFTER_S)

    async def _link_stated_fide_ids(self, games: list) -> None:
        """Link the Lichess accounts whose FIDE id the export states (``WhiteFideId`` tags) to those
        FIDE players; a failure here never fails the import (it is logged)."""
        stated: dict[str, int] = {}
        for parsed in games:
            stated.update(parsed.fide_ids or {})
        if not stated:
            return
        try:
            linked, conflicts = await pstore.link_stated_fide_ids(self.db, stated)
        except (ChessstatsError, OSError) as exc:
            log.warning("linking stated FIDE ids failed: %s", exc)
            return
        log.info("%d lichess accounts state a FIDE id: %d linked now, %d conflicting links left alone",
                 len(stated), linked, conflicts)

    @staticmethod
    def _ms(started: float) -> int:
        return int((time.perf_counter() - started) * 1000)

    async def _refresh_pending(self, record: istore.ImportRecord) -> None:
        """Fetch the games export again and replace the games that have ended since."""
        platform, tid = record.platform, record.external_id
        stored = await tstore.get_tournament(self.db, platform, tid)
        if stored is None:
            return
        try:
            export = await self.lichess.fetch_games(stored.tournament, max_wait_s=self.config.import_queue_wait_s)
        except (ChessstatsError, OSError) as exc:
            async with self.db.transaction() as conn:
                await istore.set_pending(conn, record.id, record.pending_games,
                                         _iso_in(self.config.pending_refresh_s), now_iso())
            log.warning("refresh of the unfinished games of %s failed: %s", tid, exc)
            return
        pending_ids = set(await tstore.game_ids_with_status(self.db, stored.pk, NON_FINAL_STATUSES))
        ended = [g for g in export.games if g.game.id in pending_ids and g.game.status not in NON_FINAL_STATUSES]
        left = len(pending_ids) - len(ended)

        async def after(conn: aiosqlite.Connection) -> None:
            await istore.set_pending(conn, record.id, left, _iso_in(self.config.pending_refresh_s) if left else None,
                                     now_iso())

        await tstore.update_games(self.db, stored.pk, ended, after=after)
        log.info("tournament %s: %d unfinished games ended, %d left", tid, len(ended), left)
        invalidate_tournament(self.cache, platform, tid)
