"""Operations routes: ``GET /health`` (deep: see :mod:`chessstats.api.health_monitor` for the slow parts)."""

from __future__ import annotations

import logging
import shutil
import time
from datetime import UTC, datetime
from typing import Any

import msgspec
from sanic import Blueprint, HTTPResponse, Request

from chessstats import __version__
from chessstats.api.envelope import JSON
from chessstats.api.health_monitor import HealthMonitor

log = logging.getLogger(__name__)
bp = Blueprint("ops")

#: Below this many free bytes in the data dir's file system, the storage check fails (``disk full``).
MIN_FREE_BYTES = 256 * 1024
#: At most one probe write into the database per this many seconds (per process).
PROBE_INTERVAL_S = 10.0


#: Upstreams every health answer names (``chesscom`` has no client yet: reported as disabled).
UPSTREAMS = ("lichess", "chesscom", "fide")
#: Gate states that make the service ``degraded`` (it still answers from what is stored).
DEGRADED_UPSTREAM = ("paused", "open", "degraded")


@bp.listener("after_server_start")
async def _start_monitor(app: Any) -> None:
    """Start this worker's :class:`HealthMonitor` (the first quick_check runs now, in a thread)."""
    ctx = app.ctx
    sqlite = ctx.config.store.engine == "sqlite"
    monitor = HealthMonitor(ctx.resources.paths.db_path if sqlite else None, ctx.config.data_dir,
                            interval_s=ctx.config.storage.quick_check_interval_s,
                            busy_timeout_ms=ctx.config.storage.busy_timeout_ms,
                            stamp_dir=ctx.resources.paths.locks_dir)
    ctx.health_monitor = monitor
    monitor.start({name: client.gate for name in UPSTREAMS if (client := getattr(ctx, name, None)) is not None})


@bp.listener("before_server_stop")
async def _stop_monitor(app: Any) -> None:
    monitor = getattr(app.ctx, "health_monitor", None)
    if monitor is not None:
        await monitor.stop()


def _probe_fn(name: str, client: Any) -> Any:
    """One cheap request to an upstream through its gate (the health probe), or None."""
    if name == "lichess":
        return lambda: client.fetch_current(max_wait_s=0)
    if name == "fide":
        return lambda: client.fetch_top(1, max_wait_s=0)
    return None


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


async def storage_check(ctx: Any) -> dict[str, Any]:
    """``checks.storage``: ``{"status": "ok"|"error", "freeBytes", "totalBytes", "error"?, "since"?,
    "cacheError"?}``.

    ``error`` (``disk full``, ``read-only``, ``I/O error``) comes from the database's last failed
    write (until a write succeeds), from fewer than :data:`MIN_FREE_BYTES` free bytes in the data
    dir, or from the data dir's file-system write probe (a new file cannot be created). A tiny
    probe write into the database runs at most every :data:`PROBE_INTERVAL_S` seconds (skipped
    while the disk is known to be full). ``cacheError`` is the cache's current fault (the
    cache is disposable: it never makes the service unhealthy). Never raises.
    """
    db, cache = ctx.db, ctx.cache
    check: dict[str, Any] = {"status": "ok", "freeBytes": None, "totalBytes": None}
    free: int | None = None
    try:
        usage = shutil.disk_usage(ctx.config.data_dir)
        free = usage.free
        check["freeBytes"], check["totalBytes"] = usage.free, usage.total
    except OSError as exc:
        check["status"], check["error"] = "error", f"data dir unavailable: {exc.strerror or exc}"
    low = free is not None and free < MIN_FREE_BYTES
    now = time.monotonic()
    if now >= getattr(ctx, "health_probe_at", 0.0) and not (low and db.storage_error is not None):
        ctx.health_probe_at = now + PROBE_INTERVAL_S
        await db.probe_write()  # records / clears db.storage_error; never raises
    error = "disk full" if low else db.storage_error
    if error is not None:
        check["status"], check["error"] = "error", error
        if db.storage_error is not None:
            check["since"] = _iso(db.storage_error_at)
    monitor = getattr(ctx, "health_monitor", None)
    fs_error = monitor.fs_check() if monitor is not None else None
    if fs_error is not None and check["status"] == "ok":  # the data dir cannot take a new file
        check["status"], check["error"] = "error", fs_error
    if not cache.check():
        check["cacheError"] = cache.last_error
    return check


@bp.route("/health", methods=["GET", "HEAD"])
async def health(request: Request) -> HTTPResponse:
    """200 ``{"status": "ok"|"degraded", "version", "uptimeS", "checks": {...}, "cache": {...}, "jobs":
    {waiting, active, completed, failed}}``; 503 with ``"status": "error"`` when the database cannot be
    read or written or has corrupted pages, the data dir cannot be written, or the cache cannot be
    opened at all. ``degraded`` (200): an upstream is paused, backed off or failing, or the cache
    absorbed storage errors.

    ``checks.database`` adds ``quickCheck``: the last background ``PRAGMA quick_check``
    (:class:`~chessstats.api.health_monitor.HealthMonitor`; ``corrupt`` makes the database check fail).

    ``checks.storage`` is :func:`storage_check` (free bytes of the data dir, the reason the database
    cannot be written: ``disk full``, ``read-only``, ``I/O error``); ``checks.cache`` is ``ok``,
    ``degraded`` (storage errors were absorbed since its last successful write: requests still
    succeed, uncached) or ``error`` (no disk layer: it could not be reopened or recreated);
    ``checks.scheduler`` is this worker's scheduler (time zone, whether it holds the scheduler
    lock, job counts) or ``{"status": "disabled"}``. Upstreams report their gate's shared state; an
    upstream failing for over a minute gets one background probe per minute (never awaited here),
    a healthy or unused one none. Never answers 500.
    """
    try:
        body, ok = await health_report(request)
    except Exception as exc:  # a health check must answer, whatever broke
        log.exception("health: check failed")
        body, ok = {"status": "error", "version": __version__, "error": type(exc).__name__}, False
    return HTTPResponse(msgspec.json.encode(body), status=200 if ok else 503, content_type=JSON)


async def health_report(request: Request) -> tuple[dict[str, Any], bool]:
    """The body of ``/health`` and whether the service is usable (the status page shows it too).

    Raises:
        Exception: only what a check did not expect (``/health`` answers it as ``error``).
    """
    ctx = request.app.ctx
    checks: dict[str, dict[str, object]] = {}
    ok = True
    started = time.perf_counter()
    degraded = False
    monitor = getattr(ctx, "health_monitor", None)
    try:
        await ctx.db.fetchval("SELECT 1")
        checks["database"] = {"status": "ok", "latencyMs": round((time.perf_counter() - started) * 1000, 2)}
        if getattr(ctx.db, "engine", "sqlite") == "postgresql":  # [store] url: pg_database_size
            checks["database"].update(engine="postgresql", sizeBytes=await ctx.db.size_bytes())
    except Exception as exc:  # any failure of the database makes the service unhealthy
        log.error("health: database check failed: %s", exc)
        checks["database"] = {"status": "error", "error": type(exc).__name__}
        ok = False
    if monitor is not None:
        quick = dict(monitor.quick)
        checks["database"]["quickCheck"] = quick
        if quick.get("status") == "corrupt":
            checks["database"]["status"] = "error"
            checks["database"]["error"] = "corrupted pages: " + "; ".join(quick.get("problems") or [])[:300]
            ok = False
    try:
        checks["storage"] = await storage_check(ctx)
    except Exception as exc:
        log.error("health: storage check failed: %s", exc)
        checks["storage"] = {"status": "error", "error": type(exc).__name__}
    if checks["storage"]["status"] != "ok":
        ok = False
    cache_stats = None
    try:
        cache = ctx.cache
        cache_stats = cache.stats()
        status = "ok" if cache.healthy else "degraded" if cache.usable else "error"
        checks["cache"] = {"status": status, "entries": cache_stats["entries"], "errors": cache.errors}
        if status != "ok":
            checks["cache"]["error"] = cache.last_error
        if status == "error":  # no disk layer at all (it cannot even be recreated)
            ok = False
        elif status == "degraded":
            degraded = True
    except Exception as exc:
        log.error("health: cache check failed: %s", exc)
        checks["cache"] = {"status": "error", "error": type(exc).__name__}
        ok = False
    for name in UPSTREAMS:  # the gates' shared state; at most one background probe per minute
        client = getattr(ctx, name, None)
        if client is None:
            checks[name] = {"status": "disabled", "reason": f"no {name} client in this version"}
            continue
        try:
            state = client.gate.health()
            checks[name] = {**state, "requests": client.requests}
            if state["status"] in DEGRADED_UPSTREAM:
                degraded = True
            probe = _probe_fn(name, client)
            if monitor is not None and probe is not None and monitor.maybe_probe_upstream(name, state, probe):
                checks[name]["probing"] = True
            if hasattr(client, "not_modified"):  # conditional requests answered 304 by this process
                checks[name].update(notModified=client.not_modified, bytesSaved=client.bytes_saved)
        except Exception as exc:  # the gate's shared state unreadable: report, never fail health
            log.error("health: %s gate state unreadable: %s", name, exc)
            checks[name] = {"status": "unknown", "requests": getattr(client, "requests", None)}
    imports = getattr(ctx, "imports", None)
    if imports is not None:
        checks["imports"] = {"completed": imports.completed, "failed": imports.failed}
    try:
        if getattr(ctx, "scheduler", None) is not None:
            checks["scheduler"] = ctx.scheduler.health()
        else:
            checks["scheduler"] = {"status": "disabled", "timezone": ctx.config.scheduler.timezone,
                                   "lockHolder": False}
    except Exception as exc:
        log.error("health: scheduler check failed: %s", exc)
        checks["scheduler"] = {"status": "error", "error": type(exc).__name__}
    try:
        from chessstats.scheduler.control import run_counts

        jobs = await run_counts(ctx.db)
    except Exception as exc:  # the database check above already reports the cause
        log.error("health: job counts failed: %s", exc)
        jobs = None
    body = {
        "status": "error" if not ok else "degraded" if degraded else "ok",
        "version": __version__,
        "uptimeS": round(time.time() - monitor.started_at, 1) if monitor is not None else None,
        "checks": checks,
        "cache": cache_stats,
        "jobs": jobs,
    }
    return body, ok
