"""What a job gets: the process's :class:`~chessstats.resources.Resources`.

:func:`open_context` opens them without Sanic (for ``chessstats jobs run``); the server hands its
own to :func:`chessstats.scheduler.start_scheduler`.
"""

from __future__ import annotations

from chessstats.config import Config
from chessstats.resources import Resources, utc_now

#: The jobs' view of a process's resources (``config db cache lichess fide tournaments now``).
JobContext = Resources


async def open_context(config: Config) -> Resources:
    """Open the resources of ``config`` for a foreground job run (no import runner, no memory LRU)."""
    return await Resources.open(config, background=False, memory_entries=0)


__all__ = ["JobContext", "open_context", "utc_now"]
