"""Inbound rate limits and request metrics without Sanic middleware, and ``GET /metrics``.

:func:`install` is the only thing :mod:`chessstats.app` calls. According to the configuration it:

* wraps every route's handler (``before_server_start``, once the limiter is open) in a plain
  function that, on ``/api`` routes, counts the request against the client's windows
  (:mod:`chessstats.ratelimit`) and, past a limit, answers 429 ``rate_limited`` with
  ``Retry-After`` without running the route; it also stamps the start time (metrics);
* makes the app's request class :class:`ObservedRequest`, whose ``respond`` (the one place every
  answer passes: a route's, an error handler's, a 304, a 429) adds ``RateLimit-Limit``,
  ``RateLimit-Remaining`` and ``RateLimit-Reset`` to every ``/api`` answer (as pre-encoded bytes on an
  :class:`~chessstats.api.envelope.EnvelopeResponse`) and tallies the request for the metrics;
* gives :func:`on_error` to the app's error handler: a request that reached no route handler (no
  route matched, a CORS preflight, a body too large) is counted there, so a 404 on ``/api`` counts
  against the limit too and can be refused;
* registers the ``/metrics`` route (``[metrics] enabled``), behind ``Authorization: Bearer <[metrics]
  token>`` when a token is set;
* registers listeners: the main process empties ``<data dir>/metrics/`` before the workers start;
  each worker opens the shared rate-limit table and its metrics, and flushes its tallies every
  :data:`chessstats.metrics.FLUSH_S` seconds (a scrape lags a worker's requests by at most that).

Sanic runs no middleware at all on a request (none is registered): its middleware path (two
coroutines and four signal dispatches a request) cost more than the limiter and the metrics
themselves (``docs/bench.md``, 2026-11-30).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import keyword
import logging
import os
import time
from typing import Any

from sanic import Blueprint, HTTPResponse, Request, Sanic

from chessstats import metrics
from chessstats.api.envelope import EnvelopeResponse, error_response, header_pairs
from chessstats.config import Config
from chessstats.metrics import UNMATCHED, record_request
from chessstats.ratelimit import RateLimiter, Refusal, header_lines, worker_column
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


class ObservedRequest(Request):
    """Sanic's request with what :func:`install`'s route wrapper found out: ``obs`` is ``(start time
    (``time.time()``, epoch seconds), metrics route label, the ``RateLimit-*`` header lines or None)``,
    unset until a wrapper (or :func:`on_error`) ran. ``respond`` (which Sanic calls for every answer,
    a route's or the error handler's) adds the headers to the answer and tallies it, then returns
    Sanic's own ``respond`` coroutine for Sanic to await."""

    __slots__ = ("obs",)
    metrics_on = False

    def respond(self, response: Any = None, *, status: int = 200, headers: Any = None,  # type: ignore[override]
                content_type: str | None = None) -> Any:
        """Sanic's ``respond`` (a coroutine, returned for Sanic to await), after adding the
        ``RateLimit-*`` headers to ``response`` and tallying it for the metrics."""
        if response is None:
            return _sanic_respond(self, status=status, headers=headers, content_type=content_type)
        try:
            t0, label, raw = self.obs
        except AttributeError:  # neither a route wrapper nor on_error saw it
            t0, label, raw = _time(), UNMATCHED if self.route is None else route_label(self.route.path), None
        if type(response) is EnvelopeResponse:
            response.limits = raw
            if self.metrics_on:
                seconds = _time() - t0
                record_request(label, self.method, response.status, seconds if seconds > 0.0 else 0.0,
                               response.x_cache)
        else:
            if raw is not None:
                response_headers = response.headers
                for name, value in header_pairs(header_lines(raw)):
                    response_headers[name.decode()] = value.decode()
            if self.metrics_on:
                seconds = _time() - t0
                record_request(label, self.method, response.status, seconds if seconds > 0.0 else 0.0, None)
        return _sanic_respond(self, response)  # Sanic ignores status, headers and content type given a response


_sanic_respond = Request.respond
_time = time.time


def on_error(request: Request) -> HTTPResponse | None:
    """Called first by the app's error handler: count a request that reached no route handler (a
    routing error, a preflight, a body refused before the handler) against the limits on ``/api``.

    Returns:
        The 429 answer when that request is over a limit; otherwise None (the error is answered).
    """
    if not isinstance(request, ObservedRequest) or hasattr(request, "obs"):
        return None
    route = request.route
    label = UNMATCHED if route is None else route_label(route.path)
    limiter: RateLimiter | None = request.app.ctx.ratelimiter
    if limiter is None or not _on_api(request.path):
        request.obs = (_time(), label, None)
        return None
    forwarded = request.headers.getall("x-forwarded-for", None)
    now = _time()
    raw = limiter.admit(request.ip, forwarded, limiter.expensive(route.path if route is not None else None), now)
    request.obs = (now, label, raw)
    return _refusal(request, limiter, raw, forwarded) if type(raw) is Refusal else None


def _refusal(request: Request, limiter: RateLimiter, refusal: Refusal, forwarded: list[str] | None) -> HTTPResponse:
    """The 429 answer of a refused request (its headers are added by :class:`ObservedRequest`)."""
    metrics.record_refused()
    client = limiter.client_of(request.ip, forwarded)
    return error_response(request, 429, f"too many requests from {client[:40]}: at most {refusal.limit} per "
                          f"{refusal.window_s:g} s; try again in {refusal.reset_s} s", "rate_limited")


#: The route wrappers, written out per route with the route's own parameter names: Sanic passes a
#: route's parameters by keyword, and a ``(request, *args, **kwargs)`` wrapper cost a request ~2,400
#: instructions of packing and unpacking them (callgrind) against ~360 for an exact signature.
_LIMITED = """
def observed(request{params}):
    now = _time()
    forwarded = request.headers.getall("x-forwarded-for", None)
    raw = admit(request.conn_info.client_ip, forwarded, expensive, now)
    request.obs = (now, label, raw)
    if type(raw) is Refusal:
        return refuse(request, limiter, raw, forwarded)
    return handler(request{arguments})
"""
_TIMED = """
def observed(request{params}):
    request.obs = (_time(), label, None)
    return handler(request{arguments})
"""


#: Names the wrappers use: a route parameter of one of these names gets the generic signature.
_RESERVED = frozenset({"request", "now", "forwarded", "raw", "args", "kwargs", "_time", "label", "handler", "limiter",
                       "admit", "expensive", "Refusal", "refuse"})


def _wrap(handler: Any, path: str, names: list[str], limiter: RateLimiter | None, timed: bool) -> Any:
    """``handler`` behind the limiter (``/api`` routes) and the metrics' start time.

    A plain function (not a coroutine): it returns the handler's coroutine for Sanic to await, or
    the 429 answer, so a request pays one function call and no extra await.

    Args:
        handler: the route's handler, called ``handler(request, **parameters)`` by Sanic.
        path: the route's path (``api/tournaments/<tid:str>``).
        names: the route's parameter names (``["tid"]``).
        limiter: the rate limiter, None when off.
        timed: stamp the start time (metrics on).
    """
    on_api = limiter is not None and _on_api("/" + path.lstrip("/"))
    if not (on_api or timed):
        return handler
    if all(name.isidentifier() and not keyword.iskeyword(name) and name not in _RESERVED for name in names):
        params = "".join(f", {name}" for name in names)
        arguments = "".join(f", {name}={name}" for name in names)
    else:  # not expected from Sanic; stay correct
        params, arguments = ", *args, **kwargs", ", *args, **kwargs"
    scope = {"_time": _time, "label": route_label(path), "handler": handler, "limiter": limiter,
             "admit": limiter.admit if on_api else None, "expensive": on_api and limiter.expensive(path),
             "Refusal": Refusal, "refuse": _refusal}
    exec((_LIMITED if on_api else _TIMED).format(params=params, arguments=arguments), scope)  # noqa: S102
    observed = scope["observed"]
    functools.update_wrapper(observed, handler)
    observed.__observed__ = True
    return observed


def install(app: Sanic, config: Config, paths: Any) -> None:
    """Register the rate limits, the metrics and ``/metrics`` on ``app`` (see the module).

    Args:
        app: the application (its request class becomes a subclass of :class:`ObservedRequest`).
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
    # a class per app: the flag is read per request, and several apps may live in one process (tests)
    app.request_class = type("ObservedRequest", (ObservedRequest,), {"__slots__": (), "metrics_on": False})

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
            else:
                app.request_class.metrics_on = True
                res = getattr(app.ctx, "resources", None)
                if res is not None:
                    metrics.watch_gates(getattr(getattr(res, name, None), "gate", None)
                                        for name in ("lichess", "chesscom", "fide"))
                app.ctx.metrics_task = asyncio.get_running_loop().create_task(_flush_loop())
        timed = app.request_class.metrics_on
        for route in app.router.routes:
            if not getattr(route.handler, "__observed__", False):
                names = [param.name for param in route.params.values()]
                route.handler = _wrap(route.handler, route.path, names, app.ctx.ratelimiter, timed)

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
