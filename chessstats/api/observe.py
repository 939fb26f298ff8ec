"""Inbound rate limits and request metrics without Sanic middleware, and ``GET /metrics``.

:func:`install` is the only thing :mod:`chessstats.app` calls. According to the configuration it:

* wraps every route's handler (``before_server_start``, once the limiter is open) in a plain
  function that, on ``/api`` routes, counts the request against the client's windows
  (:mod:`chessstats.ratelimit`; its common case, a client spending the allowance of this second that
  the limiter claimed for it, on a general route, is written into the wrapper itself:
  :meth:`~chessstats.ratelimit.RateLimiter.inline_source`) and, past a limit, answers 429
  ``rate_limited`` with ``Retry-After`` without running the route; it also stamps the start time (metrics);
* makes the app's request class :class:`ObservedRequest`, which carries the limiter's verdict (its
  ``RateLimit-Limit``, ``RateLimit-Remaining`` and ``RateLimit-Reset`` lines) to the functions of
  :mod:`chessstats.api.envelope` that build every ``/api`` answer (an envelope, an error, a 304, a 429:
  :func:`~chessstats.api.envelope.limits_of`), and, with the metrics on, whose ``respond`` (the one
  place every answer passes) tallies the request;
* gives :func:`on_error` to the app's error handler: a request that reached no route handler (no
  route matched, a body too large) is counted there, so a 404 on ``/api`` counts against the limit
  too and can be refused (a CORS preflight is neither counted nor refused);
* registers the ``/metrics`` route (``[metrics] enabled``), behind ``Authorization: Bearer <[metrics]
  token>`` when a token is set;
* registers listeners: the main process empties ``<data dir>/metrics/`` before the workers start;
  each worker opens the shared rate-limit table and its metrics, flushes its tallies every
  :data:`chessstats.metrics.FLUSH_S` seconds (a scrape lags a worker's requests by at most that) and
  gives back every second the rate-limit allowances it did not spend
  (:meth:`~chessstats.ratelimit.RateLimiter.release_claims`).

Sanic runs no middleware at all on a request (none is registered): its middleware path (two
coroutines and four signal dispatches a request) cost more than the limiter and the metrics
themselves (``docs/bench.md``, 2026-11-30).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import inspect
import keyword
import logging
import math
import os
import time
from typing import Any

from multidict import istr
from sanic import Blueprint, HTTPResponse, Request, Sanic

from chessstats import metrics
from chessstats.api.envelope import EnvelopeResponse, error_response
from chessstats.config import Config
from chessstats.metrics import UNMATCHED, record_request
from chessstats.ratelimit import RateLimiter, Refusal, open_limiter, worker_column

log = logging.getLogger(__name__)

bp = Blueprint("metrics")


@bp.route("/metrics", methods=["GET", "HEAD"])
async def metrics_route(request: Request) -> HTTPResponse:
    """Every worker's metrics in the Prometheus text format (``[metrics] token``: bearer token required)."""
    token = request.app.ctx.config.metrics.token
    if token:
        # Sanic decodes header bytes as UTF-8 with surrogateescape: encoding back the same way gives
        # the bytes sent (any bytes, e.g. not UTF-8 at all), compared with the token's UTF-8 bytes
        given = request.headers.get("authorization", "").encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, f"Bearer {token}".encode()):
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
    try:
        body, content_type = metrics.render(request.app.ctx.metrics_db_path, size)
    except OSError as exc:  # <data dir>/metrics/ deleted and not made again (logged by metrics)
        return error_response(request, 503, f"metrics are unavailable in this worker: {exc}", "storage_unavailable",
                              {"Retry-After": "30"})
    return HTTPResponse(body, content_type=content_type, headers={"Cache-Control": "no-store"})


class ObservedRequest(Request):
    """Sanic's request with what :func:`install`'s route wrapper found out: ``obs`` is ``(start time
    (``time.time()``, epoch seconds), metrics route label, the rate limiter's verdict or None)``,
    unset until a wrapper (or :func:`on_error`) ran. ``limited``: the limiter is on (the envelope
    module's functions then put the verdict's header lines on the answer:
    :func:`~chessstats.api.envelope.limits_of`). With the metrics on, :func:`install` replaces
    ``respond`` (which Sanic calls for every answer, a route's or the error handler's) by
    :func:`_respond_timed`, which tallies the answer and returns Sanic's own ``respond`` coroutine
    for Sanic to await; otherwise Sanic's ``respond`` runs alone."""

    __slots__ = ("obs",)
    metrics_on = False
    limited = False


def _obs(request: ObservedRequest) -> tuple[float, str, Any]:
    """``request.obs``, or what it is for a request that neither a wrapper nor :func:`on_error` saw."""
    try:
        return request.obs  # type: ignore[no-any-return]
    except AttributeError:
        return _time(), UNMATCHED if request.route is None else route_label(request.route.path), None


def _respond_timed(self: ObservedRequest, response: Any = None, status: int = 200, headers: Any = None,
                   content_type: str | None = None) -> Any:
    """``respond`` with the metrics on: the answer tallied (route label, method, status, seconds since
    the wrapper's start time, ``X-Cache``), then Sanic's own ``respond``."""
    if response is None:
        return _sanic_respond(self, status=status, headers=headers, content_type=content_type)
    t0, label, _ = _obs(self)
    seconds = _time() - t0
    record_request(label, self.method, response.status, seconds if seconds > 0.0 else 0.0,
                   response.x_cache if type(response) is EnvelopeResponse else None)
    return _sanic_respond(self, response)  # Sanic ignores status, headers and content type given a response


_sanic_respond = Request.respond
_time = time.time


def on_error(request: Request) -> HTTPResponse | None:
    """Called first by the app's error handler: count a request that reached no route handler (a
    routing error, a body refused before the handler) against the limits on ``/api``.

    A CORS preflight (``OPTIONS`` with ``Access-Control-Request-Method``) is neither counted nor
    refused: a browser reports a refused preflight as a CORS failure, and the frontend would never
    see the ``Retry-After`` of the request it precedes (which is counted, and refused when over).

    Returns:
        The 429 answer when that request is over a limit; otherwise None (the error is answered).
    """
    if not isinstance(request, ObservedRequest) or hasattr(request, "obs"):
        return None
    route = request.route
    label = UNMATCHED if route is None else route_label(route.path)
    limiter: RateLimiter | None = request.app.ctx.ratelimiter
    if limiter is None or not _on_api(request.path) or (
            request.method == "OPTIONS" and "access-control-request-method" in request.headers):
        request.obs = (_time(), label, None)
        return None
    forwarded = request.headers.getall("x-forwarded-for", None)
    now = _time()
    raw = limiter.admit(request.ip, forwarded, limiter.expensive(route.path if route is not None else None), now)
    request.obs = (now, label, raw)
    return _refusal(request, limiter, raw, forwarded) if type(raw) is Refusal else None


def _refusal(request: Request, limiter: RateLimiter, refusal: Refusal, forwarded: list[str] | None) -> HTTPResponse:
    """The 429 answer of a refused request (``request.obs`` holds the refusal: its header lines are
    added by :func:`~chessstats.api.envelope.error_response`)."""
    metrics.record_refused()
    client = limiter.client_of(request.ip, forwarded)
    return error_response(request, 429, f"too many requests from {client[:40]}: at most {refusal.limit} per "
                          f"{refusal.window_s:g} s; try again in {refusal.reset_s} s", "rate_limited")


#: The route wrappers, written out per route with the route's own parameter names: Sanic passes a
#: route's parameters by keyword, and a ``(request, *args, **kwargs)`` wrapper cost a request ~2,400
#: instructions of packing and unpacking them (callgrind) against ~360 for an exact signature. A
#: factory per route binds its handler and label (closure cells); the globals are the limiter's
#: :attr:`~chessstats.ratelimit.RateLimiter.fast` namespace (shared window state, table words, allowances).
#: ``{count}`` is the limiter's inlined fast path (:meth:`~chessstats.ratelimit.RateLimiter.inline_source`),
#: whose fallback is ``_SLOW``; a limiter that cannot be inlined (Redis) and the expensive routes
#: call ``admit`` (``_SLOW`` alone).
_LIMITED = """
def make(handler, label):
    def observed(request{params}):
        now = _time()
{count}    return observed
"""
_SLOW = """
forwarded = request.headers.getall(_rl_xff) if _rl_xff in request.headers else None
raw = _rl_admit(request.conn_info.client_ip, forwarded, {expensive}, now)
request.obs = (now, label, raw)
if type(raw) is _rl_Refusal:
    return _rl_refuse(request, _rl_limiter, raw, forwarded)
return handler(request{arguments})
"""
_TIMED = """
def make(handler, label):
    def observed(request{params}):
        request.obs = (_time(), label, None)
        return handler(request{arguments})
    return observed
"""
#: ``X-Forwarded-For`` as a multidict ``istr``: ``istr in headers`` costs ~220 instructions, a ``str``
#: key ~930 (its case folded on every lookup) and ``getall(str, None)`` of a missing header ~1,800.
_XFF = istr("x-forwarded-for")


#: Names the wrappers use: a route parameter of one of these names gets the generic signature.
_RESERVED = frozenset({"request", "now", "forwarded", "raw", "args", "kwargs", "label", "handler", "make", "e", "n",
                       "tag", "k", "it", *(f"{x}{c}" for x in "gn" for c in range(8))})


def _wrap(handler: Any, path: str, names: list[str], limiter: RateLimiter | None, timed: bool,
          scope: dict[str, Any]) -> Any:
    """``handler`` behind the limiter (``/api`` routes) and the metrics' start time.

    A plain function (not a coroutine): it returns the handler's coroutine for Sanic to await, or
    the 429 answer, so a request pays one function call and no extra await.

    Args:
        handler: the route's handler, called ``handler(request, **parameters)`` by Sanic.
        path: the route's path (``api/tournaments/<tid:str>``).
        names: the route's parameter names (``["tid"]``).
        limiter: the rate limiter, None when off.
        timed: stamp the start time (metrics on).
        scope: the wrappers' globals (:func:`_scope`).
    """
    on_api = limiter is not None and _on_api("/" + path.lstrip("/"))
    if not (on_api or timed):
        return handler
    positional = _takes_positionally(handler, names)
    if all(name.isidentifier() and not keyword.iskeyword(name) and name not in _RESERVED
           and not name.startswith("_") for name in names):
        params = "".join(f", {name}" for name in names)
        arguments = "".join(f", {name}" if positional else f", {name}={name}" for name in names)
    else:  # not expected from Sanic; stay correct
        params, arguments = ", *args, **kwargs", ", *args, **kwargs"
    if on_api:
        assert limiter is not None
        expensive = limiter.expensive(path)
        slow = _SLOW.format(expensive=expensive, arguments=arguments)
        peer = ("request.conn_info.client_ip if _rl_xff not in request.headers else "
                "(request.conn_info.client_ip, *request.headers.getall(_rl_xff))") if limiter.trusts_proxies \
            else "request.conn_info.client_ip"
        count = None if expensive else limiter.inline_source(
            peer, "now", f"request.obs = (now, label, raw)\nreturn handler(request{arguments})", slow)
        source = _LIMITED.format(params=params, count="".join(
            " " * 8 + line + "\n" for line in (count or slow).strip("\n").splitlines()))
    else:
        source = _TIMED.format(params=params, arguments=arguments)
    exec(source, scope)  # noqa: S102
    observed = scope.pop("make")(handler, route_label(path))
    functools.update_wrapper(observed, handler)
    observed.__observed__ = True
    return observed


def _takes_positionally(handler: Any, names: list[str]) -> bool:
    """Whether ``handler`` takes the route's parameters in this order after the request, by position
    (a positional call skips matching keyword names: ~100 instructions a request)."""
    try:
        params = list(inspect.signature(handler, follow_wrapped=False).parameters.values())
    except (TypeError, ValueError):
        return False
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return len(params) == len(names) + 1 and all(p.kind in kinds for p in params) and \
        [p.name for p in params[1:]] == names


def _scope(limiter: RateLimiter | None) -> dict[str, Any]:
    """The globals of the route wrappers: the limiter's fast-path state and what the wrappers call."""
    scope = limiter.fast if limiter is not None else {}
    scope.update({"_time": _time, "_rl_xff": _XFF, "_rl_Refusal": Refusal, "_rl_refuse": _refusal,
                  "_rl_limiter": limiter, "_rl_admit": limiter.admit if limiter is not None else None})
    return scope


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

    # a class per app: its flags are read per request, and several apps may live in one process (tests)
    app.request_class = type("ObservedRequest", (ObservedRequest,), {"__slots__": (), "metrics_on": False,
                                                                     "limited": False, "respond": _sanic_respond})
    if not (limits_on or metrics_on):
        return

    @app.before_server_start
    async def _open(app: Sanic) -> None:
        if limits_on:
            # on Redis when [cache] url names one (chessstats.ratelimit_redis)
            app.ctx.ratelimiter = open_limiter(config, paths.ratelimit_table, column=worker_column(),
                                               workers=config.server.workers)
            app.ctx.ratelimit_task = asyncio.get_running_loop().create_task(_release_loop(app.ctx.ratelimiter))
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
        app.request_class.limited = app.ctx.ratelimiter is not None
        if timed:
            app.request_class.respond = _respond_timed
        scope = _scope(app.ctx.ratelimiter)
        for route in app.router.routes:
            if not getattr(route.handler, "__observed__", False):
                names = [param.name for param in route.params.values()]
                route.handler = _wrap(route.handler, route.path, names, app.ctx.ratelimiter, timed, scope)

    @app.after_server_stop
    async def _close(app: Sanic) -> None:
        for name in ("metrics_task", "ratelimit_task"):
            task = getattr(app.ctx, name, None)
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if metrics_on:
            metrics.mark_worker_gone()
        if app.ctx.ratelimiter is not None:
            app.ctx.ratelimiter.release_claims(math.inf)  # a restart finds only the requests made
            app.ctx.ratelimiter.close()


def _on_api(path: str) -> bool:
    return path == "/api" or path.startswith("/api/")


def route_label(path: str) -> str:
    """The metrics label of a Sanic route path: ``api/tournaments/<tid:str>`` → ``/api/tournaments/{tid}``."""
    parts = path.strip("/").split("/")
    return "/" + "/".join("{" + p[1:-1].split(":", 1)[0] + "}" if p.startswith("<") else p for p in parts)


#: Seconds between two calls of the limiter's ``release_claims`` by :func:`_release_loop`.
RELEASE_S = 1.0


async def _release_loop(limiter: RateLimiter) -> None:
    """Give back the rate-limit allowances whose second has ended, every :data:`RELEASE_S` seconds
    (:meth:`~chessstats.ratelimit.RateLimiter.release_claims`); a failure is logged and the loop goes
    on (the allowances the failed call had not reached are given back by the next one)."""
    while True:
        await asyncio.sleep(RELEASE_S)
        try:
            limiter.release_claims()
        except Exception:
            log.exception("rate limits: releasing allowances failed")


async def _flush_loop() -> None:
    """Move this worker's tallies into the shared metric files every :data:`metrics.FLUSH_S` seconds."""
    while True:
        await asyncio.sleep(metrics.FLUSH_S)
        try:
            metrics.flush()
        except Exception:
            log.exception("metrics: flush failed")
