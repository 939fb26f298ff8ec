"""Background jobs: an in-process scheduler (croniter), one per data dir, every run recorded.

:func:`start_scheduler` is the only glue with the web server: it reads resources from
``app.ctx`` (it never imports Sanic) and returns the running :class:`Scheduler`.
"""

from __future__ import annotations

from typing import Any

from chessstats.scheduler.core import Scheduler


async def start_scheduler(app: Any) -> Scheduler:
    """Start this process's scheduler on ``app.ctx.resources`` (:class:`~chessstats.resources.Resources`).

    Every worker runs one; only the holder of ``<data dir>/scheduler.lock`` schedules, the
    others keep serving HTTP and retry the lock every ``scheduler.poll_s`` seconds.

    Raises:
        ConfigError: a ``[jobs.<name>]`` table names no registered job.
    """
    from chessstats.scheduler.registry import check_jobs_config

    resources = app.ctx.resources
    check_jobs_config(resources.config)
    scheduler = Scheduler(resources, resources.config.data_dir)
    scheduler.start()
    return scheduler


__all__ = ["Scheduler", "start_scheduler"]
