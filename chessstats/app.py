"""The Sanic application factory: routes, error envelope, CORS, and resources on ``app.ctx``.

:class:`~chessstats.resources.Resources` is opened in ``before_server_start`` (database with
migrations, cache, upstream clients, services, the import runner), then the scheduler; both are
closed in ``after_server_stop``, in reverse order. ``app.ctx.db``, ``cache``, ``lichess`` and
``tournaments`` are the resources' own, for the routes.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from sanic import HTTPResponse, Request, Sanic
from sanic.exceptions import PayloadTooLarge as SanicPayloadTooLarge
from sanic.exceptions import SanicException, ServiceUnavailable, URITooLong
from sanic.http import Http

from chessstats.api import admin, docs, imports_admin, jobs_admin, ops, players, status, tournaments
from chessstats.api.envelope import add_cors, error_response
from chessstats.api.observe import install as install_limits_and_metrics
from chessstats.api.observe import on_error as limits_on_error
from chessstats.config import Config
from chessstats.errors import ChessstatsError
from chessstats.log import setup_logging
from chessstats.resources import DataDir, Resources

log = logging.getLogger(__name__)

APP_NAME = "chessstats"
#: Seconds between the interpreter's forced GIL hand-overs in a worker (CPython's default is 0.005).
GIL_SWITCH_INTERVAL_S = 0.0005

#: Seconds a client is asked to wait (``Retry-After``) after a response timeout.
RESPONSE_TIMEOUT_RETRY_AFTER_S = 5

_SANIC_CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
                413: "payload_too_large", 408: "request_timeout", 414: "uri_too_long",
                431: "headers_too_large"}

#: Every path under this prefix needs the admin token, known route or not (401 before 404 or 405).
ADMIN_PREFIX = "/api/admin"

#: Sanic's message when the request head (request line and headers) is over its 8 KiB limit.
_HEAD_TOO_LARGE = "Request header exceeds the size limit"


def head_too_large(request: Request, exc: SanicException) -> SanicException:
    """The error for a request head over Sanic's size limit (8 KiB): 414 when the request line (the
    URL) alone takes more than half of it, else 431. Sanic reports both as a 413 ("Request header
    exceeds the size limit") before any request exists; the bytes received are still in the
    connection's buffer, where the request line is read. Any other error is returned as it is.
    """
    if not isinstance(exc, SanicPayloadTooLarge) or str(exc) != _HEAD_TOO_LARGE:
        return exc
    limit = Http.HEADER_MAX_SIZE or 8192
    buffer = getattr(request.transport.get_protocol(), "recv_buffer", b"") if request.transport else b""
    end = bytes(buffer[: limit + 2]).find(b"\r\n")
    if end == -1 or end > limit // 2:
        return URITooLong(f"the URL is too long: at most {limit // 2} bytes are accepted")
    return SanicException(f"the request headers are too large: at most {limit} bytes in all are accepted",
                          status_code=431)


def create_app(config: Config, *, name: str = APP_NAME, jobs: bool | None = None) -> Sanic:
    """Build the application for ``config``.

    Args:
        config: the validated configuration.
        name: the Sanic app name (unique per process).
        jobs: run the scheduler in this process; None means ``config.scheduler.enabled``.
    """
    app = Sanic(name, configure_logging=False)
    app.config.FALLBACK_ERROR_FORMAT = "json"
    app.config.GRACEFUL_SHUTDOWN_TIMEOUT = config.server.shutdown_timeout_s
    app.config.REQUEST_MAX_SIZE = config.server.max_body_bytes  # larger bodies: 413 before they are read
    app.config.RESPONSE_TIMEOUT = config.server.response_timeout_s
    app.ctx.config = config
    app.ctx.jobs_enabled = config.scheduler.enabled if jobs is None else jobs
    app.blueprint(tournaments.bp)
    app.blueprint(players.bp)
    app.blueprint(players.admin_bp)
    app.blueprint(admin.bp)
    app.blueprint(imports_admin.bp)
    app.blueprint(jobs_admin.bp)
    app.blueprint(ops.bp)
    app.blueprint(docs.bp)
    app.blueprint(status.bp)

    @app.before_server_start
    async def _open(app: Sanic) -> None:
        if not logging.getLogger().handlers:  # a spawned worker process: log like the main process
            setup_logging(config.log.level)
        # Imports parse PGN in a thread: with CPython's default 5 ms GIL switch interval the event
        # loop waits up to 5 ms each time it wants the GIL back, and cached GETs during an import
        # had a p99 of 91 ms (3.2 ms without an import). At 0.5 ms: 16 ms (scripts/bench, import row).
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        res = await Resources.open(config)
        app.ctx.resources = res
        app.ctx.db, app.ctx.cache, app.ctx.lichess, app.ctx.fide = res.db, res.cache, res.lichess, res.fide
        app.ctx.chesscom = res.chesscom
        app.ctx.tournaments, app.ctx.imports = res.tournaments, res.imports
        app.ctx.scheduler = None
        if app.ctx.jobs_enabled:
            from chessstats.scheduler import start_scheduler

            app.ctx.scheduler = await start_scheduler(app)

    install_limits_and_metrics(app, config, DataDir(config.data_dir))  # inbound rate limits, request metrics, /metrics

    @app.after_server_stop
    async def _close(app: Sanic) -> None:
        if getattr(app.ctx, "scheduler", None) is not None:
            await app.ctx.scheduler.stop()
        if getattr(app.ctx, "resources", None) is not None:
            await app.ctx.resources.aclose()

    app.ctx.cors_origins = tuple(config.server.cors_origins)

    def _preflight(request: Request) -> HTTPResponse:
        """Answer a CORS preflight (an OPTIONS request reaches no route, so it arrives here as a 405)."""
        any_origin = "*" in app.ctx.cors_origins  # open to any site: reads only, never admin actions
        headers = {
            "Access-Control-Allow-Methods": "GET, OPTIONS" if any_origin else "GET, POST, OPTIONS",
            "Access-Control-Allow-Headers": "Authorization, Content-Type, If-None-Match",
            "Access-Control-Max-Age": "86400",
        }
        add_cors(request, headers)
        return HTTPResponse(status=204, headers=headers)

    @app.exception(Exception, asyncio.CancelledError)
    async def _error(request: Request, exc: BaseException) -> HTTPResponse:
        """Every error as our envelope. A response timeout (Sanic cancels the handler), and a
        CancelledError from work shared with a request that timed out (e.g. one upstream call for
        many requests), are 503 ``upstream_busy`` with ``Retry-After`` and one log line. A request that
        reached no route handler (no route matched, a preflight) is counted by the inbound rate limit
        first, and may be answered 429 instead."""
        refused = limits_on_error(request)
        if refused is not None:
            return refused
        if isinstance(exc, ChessstatsError):
            headers = {}
            retry_after = getattr(exc, "retry_after_s", None)
            if retry_after is not None:
                headers["Retry-After"] = str(max(1, int(retry_after)))
            if exc.status >= 500:
                log.warning("%s %s -> %s: %s", request.method, request.path, exc.status, exc.message)
            return error_response(request, exc.status, exc.message, exc.code, headers)
        if isinstance(exc, ServiceUnavailable | asyncio.CancelledError):
            log.warning("%s %s -> 503: no answer within %s s (server.response_timeout_s)", request.method,
                        request.path, config.server.response_timeout_s)
            return error_response(request, 503, "the answer took too long; try again", "upstream_busy",
                                  {"Retry-After": str(RESPONSE_TIMEOUT_RETRY_AFTER_S)})
        if isinstance(exc, SanicException):
            exc = head_too_large(request, exc)
            status = exc.status_code
            if status in (404, 405) and (request.path == ADMIN_PREFIX or request.path.startswith(ADMIN_PREFIX + "/")):
                try:  # authenticate before routing: without the token, /api/admin/* does not say what exists
                    admin.require_token(request)
                except ChessstatsError as denied:
                    return error_response(request, denied.status, denied.message, denied.code)
            if status == 405 and request.method == "OPTIONS":
                return _preflight(request)
            code = _SANIC_CODES.get(status, "bad_request" if status < 500 else "internal_error")
            message = "no such route" if status == 404 else str(exc.message or exc)
            return error_response(request, status, message, code, dict(getattr(exc, "headers", None) or {}))
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(request, 500, "internal error", "internal_error")

    return app
