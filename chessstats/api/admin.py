"""``/api/admin`` routes: bearer token compared in constant time; no token configured → always 401."""

from __future__ import annotations

import hmac

from sanic import Blueprint, HTTPResponse, Request

from chessstats.api.envelope import data_response
from chessstats.cache import TTLCache
from chessstats.errors import BadRequest, Unauthorized

bp = Blueprint("admin", url_prefix="/api/admin")


@bp.on_request
async def require_token(request: Request) -> None:
    """Reject the request unless ``Authorization: Bearer <admin token>`` matches the configured token."""
    if request.method == "OPTIONS":
        return
    token: str = request.app.ctx.config.admin.token
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if not token or scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise Unauthorized("a valid admin token is required: Authorization: Bearer <token>")


def _cache(request: Request) -> TTLCache:
    return request.app.ctx.cache  # type: ignore[no-any-return]


@bp.post("/cache/clear")
async def cache_clear(request: Request) -> HTTPResponse:
    """Empty the cache (the database is untouched); answers ``{"cleared": n}``."""
    return data_response(request, {"cleared": _cache(request).clear()})


@bp.post("/cache/invalidate")
async def cache_invalidate(request: Request) -> HTTPResponse:
    """Body ``{"key": "..."}`` or ``{"pattern": "tournament:*"}``; answers ``{"invalidated": n}``."""
    try:
        body = request.json
    except Exception as exc:  # sanic raises its BadRequest on malformed JSON
        raise BadRequest("body must be JSON: {\"key\": ...} or {\"pattern\": ...}") from exc
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object with \"key\" or \"pattern\"")
    key, pattern = body.get("key"), body.get("pattern")
    if isinstance(key, str) and key:
        return data_response(request, {"invalidated": int(_cache(request).delete(key))})
    if isinstance(pattern, str) and pattern:
        return data_response(request, {"invalidated": _cache(request).delete_pattern(pattern)})
    raise BadRequest("body must have a non-empty \"key\" or \"pattern\" string")


@bp.get("/cache/stats")
async def cache_stats(request: Request) -> HTTPResponse:
    """Entries, size on disk (bytes), hits, misses and hit rate (this process)."""
    return data_response(request, _cache(request).stats())
