"""What a job gets: the process's database, cache, upstream clients and services.

:func:`open_context` builds one without Sanic (for ``chessstats jobs run``); the server builds
one from ``app.ctx`` in :func:`chessstats.scheduler.start_scheduler`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from chessstats.cache import TTLCache
from chessstats.config import Config
from chessstats.services.tournaments import TournamentService
from chessstats.store import Database
from chessstats.store.db import DB_FILENAME
from chessstats.upstream.fide import FideClient, open_fide
from chessstats.upstream.lichess import LichessClient, open_lichess


def utc_now() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


@dataclass(slots=True)
class JobContext:
    """Resources shared by every job of a process. ``now()`` returns an aware UTC datetime."""

    config: Config
    db: Database
    cache: TTLCache
    lichess: LichessClient
    fide: FideClient
    tournaments: TournamentService
    now: Callable[[], datetime] = field(default=utc_now)
    owns: bool = False  # whether :meth:`close` closes db, cache and clients (the CLI) or only fide

    async def close(self) -> None:
        """Close what this context opened."""
        await self.fide.aclose()
        if self.owns:
            await self.lichess.aclose()
            self.cache.close()
            await self.db.close()


def fide_client(config: Config) -> FideClient:
    """The FIDE client for ``config`` (``[fide] url``)."""
    return open_fide(config, config.data_dir)


async def open_context(config: Config) -> JobContext:
    """Open the database (migrated), cache and clients of ``config`` for a foreground job run."""
    data_dir = config.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    db = await Database(data_dir / DB_FILENAME, busy_timeout_ms=config.storage.busy_timeout_ms).open()
    cache = TTLCache(data_dir / "cache", memory_entries=0, size_limit_mb=config.cache.size_limit_mb,
                     enabled=config.cache.enabled)
    lichess = open_lichess(config, data_dir)
    service = TournamentService(db, cache, lichess, config.tournaments, config.data_dir / "locks")
    return JobContext(config, db, cache, lichess, fide_client(config), service, owns=True)
