"""Background jobs: an in-process scheduler (croniter), one per data dir, every run recorded.

:func:`start_scheduler` is the only glue with the web server: it reads resources from
``app.ctx`` (it never imports Sanic) and returns the running :class:`Scheduler`.
"""

from __future__ import annotations

from typing import Any

from chessstats.scheduler.core import Scheduler


async def start_scheduler(app: Any) -> Scheduler:
    """Start this process's scheduler from ``app.ctx`` (config, db, cache, lichess, tournaments).

    Every worker runs one; only the holder of ``<data dir>/scheduler.lock`` schedules, the
    others keep serving HTTP and retry the lock every ``scheduler.poll_s`` seconds.

    Raises:
        ConfigError: a ``[jobs.<name>]`` table names no registered job.
    """
    from chessstats.scheduler.context import JobContext, fide_client
    from chessstats.scheduler.registry import check_jobs_config

    ctx = app.ctx
    check_jobs_config(ctx.config)
    job_ctx = JobContext(ctx.config, ctx.db, ctx.cache, ctx.lichess, fide_client(ctx.config), ctx.tournaments)
    scheduler = _Owned(job_ctx, ctx.config.data_dir)
    scheduler.start()
    return scheduler


class _Owned(Scheduler):
    """A scheduler that also closes the FIDE client it was given when it stops."""

    async def stop(self) -> None:
        await super().stop()
        await self.ctx.close()


__all__ = ["Scheduler", "start_scheduler"]
