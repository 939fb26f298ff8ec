"""The registry of background jobs: stable kebab-case names, default schedules, and the
effective schedule of each under a configuration (``[jobs.<name>]``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from chessstats.config import Config
from chessstats.errors import ConfigError
from chessstats.services import jobs
from chessstats.scheduler.context import JobContext

JobFunc = Callable[[JobContext], Awaitable[str]]


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
    Job("titled-tuesday", "0 4 * * 2", jobs.titled_tuesday, "import the latest finished Titled Tuesday",
        unavailable=jobs.TITLED_TUESDAY_UNAVAILABLE),
    Job("cleanup", "0 2 * * 0", jobs.cleanup, "delete old snapshots, cull the cache, optimize SQLite"),
)}


@dataclass(frozen=True, slots=True)
class Effective:
    """A job under a configuration: ``schedule``, ``enabled`` (scheduled), ``disabled_reason``."""

    job: Job
    schedule: str
    enabled: bool
    disabled_reason: str | None


def check_jobs_config(config: Config) -> None:
    """Raise :class:`ConfigError` naming the key when ``[jobs.<name>]`` names no registered job."""
    for name in config.jobs:
        if name not in REGISTRY:
            raise ConfigError(f"jobs.{name}: unknown job; known jobs: {', '.join(REGISTRY)}")


def effective(config: Config, registry: dict[str, Job] = REGISTRY) -> dict[str, Effective]:
    """Every registered job with its configured schedule and whether it is scheduled."""
    out = {}
    for name, job in registry.items():
        cfg = config.jobs.get(name)
        schedule = (cfg.schedule if cfg and cfg.schedule else None) or job.schedule
        reason = job.unavailable
        if reason is None and cfg is not None and not cfg.enabled:
            reason = f"disabled by configuration (jobs.{name}.enabled = false)"
        out[name] = Effective(job, schedule, reason is None, reason)
    return out
