"""Success and error bodies, and the headers that go with them (the only place bodies are built).

Success: ``{"success": true, "data": …, [pagination|count …,] "cached", "source", "stale",
"fetchedAt"}`` with a strong ``ETag`` (from the bytes of the payload — data, pagination and
``fetchedAt`` — so a cache hit and the miss that filled it share one ETag; ``If-None-Match`` → 304),
``Cache-Control: public, max-age=<seconds of freshness left>``, ``X-Cache: HIT|MISS|STALE``, and
gzip above 1 KiB when the client accepts it. A cached payload's body, ETag and gzip body are
computed once and kept with the payload, so a cache hit encodes nothing.

Error: ``{"success": false, "error": "<message>", "code": "<machine code>"}``.
"""

from __future__ import annotations

import gzip
import hashlib
import time
from datetime import UTC, datetime

import msgspec
from sanic import HTTPResponse, Request

from chessstats.payload import Payload

JSON = "application/json"
GZIP_MIN_BYTES = 1024
_encode = msgspec.json.encode


class Rendered:
    """A payload's encoded response: body, ETag and (lazily) its gzip body."""

    __slots__ = ("body", "etag", "gzipped", "x_cache")

    def __init__(self, body: bytes, etag: str, x_cache: str) -> None:
        self.body = body
        self.etag = etag
        self.gzipped: bytes | None = None
        self.x_cache = x_cache

    def gzip_body(self) -> bytes:
        if self.gzipped is None:
            self.gzipped = gzip.compress(self.body, compresslevel=6, mtime=0)
        return self.gzipped


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def render(payload: Payload) -> Rendered:
    """Encode a payload's envelope (memoised on cached payloads)."""
    if payload.rendered is not None:
        return payload.rendered  # type: ignore[no-any-return]
    body = b"".join((
        b'{"success":true,', payload.fields,
        b',"cached":', b"true" if payload.cached else b"false",
        b',"source":"', payload.source.encode(),
        b'","stale":', b"true" if payload.stale else b"false",
        b',"fetchedAt":"', _iso(payload.fetched_at).encode(), b'"}',
    ))
    x_cache = "STALE" if payload.stale else ("HIT" if payload.cached else "MISS")
    digest = hashlib.blake2b(payload.fields, digest_size=16)
    digest.update(body[-24:])  # fetchedAt
    rendered = Rendered(body, '"' + digest.hexdigest() + '"', x_cache)
    if payload.cached:
        payload.rendered = rendered
    return rendered


def _accepts_gzip(request: Request) -> bool:
    return "gzip" in request.headers.get("accept-encoding", "")


def respond(request: Request, payload: Payload) -> HTTPResponse:
    """The HTTP response for a payload: envelope, ETag/304, Cache-Control, X-Cache, gzip."""
    rendered = render(payload)
    max_age = payload.max_age_s(time.time()) if not payload.stale else 0
    use_gzip = len(rendered.body) > GZIP_MIN_BYTES and _accepts_gzip(request)
    etag = rendered.etag[:-1] + '-gzip"' if use_gzip else rendered.etag
    headers = {
        "ETag": etag,
        "Cache-Control": f"public, max-age={max_age}",
        "X-Cache": rendered.x_cache,
        "Vary": "Accept-Encoding",
    }
    inm = request.headers.get("if-none-match")
    if inm is not None and (inm.strip() == "*" or rendered.etag in inm or etag in inm):
        return HTTPResponse(status=304, headers=headers)
    if use_gzip:
        headers["Content-Encoding"] = "gzip"
        return HTTPResponse(rendered.gzip_body(), status=200, headers=headers, content_type=JSON)
    return HTTPResponse(rendered.body, status=200, headers=headers, content_type=JSON)


def error_body(message: str, code: str) -> bytes:
    """The canonical error envelope ``{"success": false, "error": message, "code": code}``."""
    return _encode({"success": False, "error": message, "code": code})


def error_response(status: int, message: str, code: str, headers: dict[str, str] | None = None) -> HTTPResponse:
    """An error response with the canonical envelope."""
    return HTTPResponse(error_body(message, code), status=status, headers=headers or {}, content_type=JSON)


def data_response(data: object, status: int = 200) -> HTTPResponse:
    """A plain ``{"success": true, "data": …}`` (admin actions: nothing cached, no upstream source)."""
    return HTTPResponse(_encode({"success": True, "data": data}), status=status, content_type=JSON)
