"""Operations routes: ``GET /health``."""

from __future__ import annotations

import logging
import time

from sanic import Blueprint, HTTPResponse, Request

from chessstats import __version__
from chessstats.api.envelope import JSON

log = logging.getLogger(__name__)
bp = Blueprint("ops")


@bp.route("/health", methods=["GET", "HEAD"])
async def health(request: Request) -> HTTPResponse:
    """200 ``{"status": "ok", "checks": {...}, "cache": {...}, "jobs": {waiting, active, completed,
    failed}}``; ``checks.scheduler`` is this worker's scheduler (time zone, whether it holds the
    scheduler lock, job counts) or ``{"status": "disabled"}``; 503 with ``"status": "error"``
    when the database or the cache is unusable. Upstreams are not probed here (no upstream budget
    is spent by a health poller); their last known state is reported.
    """
    import msgspec

    ctx = request.app.ctx
    checks: dict[str, dict[str, object]] = {}
    ok = True
    started = time.perf_counter()
    try:
        await ctx.db.fetchval("SELECT 1")
        checks["database"] = {"status": "ok", "latencyMs": round((time.perf_counter() - started) * 1000, 2)}
    except Exception as exc:  # any failure of the database makes the service unhealthy
        log.error("health: database check failed: %s", exc)
        checks["database"] = {"status": "error", "error": type(exc).__name__}
        ok = False
    try:
        cache_stats = ctx.cache.stats()
        checks["cache"] = {"status": "ok", "entries": cache_stats["entries"]}
    except Exception as exc:
        log.error("health: cache check failed: %s", exc)
        checks["cache"] = {"status": "error", "error": type(exc).__name__}
        cache_stats = None
        ok = False
    lichess = ctx.lichess
    state = {None: "unknown", True: "ok", False: "degraded"}[lichess.healthy]
    checks["lichess"] = {"status": state, "requests": lichess.requests}
    if getattr(ctx, "scheduler", None) is not None:
        checks["scheduler"] = ctx.scheduler.health()
    else:
        checks["scheduler"] = {"status": "disabled", "timezone": ctx.config.scheduler.timezone, "lockHolder": False}
    try:
        from chessstats.scheduler.control import run_counts

        jobs = await run_counts(ctx.db)
    except Exception as exc:  # the database check above already reports the cause
        log.error("health: job counts failed: %s", exc)
        jobs = None
    body = {
        "status": "ok" if ok else "error",
        "version": __version__,
        "checks": checks,
        "cache": cache_stats,
        "jobs": jobs,
    }
    return HTTPResponse(msgspec.json.encode(body), status=200 if ok else 503, content_type=JSON)
