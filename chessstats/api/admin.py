"""``/api/admin`` routes: bearer token compared in constant time; no token configured → always 401.

The token (and the declared body size) is checked by :func:`guard` before Sanic reads the request
body: an unauthenticated client cannot make the server buffer a body.
"""

from __future__ import annotations

import hmac

from sanic import Blueprint, HTTPResponse, Request

from chessstats.api.envelope import data_response
from chessstats.cache import TTLCache
from chessstats.errors import BadRequest, PayloadTooLarge, Unauthorized

bp = Blueprint("admin", url_prefix="/api/admin")


@bp.on_request
async def guard(request: Request) -> None:
    """Admin request middleware, run before the body is read: refuse a declared body over
    ``server.max_body_bytes`` (413), then check the token (401).

    Sanic reads a route's body *before* request middleware, unless the route streams: so every
    admin route that takes a body is declared ``stream=True`` and reads it with :func:`read_body`
    once this check has passed. (Public routes pay nothing for it.)

    Raises:
        PayloadTooLarge: ``Content-Length`` is over the limit.
        Unauthorized: no valid admin token.
    """
    length = request.headers.get("content-length", "").strip()
    limit = request.app.config.REQUEST_MAX_SIZE
    if length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"request body too large: {int(length)} bytes, at most {limit} are accepted")
    require_token(request)


async def read_body(request: Request) -> bytes:
    """Read the body of a streaming admin route, at most ``server.max_body_bytes`` (Sanic lifts the
    limit for streaming routes; it is put back here).

    Raises:
        sanic.exceptions.PayloadTooLarge: the body (e.g. chunked) grows over the limit (413).
    """
    if request.stream is not None:
        request.stream.request_max_size = request.app.config.REQUEST_MAX_SIZE
    await request.receive_body()
    return request.body


def require_token(request: Request) -> None:
    """Reject the request unless ``Authorization: Bearer <admin token>`` matches the configured token.

    Raises:
        Unauthorized: the header is missing or the token does not match (or none is configured), also
            when the header carries bytes that are not UTF-8.
    """
    if request.method == "OPTIONS":
        return
    token: str = request.app.ctx.config.admin.token
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    # Sanic decodes header bytes that are not UTF-8 as lone surrogates ("surrogateescape"): encode
    # them back the same way, so a token with such bytes is a mismatch (401), not an encoding error.
    if not token or scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode("utf-8", "surrogateescape"), token.encode("utf-8", "surrogateescape")):
        raise Unauthorized("a valid admin token is required: Authorization: Bearer <token>")


def _cache(request: Request) -> TTLCache:
    return request.app.ctx.cache  # type: ignore[no-any-return]


@bp.post("/cache/clear", stream=True)
async def cache_clear(request: Request) -> HTTPResponse:
    """Empty the cache (the database is untouched); answers ``{"cleared": n}``."""
    return data_response(request, {"cleared": _cache(request).clear()})


def _is_text(value: str) -> bool:
    """Whether ``value`` encodes to UTF-8 (JSON allows ``"\\ud800"``, a lone surrogate, which cannot)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@bp.post("/cache/invalidate", stream=True)
async def cache_invalidate(request: Request) -> HTTPResponse:
    """Body ``{"key": "..."}`` or ``{"pattern": "tournament:*"}``; answers ``{"invalidated": n}``."""
    await read_body(request)
    try:
        body = request.json
    except Exception as exc:  # sanic raises its BadRequest on malformed JSON
        raise BadRequest("body must be JSON: {\"key\": ...} or {\"pattern\": ...}") from exc
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object with \"key\" or \"pattern\"")
    key, pattern = body.get("key"), body.get("pattern")
    for name, value in (("key", key), ("pattern", pattern)):
        if isinstance(value, str) and not _is_text(value):
            raise BadRequest(f"\"{name}\" must be valid Unicode text (it has a lone surrogate such as \\ud800)")
    if isinstance(key, str) and key:
        return data_response(request, {"invalidated": int(_cache(request).delete(key))})
    if isinstance(pattern, str) and pattern:
        return data_response(request, {"invalidated": _cache(request).delete_pattern(pattern)})
    raise BadRequest("body must have a non-empty \"key\" or \"pattern\" string")


@bp.route("/cache/stats", methods=["GET", "HEAD"])
async def cache_stats(request: Request) -> HTTPResponse:
    """Entries, size on disk (bytes), hits, misses and hit rate (this process)."""
    return data_response(request, _cache(request).stats())
