"""The one object that opens and closes every resource of a process, and owns the data-dir layout.

``serve`` (each worker), the scheduler and the CLI all use :class:`Resources`; nothing else opens
the database, the cache or an upstream client. The data dir holds::

    <data dir>/chessstats.db   the SQLite database (WAL: -wal and -shm beside it)
    <data dir>/cache/          the diskcache directory (disposable: rebuilt when broken)
    <data dir>/scheduler.lock  held by the one scheduler of the data dir
    <data dir>/server.lock     held shared by every process that uses the data dir (exclusive: a restore)
    <data dir>/locks/          striped cross-process locks (fetches, imports) and one per job run
    <data dir>/gate/           the upstream gates' shared state (in flight, rate, 429 pause, breaker)
    <data dir>/ratelimit.table the inbound rate limits' counters, shared by the workers (512 KiB)
    <data dir>/metrics/        Prometheus multiprocess files of the workers (emptied at every start)

With ``[cache] url`` on Redis (:func:`redis_backend`), the cache, the locks, the gates' state and the
inbound rate limits live in Redis instead (``cache/``, ``locks/``, ``gate/``, ``ratelimit.table``
and ``scheduler.lock`` are then unused), shared by every host using that Redis.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from chessstats.cache import TTLCache
from chessstats.config import Config
from chessstats.locks import Locks, SharedLock
from chessstats.redisconn import RedisBackend
from chessstats.services.chesscom import ChesscomService
from chessstats.services.imports import ImportService
from chessstats.services.players import PlayerService
from chessstats.services.readthrough import ReadThrough
from chessstats.services.tournaments import TournamentService
from chessstats.store import Database
from chessstats.store.db import DB_FILENAME
from chessstats.upstream.chesscom import ChesscomClient, open_chesscom
from chessstats.upstream.fide import FideClient, open_fide
from chessstats.upstream.lichess import LichessClient, open_lichess

if TYPE_CHECKING:
    from chessstats.cache_redis import RedisTTLCache

log = logging.getLogger(__name__)


def utc_now() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


#: Seconds a process waits for a restore (which holds ``server.lock`` exclusive) to finish.
RESTORE_WAIT_S = 120.0


async def _hold_in_use(paths: DataDir) -> SharedLock | None:
    """Take ``server.lock`` shared (waiting while a restore holds it); None when the lock file cannot
    be made (a read-only data dir: the process still starts, and ``/health`` says why)."""
    lock = SharedLock(paths.server_lock)
    deadline = time.monotonic() + RESTORE_WAIT_S
    while True:
        try:
            if lock.acquire():
                return lock
        except OSError as exc:
            log.warning("cannot take %s (%s)", paths.server_lock, exc.strerror or exc)
            return None
        if time.monotonic() > deadline:
            raise OSError(f"a restore holds {paths.server_lock} for more than {RESTORE_WAIT_S:.0f} s")
        await asyncio.sleep(0.2)


@dataclass(frozen=True, slots=True)
class DataDir:
    """The layout of a data dir (absolute paths)."""

    root: Path

    @property
    def db_path(self) -> Path:
        return self.root / DB_FILENAME

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def locks_dir(self) -> Path:
        return self.root / "locks"

    @property
    def gate_dir(self) -> Path:
        return self.root / "gate"

    @property
    def ratelimit_table(self) -> Path:
        """The inbound rate limits' shared counters (:mod:`chessstats.ratelimit`)."""
        return self.root / "ratelimit.table"

    @property
    def metrics_dir(self) -> Path:
        """``PROMETHEUS_MULTIPROC_DIR`` of the server's workers (:mod:`chessstats.metrics`)."""
        return self.root / "metrics"

    @property
    def scheduler_lock(self) -> Path:
        return self.root / "scheduler.lock"

    @property
    def server_lock(self) -> Path:
        """Held shared by every process that opened :class:`Resources` on this data dir; a restore
        takes it exclusive (and so refuses while any such process runs)."""
        return self.root / "server.lock"

    def job_lock(self, job: str) -> Path:
        """The run lock of one job."""
        return self.locks_dir / f"job-{job}.lock"

    def database(self, config: Config) -> Database:
        """The store's database (not opened yet): ``[store] url`` selects the engine, SQLite in this
        data dir by default (see :func:`database_for`)."""
        return database_for(config, self)

    def cache(self, config: Config, memory_entries: int | None = None,
              backend: RedisBackend | None = None) -> TTLCache | RedisTTLCache:
        """The cache of this data dir (on Redis when ``backend`` is given); ``memory_entries`` None:
        ``[cache] memory_entries``."""
        entries = config.cache.memory_entries if memory_entries is None else memory_entries
        if backend is not None:
            from chessstats.cache_redis import RedisTTLCache  # redis-py only when [cache] url names a server

            return RedisTTLCache(backend, size_limit_mb=config.cache.size_limit_mb, enabled=config.cache.enabled,
                                 memory_entries=entries)
        return TTLCache(self.cache_dir, size_limit_mb=config.cache.size_limit_mb, enabled=config.cache.enabled,
                        memory_entries=entries)

    def locks(self, backend: RedisBackend | None = None) -> Locks:
        """The named locks: flock files in :attr:`locks_dir`, or leases in Redis when ``backend`` is given."""
        return Locks(self.locks_dir, backend)


def redis_backend(config: Config) -> RedisBackend | None:
    """The process's Redis connection when ``[cache] url`` names one (not connected yet), else None.

    Raises:
        ValueError: the URL is not one redis-py understands.
    """
    if not config.cache.url:
        return None
    return RedisBackend(config.cache.url, prefix=config.cache.redis_prefix, lease_s=config.cache.lock_lease_s)


def database_for(config: Config, paths: DataDir) -> Database:
    """The store's database for ``config`` (not opened yet): :class:`~chessstats.store.Database` on
    ``<data dir>/chessstats.db`` by default, :class:`~chessstats.store.postgres.PostgresDatabase` (the
    same interface) when ``[store] url`` is a ``postgresql://`` URL."""
    if config.store.engine == "postgresql":
        from chessstats.store.postgres import PostgresDatabase

        return PostgresDatabase(config.store.url, pool_size=config.store.pool_size,  # type: ignore[return-value]
                                busy_timeout_ms=config.storage.busy_timeout_ms)
    return Database(paths.db_path, busy_timeout_ms=config.storage.busy_timeout_ms)


async def open_database(config: Config, paths: DataDir, *, migrate: bool = True) -> Database:
    """:func:`database_for`, opened (pending migrations applied unless ``migrate`` is False).

    Raises:
        sqlite3.DatabaseError / asyncpg.PostgresError: the database cannot be used.
        StorageUnavailable: the PostgreSQL server cannot be reached.
    """
    db = database_for(config, paths)
    await db.open(migrate=migrate)
    return db


@dataclass(slots=True)
class Resources:
    """Everything a process works with: configuration, database, cache, upstream clients, services.

    Open with ``await Resources.open(config)`` and close with :meth:`aclose` (in reverse order).
    Jobs receive this object (``config db cache lichess fide tournaments imports players chesscom
    chesscom_players now``). ``redis`` is the Redis connection when ``[cache] url`` names one;
    ``locks`` the named cross-process locks (files in the data dir, or Redis leases).
    """

    config: Config
    paths: DataDir
    db: Database
    cache: TTLCache | RedisTTLCache
    lichess: LichessClient
    fide: FideClient
    read: ReadThrough
    imports: ImportService
    tournaments: TournamentService
    players: PlayerService
    chesscom: ChesscomClient
    chesscom_players: ChesscomService
    now: Callable[[], datetime] = field(default=utc_now)
    background: bool = False
    in_use: SharedLock | None = None
    locks: Locks | None = None
    redis: RedisBackend | None = None

    @classmethod
    async def open(cls, config: Config, *, background: bool = True, memory_entries: int | None = None,
                   migrate: bool = True) -> Resources:
        """Open every resource of ``config``.

        Args:
            config: the validated configuration.
            background: start this process's import runner (the server); False for CLI commands.
            memory_entries: the in-memory LRU size; None for ``[cache] memory_entries``.
            migrate: apply pending migrations when the database opens.

        Raises:
            sqlite3.DatabaseError: the database cannot be used. OSError: the data dir cannot be made.
        """
        paths = DataDir(config.data_dir)
        paths.root.mkdir(parents=True, exist_ok=True)
        in_use = await _hold_in_use(paths)
        db = paths.database(config)
        try:
            await db.open(migrate=migrate)
        except BaseException:
            if in_use is not None:
                in_use.release()
            raise
        backend = redis_backend(config)
        cache = paths.cache(config, memory_entries, backend)
        locks = paths.locks(backend)
        lichess = open_lichess(config, paths.root, redis=backend)  # gate state in <data dir>/gate or Redis
        fide = open_fide(config, paths.root, redis=backend)
        chesscom = open_chesscom(config, paths.root, redis=backend)
        tcfg = config.tournaments
        read = ReadThrough(
            cache, locks, stale_s=config.cache.stale_s, wait_s=config.cache.client_wait_s,
            failure_base_s=config.cache.failure_base_s, failure_max_s=config.cache.failure_max_s,
            not_found_ttl_s=tcfg.not_found_ttl_s, lock_wait_s=tcfg.import_lock_timeout_s,
        )
        imports = ImportService(db, cache, lichess, tcfg, locks)
        tournaments = TournamentService(db, cache, lichess, tcfg, read, imports)
        players = PlayerService(db, cache, lichess, fide, read)
        res = cls(config, paths, db, cache, lichess, fide, read, imports, tournaments, players, chesscom,
                  ChesscomService(db, chesscom, read), background=background, in_use=in_use, locks=locks,
                  redis=backend)
        if background:
            imports.start()
        return res

    async def aclose(self) -> None:
        """Stop background work and close every resource (idempotent enough for shutdown paths)."""
        await self.imports.stop()
        await self.read.aclose()
        await self.fide.aclose()
        await self.chesscom.aclose()
        await self.lichess.aclose()
        self.cache.close()
        if self.redis is not None:
            self.redis.close()
        await self.db.close()
        if self.in_use is not None:
            self.in_use.release()

    async def close(self) -> None:
        """The same as :meth:`aclose` (the scheduler's CLI calls it by this name)."""
        await self.aclose()
