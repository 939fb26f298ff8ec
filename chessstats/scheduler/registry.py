"""The registry of background jobs: stable kebab-case names, default schedules, and the
effective schedule of each under a configuration (``[jobs.<name>]``)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from chessstats.config import Config
from chessstats.errors import ConfigError
from chessstats.scheduler.context import JobContext
from chessstats.scheduler.cron import next_tick
from chessstats.services import jobs

log = logging.getLogger("chessstats.scheduler")

JobFunc = Callable[[JobContext], Awaitable[str]]

#: The context manager a job runs in: its upstream calls are background calls at every gate
#: (:func:`chessstats.upstream.gate.background_calls`, reached through the services).
background_calls = jobs.background_calls


@dataclass(frozen=True, slots=True)
class Job:
    """A registered job: ``name``, default cron ``schedule``, the function, and, when it cannot
    run at all (a missing upstream client), the ``unavailable`` reason."""

    name: str
    schedule: str
    func: JobFunc
    description: str
    unavailable: str | None = None


REGISTRY: dict[str, Job] = {j.name: j for j in (
    Job("tournament-monitor", "*/2 * * * *", jobs.tournament_monitor,
        "refresh every ongoing tournament; import finished ones"),
    Job("tournament-discovery", "*/30 * * * *", jobs.tournament_discovery,
        "store created and started tournaments; cancel vanished ones"),
    Job("rankings-updater", "0 * * * *", jobs.rankings_updater,
        "Lichess leaderboards (bullet, blitz, rapid, classical): cache + snapshot"),
    Job("fide-ratings", "0 3 * * *", jobs.fide_ratings, "FIDE top list into players"),
    Job("lichess-top-players", "0 4 * * *", jobs.lichess_top_players, "Lichess top players per perf into players"),
    Job("titled-tuesday", "0 4 * * 2", jobs.titled_tuesday,
        "import the latest finished Titled Tuesday (discovered from players' Chess.com tournament lists)"),
    Job("cleanup", "0 2 * * 0", jobs.cleanup, "delete old snapshots, cull the cache, optimize SQLite"),
)}


@dataclass(frozen=True, slots=True)
class Effective:
    """A job under a configuration: ``schedule``, ``enabled`` (scheduled), ``disabled_reason``.

    ``schedule_error`` says why the next tick of ``schedule`` cannot be computed (a schedule
    that never fires); such a job is not scheduled (``enabled`` False, the error as the reason)
    and every other job still is.
    """

    job: Job
    schedule: str
    enabled: bool
    disabled_reason: str | None
    schedule_error: str | None = None


def schedule_error(schedule: str, tz: str, now: datetime | None = None) -> str | None:
    """None when ``schedule`` has a next tick after ``now`` in zone ``tz``; else why not (one line)."""
    try:
        next_tick(schedule, now or datetime.now(UTC), tz)
    except (ValueError, OverflowError) as exc:
        return f"schedule {schedule!r} cannot be used: {exc}"
    return None


def check_jobs_config(config: Config) -> None:
    """Raise :class:`ConfigError` naming the key when ``[jobs.<name>]`` names no registered job."""
    for name in config.jobs:
        if name not in REGISTRY:
            raise ConfigError(f"jobs.{name}: unknown job; known jobs: {', '.join(REGISTRY)}")


def effective(config: Config, registry: dict[str, Job] = REGISTRY) -> dict[str, Effective]:
    """Every registered job with its configured schedule and whether it is scheduled.

    A job whose schedule has no next tick (see :func:`schedule_error`) is reported, not scheduled;
    it never raises for a schedule.
    """
    out = {}
    now = datetime.now(UTC)
    for name, job in registry.items():
        cfg = config.jobs.get(name)
        schedule = (cfg.schedule if cfg and cfg.schedule else None) or job.schedule
        reason = job.unavailable
        if reason is None and cfg is not None and not cfg.enabled:
            reason = f"disabled by configuration (jobs.{name}.enabled = false)"
        error = schedule_error(schedule, config.scheduler.timezone, now)
        if error is not None:
            reason = reason or error
        out[name] = Effective(job, schedule, reason is None, reason, error)
    return out
