"""Configuration: ``config.toml`` < environment < command-line flags, decoded once at start-up.

Every table of the TOML file is a msgspec Struct that forbids unknown fields, so a typo stops
start-up with a :class:`~chessstats.errors.ConfigError` naming the key. Every key can be set
from the environment as ``CHESSSTATS_<TABLE>_<KEY>`` (upper case, e.g. ``CHESSSTATS_SERVER_PORT``);
the original design's names (``PORT``, ``LICHESS_API_URL``, ``ENABLE_BACKGROUND_JOBS`` …) keep
working as aliases (see :data:`ENV_ALIASES`).
"""

from __future__ import annotations

import logging
import os
import re
import tomllib
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import msgspec
from croniter import croniter

from chessstats.errors import ConfigError

log = logging.getLogger(__name__)

Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
Seconds = Annotated[float, msgspec.Meta(ge=0)]


_UNITS = {"": 1.0, "s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0,
          "minutes": 60.0, "h": 3600.0, "hour": 3600.0, "hours": 3600.0}
_RATE_RE = re.compile(
    r"^\s*(?P<count>\d+(?:\.\d+)?)\s*(?:/|per)\s*(?P<num>\d+(?:\.\d+)?)?\s*(?P<unit>[a-z]*)\s*$", re.IGNORECASE
)


@dataclass(frozen=True, slots=True)
class Rate:
    """``count`` requests per ``window_s`` seconds; :attr:`interval_s` is the spacing between two sends."""

    count: float
    window_s: float

    @property
    def interval_s(self) -> float:
        """Seconds between two sends (``window_s / count``)."""
        return self.window_s / self.count

    def __str__(self) -> str:
        count = int(self.count) if self.count == int(self.count) else self.count
        window = int(self.window_s) if self.window_s == int(self.window_s) else self.window_s
        return f"{count}/{window}s"


def parse_rate(text: str) -> Rate:
    """Parse a rate: ``"2/1s"``, ``"10/60s"``, ``"10 per 60 s"``, ``"30/min"``, ``"2/s"``, ``"1.5/1s"``.

    Units: s (sec, second(s)), m (min, minute(s)), h (hour(s)); no unit means seconds.

    Raises:
        ValueError: not of that form, or a count or window that is not positive.
    """
    match = _RATE_RE.match(text) if isinstance(text, str) else None
    unit = match["unit"].lower() if match else ""
    if match is None or unit not in _UNITS:
        raise ValueError(f"expected requests per window such as '2/1s', '10/60s', '10 per 60 s' or '30/min', "
                         f"got {text!r}")
    count = float(match["count"])
    window = float(match["num"] or 1) * _UNITS[unit]
    if count <= 0 or window <= 0:
        raise ValueError(f"a rate needs a positive count and window, got {text!r}")
    return Rate(count, window)


class _Table(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of every config table: unknown keys are errors."""


class ServerConfig(_Table):
    """``[server]``: where and how the HTTP server listens."""

    host: str = "127.0.0.1"
    port: Port = 4000
    workers: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    access_log: bool = False
    cors_origins: list[str] = msgspec.field(default_factory=lambda: ["*"])
    shutdown_timeout_s: Seconds = 2.0
    #: Request bodies larger than this (bytes) are refused with 413 before they are read.
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1024, le=100_000_000)] = 16_384
    #: A request still without an answer after this many seconds gets 503 ``upstream_busy``.
    response_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 60.0

    def __post_init__(self) -> None:
        if not self.host.strip():
            raise ValueError("host: must not be empty: an address to listen on (127.0.0.1, 0.0.0.0, ::)")


class StorageConfig(_Table):
    """``[storage]``: the data dir holds ``chessstats.db`` (SQLite) and ``cache/`` (diskcache)."""

    data_dir: str = "./data"
    busy_timeout_ms: PositiveInt = 5000
    #: Seconds between two ``PRAGMA quick_check`` runs of the database (in the background, per
    #: worker; the result shows in ``/health``). The first runs at start.
    quick_check_interval_s: Annotated[float, msgspec.Meta(ge=10)] = 600.0

    def __post_init__(self) -> None:
        if not self.data_dir.strip():
            raise ValueError("data_dir: must not be empty: a folder path (the current folder is \".\")")


class StoreConfig(_Table):
    """``[store]``: which database engine holds the store (the cache stays in the data dir).

    * ``url``: empty or ``sqlite://`` (default): SQLite, ``<data dir>/chessstats.db``;
      ``postgresql://user:password@host:port/dbname`` (``?host=/run/postgresql`` for a unix
      socket): PostgreSQL through asyncpg, the same schema and migrations (``DATABASE_URL``).
    * ``pool_size``: PostgreSQL connections per process at most.
    """

    url: str = ""
    pool_size: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 10

    def __post_init__(self) -> None:
        scheme = urlsplit(self.url).scheme.lower() if self.url else ""
        if scheme in ("", "sqlite"):
            rest = self.url.split(":", 1)[1].lstrip("/") if ":" in self.url else self.url
            if rest:
                raise ValueError("url: the SQLite database is always <data dir>/chessstats.db: use `sqlite://` "
                                 "(or leave url empty) and set [storage] data_dir")
        elif scheme not in ("postgresql", "postgres"):
            raise ValueError(f"url: expected sqlite:// or postgresql://..., got a {scheme!r} URL")

    @property
    def engine(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return "postgresql" if self.url.lower().startswith(("postgresql:", "postgres:")) else "sqlite"


class CacheConfig(_Table):
    """``[cache]``: the TTL cache (diskcache on disk, a small LRU of encoded bodies in memory).

    ``url``: empty (default) keeps the cache in ``<data dir>/cache`` (diskcache) and coordinates the
    workers of one host through files in the data dir; a Redis URL (``redis://[:password@]host:port/db``,
    ``rediss://...``, ``unix:///path/redis.sock?db=N``; alias ``REDIS_URL``) puts the cache, the
    locks (single-flight, imports, the scheduler), the upstream gates and the inbound rate limits in
    that Redis, shared by every host using it. ``redis_prefix`` starts every Redis key;
    ``lock_lease_s`` is how long a Redis lock of a killed process stays taken.
    """

    enabled: bool = True
    url: str = ""
    redis_prefix: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] = "chessstats:"
    lock_lease_s: Annotated[float, msgspec.Meta(ge=1, le=600)] = 15.0
    default_ttl_s: PositiveInt = 300
    memory_entries: Annotated[int, msgspec.Meta(ge=0)] = 2048
    size_limit_mb: PositiveInt = 1024
    #: Seconds an expired entry is kept and served stale (``stale: true``) while it is revalidated
    #: in the background, or while its upstream fails (stale-while-revalidate, stale-if-error).
    stale_s: Annotated[float, msgspec.Meta(ge=0)] = 86_400.0
    #: Seconds a client waits for an upstream when a stored copy exists (then it gets that copy).
    client_wait_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 2.0
    #: A failed upstream fetch is remembered per key for this many seconds, doubled with each
    #: consecutive failure up to ``failure_max_s``: meanwhile no request fetches it again.
    failure_base_s: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    failure_max_s: Annotated[float, msgspec.Meta(gt=0)] = 300.0

    def __post_init__(self) -> None:
        if self.url:
            scheme = self.url.split("://", 1)[0].lower() if "://" in self.url else ""
            if scheme not in ("redis", "rediss", "unix"):
                raise ValueError(f"url: expected empty (diskcache in the data dir) or a redis://, rediss:// or "
                                 f"unix:// URL, got {self.url!r}")


class UpstreamConfig(_Table):
    """``[upstream]``: settings shared by every upstream client.

    ``contact`` (an e-mail or URL) goes into the User-Agent. The round-one key ``timeout_s`` is a
    deprecated alias of ``timeout_s`` of ``[lichess]``, ``[chesscom]`` and ``[fide]``.
    """

    contact: str = ""


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"expected an http:// or https:// URL, got {url!r}")


PositiveSeconds = Annotated[float, msgspec.Meta(gt=0)]


class UpstreamSettings(_Table):
    """The one shape of ``[lichess]``, ``[chesscom]`` and ``[fide]`` (durations in seconds).

    * ``url``: the API base.
    * ``timeout_s``: total deadline of a JSON call (connect, headers and whole body).
    * ``stream_timeout_s``: total deadline of a streamed export (tournament results, games).
    * ``max_in_flight``: requests at once across every worker process of the host.
    * ``rate``: requests per window, e.g. ``"2/1s"``, ``"10/60s"``, ``"10 per 60 s"``, ``"30/min"``;
      strictly spaced (no burst).
    * ``pause_after_429_s``: pause after a 429 without ``Retry-After``; ``max_pause_s``: ceiling of
      a doubled pause (repeated 429) and of the breaker's interval.
    * ``max_queue_wait_s``: a request that would wait longer for its turn is answered 503 ``upstream_busy``.
    * ``breaker_failures``: consecutive failures that open the circuit breaker for ``breaker_open_s``.
    """

    url: str = ""
    timeout_s: PositiveSeconds = 20.0
    stream_timeout_s: PositiveSeconds = 600.0
    max_in_flight: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    rate: str = "2/1s"
    pause_after_429_s: PositiveSeconds = 60.0
    max_pause_s: PositiveSeconds = 900.0
    max_queue_wait_s: Seconds = 2.0
    breaker_failures: PositiveInt = 5
    breaker_open_s: PositiveSeconds = 10.0

    def __post_init__(self) -> None:
        # "<key>: <message>" is turned into "<table>.<key>: <message>" by :func:`_describe`
        try:
            _check_url(self.url)
        except ValueError as exc:
            raise ValueError(f"url: {exc}") from None
        try:
            parse_rate(self.rate)
        except ValueError as exc:
            raise ValueError(f"rate: {exc}") from None


class LichessConfig(UpstreamSettings):
    """``[lichess]``: the Lichess API (``url`` includes ``/api``) and an optional API ``token``.
    ``max_requests_per_s`` (round one) is a deprecated alias of ``rate = "<n>/1s"``."""

    url: str = "https://lichess.org/api"
    token: str = ""


class ChesscomConfig(UpstreamSettings):
    """``[chesscom]``: Chess.com's Published-Data API. ``url`` includes the ``/pub`` prefix;
    ``titled_tuesday_players``: whose tournament lists the ``titled-tuesday`` job reads."""

    url: str = "https://api.chess.com/pub"
    rate: str = "3/1s"
    #: players whose ``/player/{u}/tournaments`` lists the ``titled-tuesday`` job reads (they play it weekly)
    titled_tuesday_players: list[str] = msgspec.field(
        default_factory=lambda: ["hikaru", "fabianocaruana", "danielnaroditsky"])


class FideConfig(UpstreamSettings):
    """``[fide]``: the community FIDE ratings API (slow: it scrapes FIDE live)."""

    url: str = "https://fide-api.vercel.app"
    timeout_s: PositiveSeconds = 30.0
    max_in_flight: Annotated[int, msgspec.Meta(ge=1, le=64)] = 2


#: Round-one keys still accepted: ``(table, key)`` -> the new ``(table, key)`` pairs they set.
DEPRECATED_KEYS: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {
    ("lichess", "max_requests_per_s"): (("lichess", "rate"),),
    ("upstream", "timeout_s"): (("lichess", "timeout_s"), ("chesscom", "timeout_s"), ("fide", "timeout_s")),
}


def _apply_deprecated(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """Move deprecated keys of one layer (file, environment, flags) onto their new keys; a new key
    given in the same layer wins."""
    for (table, key), targets in DEPRECATED_KEYS.items():
        values = raw.get(table)
        if not isinstance(values, dict) or key not in values:
            continue
        value = values.pop(key)
        if not values:
            del raw[table]
        log.warning("%s: %s.%s is deprecated; use %s", source, table, key, " / ".join(f"{t}.{k}" for t, k in targets))
        for new_table, new_key in targets:
            if key == "max_requests_per_s":
                try:
                    per_s = float(value)
                except (TypeError, ValueError):
                    message = f"{table}.{key}: expected a number of requests per second, got {value!r}"
                    raise ConfigError(message) from None
                if not per_s > 0:
                    raise ConfigError(f"{table}.{key}: expected a positive number, got {value!r}")
                value = f"{per_s:g}/1s"
            raw.setdefault(new_table, {}).setdefault(new_key, value)
    return raw


class PlayersConfig(_Table):
    """``[players]``: ``fide_site_url``, the official FIDE rating site whose top-list table
    (``a_top.php?list=open``) is the FIDE top list's last fallback (through the ``[fide]`` gate).
    Empty: ``https://ratings.fide.com`` while ``[fide] url`` is its default, else ``<[fide] url>/site``
    (so that pointing ``FIDE_API_URL`` at a local server redirects every FIDE request)."""

    fide_site_url: str = ""

    def __post_init__(self) -> None:
        if not self.fide_site_url:
            return
        try:
            _check_url(self.fide_site_url)
        except ValueError as exc:
            raise ValueError(f"fide_site_url: {exc}") from None


class TournamentsConfig(_Table):
    """``[tournaments]``: cache TTLs (seconds) and import limits of the tournament routes."""

    ongoing_ttl_s: PositiveInt = 300
    list_ttl_s: PositiveInt = 120
    upcoming_list_ttl_s: PositiveInt = 1800
    max_standings: PositiveInt = 100_000
    not_found_ttl_s: PositiveInt = 60
    import_lock_timeout_s: PositiveInt = 300
    #: Seconds a request for a finished tournament waits for its background import before it
    #: answers with what is known (``importState``).
    import_wait_s: Annotated[float, msgspec.Meta(ge=0, le=60)] = 1.5
    #: Seconds between a worker's looks for queued, interrupted or due imports.
    import_poll_s: Annotated[float, msgspec.Meta(gt=0, le=300)] = 5.0
    #: Seconds before a failed import is tried again; doubled each attempt (at most an hour).
    import_retry_base_s: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    import_max_attempts: PositiveInt = 8
    #: Seconds an import may wait for its turn at the upstream (imports are not in a hurry).
    import_queue_wait_s: Annotated[float, msgspec.Meta(gt=0)] = 120.0
    #: Seconds between refreshes of imported games whose status was not final yet.
    pending_refresh_s: Annotated[float, msgspec.Meta(gt=0)] = 300.0
    #: Upstream lookups one batch request may start at most; the other unknown ids are answered
    #: as not yet known (``notYetKnown``).
    batch_max_upstream: PositiveInt = 5


class AdminConfig(_Table):
    """``[admin]``: the bearer token of the admin routes. Empty: every admin route answers 401."""

    token: str = ""


class SchedulerConfig(_Table):
    """``[scheduler]``: the in-process job scheduler."""

    enabled: bool = True
    timezone: str = "UTC"
    max_attempts: PositiveInt = 3
    retry_base_s: Seconds = 30.0
    stop_timeout_s: Seconds = 10.0
    #: How often (seconds) a worker without the scheduler lock tries to take it, and the holder
    #: looks for queued runs (manual runs and retries asked through another worker).
    poll_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 1.0
    #: Leaderboard snapshots older than this many days are deleted by the ``cleanup`` job.
    snapshot_retention_days: PositiveInt = 30

    def __post_init__(self) -> None:
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"timezone: unknown time zone {self.timezone!r}") from exc


class JobConfig(_Table):
    """``[jobs.<name>]``: a job's cron ``schedule`` (None: the job's default) and ``enabled``."""

    schedule: str | None = None
    enabled: bool = True

    def __post_init__(self) -> None:
        if self.schedule is None:
            return
        if not croniter.is_valid(self.schedule):
            raise ValueError(f"invalid cron expression {self.schedule!r}")
        if not cron_fires(self.schedule):
            raise ValueError(f"cron expression {self.schedule!r} never fires (no such date, e.g. 31 February)")


def cron_fires(expr: str) -> bool:
    """Whether a valid cron expression has a tick at all: ``0 0 31 2 *`` (31 February) has none.

    Searched from 2000-01-01 over croniter's window (50 years), so a leap day (``0 0 29 2 *``) fires.
    """
    from datetime import datetime

    from croniter import CroniterBadDateError

    try:
        croniter(expr, datetime(2000, 1, 1)).get_next(datetime)
    except (CroniterBadDateError, ValueError, OverflowError):
        return False
    return True


#: The values of ``[log] level`` (any case).
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


class LogConfig(_Table):
    """``[log]``: ``level`` is one of debug, info, warning, error, critical."""

    level: str = "info"

    def __post_init__(self) -> None:
        if self.level.lower() not in LOG_LEVELS:
            raise ValueError(f"level: unknown log level {self.level!r}; expected one of {', '.join(LOG_LEVELS)}")



class RateLimitConfig(_Table):
    """``[ratelimit]``: inbound limits per client address on ``/api`` (fixed windows per client,
    shared by every worker through ``<data dir>/ratelimit.table``).

    * ``window_s`` / ``max_requests``: every ``/api`` request (100 per 60 s).
    * ``expensive_window_s`` / ``expensive_max_requests``: the expensive routes (games; 10 per 300 s),
      counted on top of the general limit.
    * ``trusted_proxies``: peers (IP addresses or CIDRs) whose ``X-Forwarded-For`` names the client;
      from any other peer the header is ignored.
    """

    enabled: bool = True
    window_s: Annotated[float, msgspec.Meta(ge=1, le=86_400)] = 60.0
    max_requests: Annotated[int, msgspec.Meta(ge=1, le=1_000_000_000)] = 100
    expensive_window_s: Annotated[float, msgspec.Meta(ge=1, le=86_400)] = 300.0
    expensive_max_requests: Annotated[int, msgspec.Meta(ge=1, le=1_000_000_000)] = 10
    trusted_proxies: list[str] = msgspec.field(default_factory=lambda: ["127.0.0.1/32", "::1/128"])

    def __post_init__(self) -> None:
        import ipaddress

        for entry in self.trusted_proxies:
            try:
                ipaddress.ip_network(entry.strip(), strict=False)
            except ValueError:
                raise ValueError(f"trusted_proxies: {entry!r} is not an IP address or CIDR (e.g. 10.0.0.0/8)") from None


class MetricsConfig(_Table):
    """``[metrics]``: ``GET /metrics`` (Prometheus text format). ``token``: when set, a scrape needs
    ``Authorization: Bearer <token>``; empty: open (the server listens on 127.0.0.1 by default)."""

    enabled: bool = True
    token: str = ""


class Config(_Table):
    """The whole configuration, one attribute per TOML table."""

    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    storage: StorageConfig = msgspec.field(default_factory=StorageConfig)
    store: StoreConfig = msgspec.field(default_factory=StoreConfig)
    cache: CacheConfig = msgspec.field(default_factory=CacheConfig)
    upstream: UpstreamConfig = msgspec.field(default_factory=UpstreamConfig)
    lichess: LichessConfig = msgspec.field(default_factory=LichessConfig)
    chesscom: ChesscomConfig = msgspec.field(default_factory=ChesscomConfig)
    fide: FideConfig = msgspec.field(default_factory=FideConfig)
    tournaments: TournamentsConfig = msgspec.field(default_factory=TournamentsConfig)
    players: PlayersConfig = msgspec.field(default_factory=PlayersConfig)
    admin: AdminConfig = msgspec.field(default_factory=AdminConfig)
    scheduler: SchedulerConfig = msgspec.field(default_factory=SchedulerConfig)
    jobs: dict[str, JobConfig] = msgspec.field(default_factory=dict)
    log: LogConfig = msgspec.field(default_factory=LogConfig)
    ratelimit: RateLimitConfig = msgspec.field(default_factory=RateLimitConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)

    @property
    def data_dir(self) -> Path:
        """The data dir as an absolute path."""
        return Path(self.storage.data_dir).expanduser().resolve()


#: The original design's environment names, mapped to ``(table, key)``.
ENV_ALIASES: dict[str, tuple[str, str]] = {
    "PORT": ("server", "port"),
    "HOST": ("server", "host"),
    "LICHESS_API_URL": ("lichess", "url"),
    "LICHESS_TOKEN": ("lichess", "token"),
    "CHESS_COM_API_URL": ("chesscom", "url"),
    "FIDE_API_URL": ("fide", "url"),
    "CACHE_ENABLED": ("cache", "enabled"),
    "CACHE_DEFAULT_TTL": ("cache", "default_ttl_s"),
    "REDIS_URL": ("cache", "url"),
    "ENABLE_BACKGROUND_JOBS": ("scheduler", "enabled"),
    "LOG_LEVEL": ("log", "level"),
    "CHESSSTATS_DATA_DIR": ("storage", "data_dir"),
    "DATABASE_URL": ("store", "url"),
    "CHESSSTATS_ADMIN_TOKEN": ("admin", "token"),
    "CHESSSTATS_CONTACT": ("upstream", "contact"),
}

#: Interval variables (minutes) of the original design, mapped to the job they schedule.
INTERVAL_ALIASES: dict[str, str] = {
    "TOURNAMENT_MONITOR_INTERVAL": "tournament-monitor",
    "TOURNAMENT_DISCOVERY_INTERVAL": "tournament-discovery",
}

#: The original design's rate-limit variables (``RATE_LIMIT_WINDOW_MS`` is in milliseconds):
#: name -> (key of ``[ratelimit]``, divisor to the key's unit, what the value must be).
RATE_LIMIT_ALIASES: dict[str, tuple[str, int, str]] = {
    "RATE_LIMIT_WINDOW_MS": ("window_s", 1000, "a whole number of milliseconds from 1000 to 86400000"),
    "RATE_LIMIT_MAX_REQUESTS": ("max_requests", 1, "a whole number of requests from 1 to 1000000000"),
}

_ENV_PREFIX = "CHESSSTATS_"
#: ``CHESSSTATS_*`` names that are not config keys (read elsewhere, e.g. the config file path).
_ENV_NON_KEYS = {"CHESSSTATS_CONFIG"}


def _tables() -> dict[str, type[_Table]]:
    return {f.name: f.type for f in msgspec.structs.fields(Config) if f.name != "jobs"}  # type: ignore[misc]


def _env_overrides(env: Mapping[str, str], sources: dict[str, tuple[str, str]] | None = None) -> dict[str, Any]:
    """Translate environment variables into a nested dict of raw (string) overrides.

    ``sources`` (when given) receives ``{"table.key": (variable, value)}`` for every key set here, so
    that an error can name the variable the user set (``PORT=abc: not an integer``).

    Raises:
        ConfigError: a ``CHESSSTATS_*`` variable names no key, or an interval is not a whole
            number of minutes between 1 and 59.
    """
    out: dict[str, Any] = {}
    sources = {} if sources is None else sources
    tables = _tables()
    for name, value in env.items():
        if name in ENV_ALIASES:
            table, key = ENV_ALIASES[name]
            out.setdefault(table, {})[key] = value
            sources[f"{table}.{key}"] = (name, value)
        elif name in INTERVAL_ALIASES:
            job = INTERVAL_ALIASES[name]
            if not value.strip().isdigit() or not 1 <= int(value) <= 59:
                raise ConfigError(f"{name}: expected a whole number of minutes from 1 to 59, got {value!r}")
            out.setdefault("jobs", {}).setdefault(job, {})["schedule"] = f"*/{int(value)} * * * *"
        elif name in RATE_LIMIT_ALIASES:
            key, divisor, expected = RATE_LIMIT_ALIASES[name]
            text = value.strip()
            low, high = (1000, 86_400_000) if divisor == 1000 else (1, 1_000_000_000)
            if not text.isdigit() or not low <= int(text) <= high:
                raise ConfigError(f"{name}: expected {expected}, got {value!r}")
            out.setdefault("ratelimit", {})[key] = int(text) / divisor if divisor != 1 else int(text)
        elif name.startswith(_ENV_PREFIX) and name not in _ENV_NON_KEYS:
            rest = name[len(_ENV_PREFIX):].lower()
            if rest.startswith("jobs_"):
                job_key = rest[len("jobs_"):]
                for key in ("schedule", "enabled"):
                    if job_key.endswith("_" + key):
                        job = job_key[: -len(key) - 1].replace("_", "-")
                        out.setdefault("jobs", {}).setdefault(job, {})[key] = value
                        sources[f"jobs.{job}.{key}"] = (name, value)
                        break
                else:
                    raise ConfigError(f"{name}: unknown configuration key")
                continue
            for table, struct in tables.items():
                if rest.startswith(table + "_"):
                    key = rest[len(table) + 1:]
                    if key in struct.__struct_fields__ or (table, key) in DEPRECATED_KEYS:
                        out.setdefault(table, {})[key] = value
                        sources[f"{table}.{key}"] = (name, value)
                        break
            else:
                raise ConfigError(f"{name}: unknown configuration key")
    return _split_lists(out)


def _split_lists(raw: dict[str, Any]) -> dict[str, Any]:
    """Environment values for list-typed keys are comma separated."""
    tables = _tables()
    for table, values in raw.items():
        struct = tables.get(table)
        if struct is None:
            continue
        for f in msgspec.structs.fields(struct):
            if f.name in values and isinstance(values[f.name], str) and getattr(f.type, "__origin__", None) is list:
                values[f.name] = [s.strip() for s in values[f.name].split(",") if s.strip()]
    return raw


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        elif isinstance(value, Mapping):
            base[key] = _merge({}, value)
        else:
            base[key] = value
    return base


def load_config(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Mapping[str, Any]] | None = None,
) -> Config:
    """Build the configuration: defaults < file < environment < flags.

    Args:
        path: a TOML file; ``None`` means ``$CHESSSTATS_CONFIG`` or, failing that, no file.
        env: the environment (defaults to ``os.environ``).
        flags: overrides from the command line, as ``{table: {key: value}}``.

    Returns:
        The validated :class:`Config`.

    Raises:
        ConfigError: the file is missing or not TOML, a key is unknown, or a value is bad;
            the message names the key (e.g. ``server.port``).
    """
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    path = path or env.get("CHESSSTATS_CONFIG") or None
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"config file not found: {path}") from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
        except OSError as exc:
            raise ConfigError(f"config file {path} cannot be read: {exc.strerror or exc}") from exc
    if not isinstance(raw, dict):
        raw = {}
    _apply_deprecated(raw, str(path))
    sources: dict[str, tuple[str, str]] = {}
    _merge(raw, _apply_deprecated(_env_overrides(env, sources), "environment"))
    flag_keys = {f"{table}.{key}" for table, values in (flags or {}).items() for key in values}
    _merge(raw, _apply_deprecated(_merge({}, flags or {}), "command line"))
    sources = {k: v for k, v in sources.items() if k not in flag_keys}  # a flag wins over the variable
    jobs = raw.get("jobs")
    if isinstance(jobs, dict):  # validated one by one so that a message names the job's key
        for name, table in jobs.items():
            try:
                msgspec.convert(table, JobConfig, strict=False)
            except msgspec.ValidationError as exc:
                text = str(exc)
                message, _, where = text.rpartition(" - at `$.")
                key = where.rstrip("`") if message else "schedule"  # __post_init__ checks the schedule
                unknown = re.fullmatch(r"Object contains unknown field `(.+)`", text)
                if unknown:  # [jobs.cleanup] schedul = ...
                    message, key = text, unknown.group(1)
                raise ConfigError(_name_variable(f"jobs.{name}.{key}: {message or text}", sources)) from exc
    try:
        return msgspec.convert(raw, Config, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(_name_variable(_describe(exc), sources)) from exc


_FRIENDLY = {"Expected `int`, got `str`": "not an integer", "Expected `float`, got `str`": "not a number",
             "Expected `bool`, got `str`": "not a boolean (true or false)",
             "Expected `array`, got `str`": "not a list"}


def _name_variable(message: str, sources: Mapping[str, tuple[str, str]]) -> str:
    """``server.port: Expected `int`, got `str``` → ``PORT=abc: not an integer (server.port)`` when
    the value came from an environment variable; the message as it is otherwise."""
    key, sep, text = message.partition(": ")
    if not sep or key not in sources:
        return message
    variable, value = sources[key]
    shown = value if len(value) <= 40 else value[:40] + "…"
    return f"{variable}={shown}: {_FRIENDLY.get(text, text)} (sets {key})"


def _describe(exc: msgspec.ValidationError) -> str:
    """Turn msgspec's ``... - at `$.server.port``` into ``server.port: ...``."""
    text = str(exc)
    if " - at `$." in text:
        message, _, where = text.rpartition(" - at `$.")
        where = where.rstrip("`")
        key, sep, rest = message.partition(": ")  # a __post_init__ that names its key ("rate: ...")
        if sep and key.isidentifier() and "." not in where:
            return f"{where}.{key}: {rest}"
        return f"{where}: {message}"
    if text.startswith("Object contains unknown field"):
        return text
    return text
