"""Inbound rate limits and request metrics as one pair of Sanic middleware, and ``GET /metrics``.

:func:`install` is the only thing :mod:`chessstats.app` calls. It registers, according to the
configuration:

* a request middleware: stamps the start time (metrics) and, on ``/api`` paths, counts the request
  against the client's windows (:mod:`chessstats.ratelimit`); past a limit it answers 429
  ``rate_limited`` with ``Retry-After`` without running the route;
* a response middleware: adds ``RateLimit-Limit``, ``RateLimit-Remaining`` and ``RateLimit-Reset``
  to every ``/api`` answer (304s and errors included; already encoded on the cache-hit path's
  :class:`~chessstats.api.envelope.EnvelopeResponse`) and tallies the request for the metrics;
* the ``/metrics`` route (``[metrics] enabled``), behind ``Authorization: Bearer <[metrics] token>``
  when a token is set;
* listeners: the main process empties ``<data dir>/metrics/`` before the workers start; each worker
  opens the shared rate-limit table and its metrics, and flushes its tallies every second.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import time
from typing import Any

from sanic import Blueprint, HTTPResponse, Request, Sanic

from chessstats import metrics
from chessstats.api.envelope import EnvelopeResponse, error_response
from chessstats.config import Config
from chessstats.ratelimit import RateLimiter, worker_column
from chessstats.ratelimit_redis import open_limiter

log = logging.getLogger(__name__)

bp = Blueprint("metrics")


@bp.route("/metrics", methods=["GET", "HEAD"])
async def metrics_route(request: Request) -> HTTPResponse:
    """Every worker's metrics in the Prometheus text format (``[metrics] token``: bearer token required)."""
    token = request.app.ctx.config.metrics.token
    if token:
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return error_response(request, 401, "a valid Authorization: Bearer <metrics token> is required",
                                  "unauthorized", {"WWW-Authenticate": "Bearer"})
    if not metrics.enabled():  # this worker could not reserve its files (full or read-only data dir)
        return error_response(request, 503, "metrics are unavailable in this worker: the data dir cannot be "
                              "written", "storage_unavailable", {"Retry-After": "30"})
    size = None
    db = getattr(request.app.ctx, "db", None)
    if request.app.ctx.metrics_db_path is None and db is not None:  # the store on PostgreSQL
        try:
            size = await db.size_bytes()
        except Exception as exc:  # the scrape still answers; /health says what is wrong
            log.warning("metrics: database size unavailable: %s", exc)
    body, content_type = metrics.render(request.app.ctx.metrics_db_path, size)
    return HTTPResponse(body, content_type=content_type, headers={"Cache-Control": "no-store"})


def install(app: Sanic, config: Config, paths: Any) -> None:
    """Register the rate-limit and metrics middleware, listeners and route on ``app`` (see the module).

    Args:
        app: the application.
        config: the validated configuration (``[ratelimit]``, ``[metrics]``).
        paths: the data dir's layout (:class:`chessstats.resources.DataDir`: ``ratelimit_table``,
            ``metrics_dir``, ``db_path``).
    """
    limits_on, metrics_on = config.ratelimit.enabled, config.metrics.enabled
    app.ctx.ratelimiter = None
    app.ctx.metrics_db_path = paths.db_path if config.store.engine == "sqlite" else None
    if metrics_on:
        app.blueprint(bp)

        @app.main_process_start
        async def _clean_metrics(app: Sanic) -> None:
            try:
                metrics.prepare_directory(paths.metrics_dir)
            except OSError as exc:
                log.warning("metrics: cannot prepare %s (%s)", paths.metrics_dir, exc.strerror or exc)

    if not (limits_on or metrics_on):
        return

    @app.before_server_start
    async def _open(app: Sanic) -> None:
        if limits_on:
            # on Redis when [cache] url names one (chessstats.ratelimit_redis)
            app.ctx.ratelimiter = open_limiter(config, paths.ratelimit_table, column=worker_column(),
                                               workers=config.server.workers)
        if metrics_on:
            try:
                if not os.environ.get("SANIC_WORKER_NAME"):  # one process (no main_process_start): empty it here
                    metrics.prepare_directory(paths.metrics_dir)
                metrics.setup(paths.metrics_dir)
            except OSError as exc:
                log.warning("metrics: cannot use %s (%s): /metrics shows nothing of this worker",
                            paths.metrics_dir, exc.strerror or exc)
                return
            res = getattr(app.ctx, "resources", None)
            if res is not None:
                metrics.watch_gates(getattr(getattr(res, name, None), "gate", None)
                                    for name in ("lichess", "chesscom", "fide"))
            app.ctx.metrics_task = asyncio.get_running_loop().create_task(_flush_loop())

    @app.after_server_stop
    async def _close(app: Sanic) -> None:
        task = getattr(app.ctx, "metrics_task", None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if metrics_on:
            metrics.mark_worker_gone()
        if app.ctx.ratelimiter is not None:
            app.ctx.ratelimiter.close()

    record_request = metrics.record_request
    perf_counter = time.perf_counter
    labels: dict[str, str] = {}
    api_routes: dict[str, bool] = {}

    def on_request(request: Request) -> HTTPResponse | None:
        ctx = request.ctx
        if metrics_on:
            ctx.t0 = perf_counter()
        limiter: RateLimiter | None = app.ctx.ratelimiter
        if limiter is None:
            return None
        route = request.route
        if route is not None:
            on_api = api_routes.get(route.path)
            if on_api is None:
                on_api = api_routes[route.path] = _on_api("/" + route.path.lstrip("/"))
        else:
            on_api = _on_api(request.path)
        if not on_api:
            return None
        allowed, ctx.ratelimit, client = limiter.admit(request.ip, request.headers.getall("x-forwarded-for", None),
                                                       route.path if route is not None else None)
        if allowed:
            return None
        metrics.record_refused()
        limit, reset = int(ctx.ratelimit[0][1]), int(ctx.ratelimit[2][1])
        window = limiter.expensive_window_s if limiter.is_expensive_header(ctx.ratelimit[0]) else limiter.window_s
        return error_response(request, 429, f"too many requests from {client[:40]}: at most {limit} per {window:g} s; "
                              f"try again in {reset} s", "rate_limited")

    def on_response(request: Request, response: HTTPResponse) -> None:
        ctx = request.ctx
        raw = getattr(ctx, "ratelimit", None)
        if raw is not None:
            if isinstance(response, EnvelopeResponse):
                response.raw_headers += raw
            else:
                headers = response.headers
                for name, value in raw:
                    headers[name.decode()] = value.decode()
        if metrics_on:
            t0 = getattr(ctx, "t0", None)
            route = request.route
            if route is None:
                label = metrics.UNMATCHED
            else:
                label = labels.get(route.path)
                if label is None:
                    label = labels[route.path] = route_label(route.path)
            x_cache = None
            if isinstance(response, EnvelopeResponse):
                for name, value in response.raw_headers:
                    if name == b"x-cache":
                        x_cache = value
                        break
            record_request(label, request.method, response.status, perf_counter() - t0 if t0 else 0.0, x_cache)

    app.register_middleware(on_request, "request")
    app.register_middleware(on_response, "response")


def _on_api(path: str) -> bool:
    return path == "/api" or path.startswith("/api/")


def route_label(path: str) -> str:
    """The metrics label of a Sanic route path: ``api/tournaments/<tid:str>`` → ``/api/tournaments/{tid}``."""
    parts = path.strip("/").split("/")
    return "/" + "/".join("{" + p[1:-1].split(":", 1)[0] + "}" if p.startswith("<") else p for p in parts)


async def _flush_loop() -> None:
    """Move this worker's tallies into the shared metric files every :data:`metrics.FLUSH_S` seconds."""
    while True:
        await asyncio.sleep(metrics.FLUSH_S)
        try:
            metrics.flush()
        except Exception:
            log.exception("metrics: flush failed")
