"""Success and error bodies, and the headers that go with them (the only place bodies are built).

Success: ``{"success": true, "data": …, [pagination|count …,] "cached", "source", "stale",
"fetchedAt"}`` with a strong ``ETag`` (from the bytes of the payload — data, pagination and
``fetchedAt`` — so a cache hit and the miss that filled it share one ETag; ``If-None-Match`` → 304),
``Cache-Control: public, max-age=<seconds of freshness left>``, ``X-Cache: HIT|MISS|STALE``, and
gzip above 1 KiB when the client accepts it (``gzip;q=0`` refuses it), and ``Vary: Origin``. A
cached payload's body, ETag and gzip body are computed once and kept with the payload, so a cache
hit encodes nothing.

Error: ``{"success": false, "error": "<message>", "code": "<machine code>"}``.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import time
from collections.abc import Iterable, Iterator

import msgspec
from sanic import HTTPResponse, Request
from sanic.compat import Header

from chessstats.payload import Payload, envelope_body, envelope_etag, iso_of

JSON = "application/json"
GZIP_MIN_BYTES = 1024
_encode = msgspec.json.encode


class EnvelopeResponse(HTTPResponse):
    """An ``HTTPResponse`` whose own headers arrive already encoded, and joined.

    Sanic sanitises every header value with ``str.translate`` and formats every header on its own
    on every response (``b"%b: %b\r\n" % pair``, one allocation each). The headers this module and
    the rate limiter generate (ETag, Cache-Control, X-Cache, Vary, Content-Encoding, RateLimit-*)
    are ASCII we built ourselves, with no CR or LF possible inside a value, so they are encoded
    once per cached payload as one block of header lines (``block``) and passed through as bytes.
    In the common case (a 200 whose only other headers are Sanic's ``content-length`` and
    ``connection``) :attr:`processed_headers` hands Sanic a single pair whose value carries every
    line, so Sanic formats one header instead of eight or ten. Anything else (CORS headers that
    echo the request's Origin, a 304, headers Sanic adds) takes the general path: ``raw_headers``
    pairs, then Sanic's own sanitised ones.

    The constructor sets ``HTTPResponse``'s attributes itself (Sanic's builds two header maps through
    three ``__init__`` calls).

    Attributes:
        raw_headers: this module's headers as ``(name, value)`` byte pairs.
        block: the same as ``name: value`` lines joined by CRLF (no trailing CRLF), or None.
        limits: the rate limiter's ``RateLimit-*`` header lines (:data:`chessstats.ratelimit.Verdict`),
            set by :func:`respond` from the request (:func:`limits_of`); None when the limiter is off.
        x_cache: the ``X-Cache`` value in lower case (``hit``, ``miss``, ``stale``), for the metrics.
    """

    __slots__ = ("raw_headers", "block", "limits", "x_cache")

    def __init__(self, body: bytes | None, raw_headers: tuple[tuple[bytes, bytes], ...], *,
                 status: int = 200, headers: dict[str, str] | None = None, x_cache: str | None = None,
                 block: bytes | None = None) -> None:
        self.asgi = False
        self.body = b"" if body is None else body
        self.content_type = JSON
        self.stream = None
        self.status = status
        self.headers = Header(headers) if headers else Header()
        self._cookies = None
        self.raw_headers = raw_headers
        self.block = block
        self.limits: bytes | None = None
        self.x_cache = x_cache

    @property
    def processed_headers(self):  # type: ignore[no-untyped-def]  # noqa: ANN201 - Sanic's own signature
        # The common case: a 200 sent in one piece (Sanic's HTTP/1.1 writer left no ``response_func``)
        # whose only other headers are the two that writer sets just before this: ``content-length``
        # (the body's length) and ``connection`` (from its ``keep_alive``), so both are known without
        # looking them up (a header lookup costs ~1,000 instructions).
        if self.block is not None and self.status == 200 and len(self.headers) == 2:
            stream = self.stream
            if getattr(stream, "response_func", True) is None:
                keep_alive = stream.keep_alive
                limits = self.limits
                if limits is None:
                    return ((b"content-type", _JOINED % (self.block, len(self.body),
                                                          b"keep-alive" if keep_alive else b"close")),)
                return ((b"content-type", _JOINED_LIMITS % (self.block, limits, len(self.body),
                                                             b"keep-alive" if keep_alive else b"close")),)
        return self._processed_headers()

    def _processed_headers(self):  # type: ignore[no-untyped-def]  # noqa: ANN202
        yield from self.raw_headers
        if self.limits is not None:
            yield from header_pairs(self.limits)
        yield from super().processed_headers


#: The value of the single ``content-type`` pair that carries every header line (see EnvelopeResponse).
_JOINED = JSON.encode() + b"\r\n%b\r\ncontent-length: %d\r\nconnection: %b"
_JOINED_LIMITS = JSON.encode() + b"\r\n%b\r\n%b\r\ncontent-length: %d\r\nconnection: %b"


def header_block(pairs: tuple[tuple[bytes, bytes], ...]) -> bytes:
    """``(name, value)`` byte pairs as header lines joined by CRLF (no trailing CRLF)."""
    return b"\r\n".join(name + b": " + value for name, value in pairs)


def header_pairs(block: bytes) -> tuple[tuple[bytes, bytes], ...]:
    """The ``(name, value)`` byte pairs of a :func:`header_block`."""
    return tuple((name, value) for name, _, value in (line.partition(b": ") for line in block.split(b"\r\n")))


def limits_of(request: Request) -> bytes | None:
    """The ``RateLimit-*`` (and, refused, ``Retry-After``) header lines the inbound rate limiter gave
    ``request`` (:data:`chessstats.ratelimit.Verdict`, put on the request by
    :mod:`chessstats.api.observe`); None when the limiter is off or did not see the request (outside
    ``/api``).

    Every ``/api`` answer carries them: :func:`respond` puts them on an envelope, and every other
    answer of the API is built by a function of this module (:func:`error_response`,
    :func:`data_response`, :func:`respond_text`, :func:`json_response`) that calls :func:`add_limits`.
    """
    try:
        return request.obs[2] if request.limited else None  # type: ignore[attr-defined,no-any-return]
    except AttributeError:  # a request class without them (the app of no configuration), or not seen
        return None


def add_limits(request: Request, headers: dict[str, str]) -> dict[str, str]:
    """``headers`` with the ``RateLimit-*`` lines of ``request`` (:func:`limits_of`) added; the same dict."""
    lines = limits_of(request)
    if lines is not None:
        for name, value in header_pairs(lines):
            headers[name.decode()] = value.decode()
    return headers


def gzip_etag(etag: str) -> str:
    """The ETag of a representation's gzip body: the same tag with ``-gzip`` (``"abc-gzip"``)."""
    return etag[:-1] + '-gzip"'


def etag_matches(if_none_match: str | None, *etags: str) -> bool:
    """Whether an ``If-None-Match`` header names one of ``etags`` (or is ``*``)."""
    if if_none_match is None:
        return False
    return if_none_match.strip() == "*" or any(tag in if_none_match for tag in etags)


_STALE = (b"cache-control", b"public, max-age=0")


class Rendered:
    """A payload's encoded response: body, ETag, pre-encoded headers and (lazily) its gzip body.

    :meth:`headers` gives the headers of the identity or gzip body, with or without the
    Cache-Control of a payload that never expires, as ``(raw pairs, block)`` (see
    :class:`EnvelopeResponse`); each variant is built on first use and kept (a cache hit reuses it,
    an uncached answer builds only the one it sends).
    """

    __slots__ = ("body", "etag", "gzipped", "x_cache", "result", "_headers")

    def __init__(self, body: bytes, etag: str, x_cache: str) -> None:
        self.body = body
        self.etag = etag
        self.gzipped: bytes | None = None
        self.x_cache = x_cache
        self.result = x_cache.lower()
        self._headers: list[tuple[Iterable[tuple[bytes, bytes]], bytes] | None] = [None, None, None, None]

    def headers(self, use_gzip: bool, permanent: bool) -> tuple[Iterable[tuple[bytes, bytes]], bytes]:
        """``(raw pairs, block)`` of ETag, X-Cache, Vary (and Content-Encoding with ``use_gzip``,
        Cache-Control for a year with ``permanent``)."""
        i = use_gzip + 2 * permanent
        built = self._headers[i]
        if built is None:
            built = self._headers[i] = _header_variant(self.body, self.etag, self.x_cache, use_gzip, permanent)
        return built

    def gzip_body(self) -> bytes:
        if self.gzipped is None:
            self.gzipped = gzip.compress(self.body, compresslevel=6, mtime=0)
        return self.gzipped


#: The header lines of an envelope by ``(gzip, permanent)``: filled with the ETag, X-Cache and Vary values.
_LINES = {
    (use_gzip, permanent): b"\r\n".join((
        *((b"cache-control: public, max-age=31536000",) if permanent else ()),
        b"etag: %b", b"x-cache: %b", *((b"content-encoding: gzip",) if use_gzip else ()), b"vary: %b",
    ))
    for use_gzip in (False, True) for permanent in (False, True)
}
# CORS headers are added when the request has an Origin: every envelope depends on it
_VARY_LARGE = b"Accept-Encoding, Origin"
_VARY_SMALL = b"Origin"


class _Pairs:
    """The ``(name, value)`` pairs of a header block, split on first use (:func:`header_pairs`): an
    answer sent through :class:`EnvelopeResponse`'s joined block never needs them."""

    __slots__ = ("block", "pairs")

    def __init__(self, block: bytes) -> None:
        self.block = block
        self.pairs: tuple[tuple[bytes, bytes], ...] | None = None

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        if self.pairs is None:
            self.pairs = header_pairs(self.block)
        return iter(self.pairs)


def _header_variant(body: bytes, etag: str, x_cache: str, use_gzip: bool, permanent: bool
                    ) -> tuple[Iterable[tuple[bytes, bytes]], bytes]:
    block = _LINES[use_gzip, permanent] % ((gzip_etag(etag) if use_gzip else etag).encode(), x_cache.encode(),
                                           _VARY_LARGE if len(body) > GZIP_MIN_BYTES else _VARY_SMALL)
    return _Pairs(block), block


def render(payload: Payload) -> Rendered:
    """Encode a payload's envelope (memoised on cached payloads); its ETag is
    :func:`~chessstats.payload.envelope_etag` (precomputed by a stored document's producer)."""
    if payload.rendered is not None:
        return payload.rendered  # type: ignore[no-any-return]
    fetched = iso_of(payload.fetched_at)
    body = payload.body or envelope_body(payload.fields, cached=payload.cached, source=payload.source,
                                         stale=payload.stale, fetched_iso=fetched)
    x_cache = "STALE" if payload.stale else ("HIT" if payload.cached else "MISS")
    rendered = Rendered(body, payload.etag or envelope_etag(payload.fields, fetched), x_cache)
    if payload.cached:
        payload.rendered = rendered
    return rendered


#: Response headers a cross-origin page may read.
EXPOSE_HEADERS = "ETag, X-Cache, Retry-After, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset"



def add_vary(headers: dict[str, str], name: str) -> None:
    """Add ``name`` to the ``Vary`` header of ``headers`` (once)."""
    current = headers.get("Vary")
    if current is None:
        headers["Vary"] = name
    elif name.lower() not in current.lower():
        headers["Vary"] = f"{current}, {name}"


def add_cors(request: Request, headers: dict[str, str], *, vary: bool = True) -> None:
    """Add CORS headers when the request has an ``Origin`` the configuration allows, and (``vary``)
    ``Vary: Origin``: the answer depends on the request's ``Origin`` (with or without one, allowed or
    not), so a shared cache must not hand one origin's answer to another.

    ``app.ctx.cors_origins`` is the configured list (``*`` allows any origin).
    """
    if vary:
        add_vary(headers, "Origin")
    origin = request.headers.get("origin")
    if origin is None:
        return
    origins = request.app.ctx.cors_origins
    if "*" in origins:
        headers["Access-Control-Allow-Origin"] = "*"
    elif origin in origins:
        headers["Access-Control-Allow-Origin"] = origin
    else:
        return
    headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS


@functools.lru_cache(maxsize=256)
def gzip_accepted(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` value accepts gzip: listed (or ``*``) with a ``q`` above 0
    (``gzip;q=0`` refuses it; an explicit ``gzip`` entry wins over ``*``). Memoised per header value."""
    star: bool | None = None
    for part in accept_encoding.lower().split(","):
        name, _, params = part.partition(";")
        name = name.strip()
        if name not in ("gzip", "x-gzip", "*"):
            continue
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
        if name == "*":
            star = q > 0
        else:
            return q > 0
    return bool(star)


def wants_gzip(accept_encoding: str) -> bool:
    """The hot path's gzip test: a plain substring check, parsed only when the header carries ``q=``."""
    if "gzip" not in accept_encoding:
        return False
    return "q=" not in accept_encoding or gzip_accepted(accept_encoding)


def respond(request: Request, payload: Payload) -> HTTPResponse:
    """The HTTP response for a payload: envelope, ETag/304, Cache-Control, X-Cache, gzip, CORS.

    This is the hot path of a cache hit: nothing is encoded, and only the headers the contract
    asks for are sent (``Vary`` only on bodies large enough to be compressed); for a permanent
    payload the whole header block is built once (:class:`Rendered`).
    """
    rendered = render(payload)
    request_headers = request.headers
    use_gzip = len(rendered.body) > GZIP_MIN_BYTES and wants_gzip(request_headers.get("accept-encoding", ""))
    if payload.expires_at is None and not payload.stale:
        raw, block = rendered.headers(use_gzip, True)
    else:
        if payload.stale:
            cache_control = _STALE
        else:
            cache_control = (b"cache-control", b"public, max-age=%d" % payload.max_age_s(time.time()))
        raw, block = rendered.headers(use_gzip, False)
        raw, block = (cache_control, *raw), b"%b: %b\r\n%b" % (*cache_control, block)
    headers: dict[str, str] | None = None
    if "origin" in request_headers:
        headers = {}
        add_cors(request, headers, vary=False)  # Vary: Origin is in the pre-encoded headers
    inm = request_headers.get("if-none-match")
    if inm is not None and etag_matches(inm, rendered.etag, gzip_etag(rendered.etag)):
        response = EnvelopeResponse(None, tuple(h for h in raw if h[0] != b"content-encoding"), status=304,
                                    headers=headers, x_cache=rendered.result)
    else:
        response = EnvelopeResponse(rendered.gzip_body() if use_gzip else rendered.body, raw, headers=headers,
                                    x_cache=rendered.result, block=block)
    if request.limited:  # type: ignore[attr-defined]  # the rate limiter's lines (see limits_of)
        response.limits = request.obs[2]  # type: ignore[attr-defined]
    return response


def respond_text(request: Request, body: bytes, content_type: str, fresh_s: int | None) -> HTTPResponse:
    """A non-JSON success (PGN) with the same caching headers as an envelope: a strong ETag
    from the body, ``If-None-Match`` → 304, ``Cache-Control`` (a year when ``fresh_s`` is None),
    gzip above 1 KiB when accepted, CORS."""
    etag = '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'
    use_gzip = len(body) > GZIP_MIN_BYTES and wants_gzip(request.headers.get("accept-encoding", ""))
    headers = {
        "ETag": gzip_etag(etag) if use_gzip else etag,
        "Cache-Control": "public, max-age=31536000" if fresh_s is None else f"public, max-age={fresh_s}",
    }
    if len(body) > GZIP_MIN_BYTES:
        headers["Vary"] = "Accept-Encoding"
    add_cors(request, headers)
    add_limits(request, headers)
    if etag_matches(request.headers.get("if-none-match"), etag, gzip_etag(etag)):
        return HTTPResponse(status=304, headers=headers)
    if use_gzip:
        headers["Content-Encoding"] = "gzip"
        body = gzip.compress(body, compresslevel=6, mtime=0)
    return HTTPResponse(body, headers=headers, content_type=content_type)


def error_body(message: str, code: str) -> bytes:
    """The canonical error envelope ``{"success": false, "error": message, "code": code}``."""
    return _encode({"success": False, "error": message, "code": code})


def error_response(
    request: Request, status: int, message: str, code: str, headers: dict[str, str] | None = None
) -> HTTPResponse:
    """An error response with the canonical envelope (and CORS headers, so a frontend can read it)."""
    headers = dict(headers or {})
    add_cors(request, headers)
    add_limits(request, headers)
    return HTTPResponse(error_body(message, code), status=status, headers=headers, content_type=JSON)


def data_response(request: Request, data: object, status: int = 200) -> HTTPResponse:
    """A plain ``{"success": true, "data": …}`` (admin actions: nothing cached, no upstream source)."""
    return json_response(request, {"success": True, "data": data}, status)


def json_response(request: Request, body: object, status: int = 200, headers: dict[str, str] | None = None
                  ) -> HTTPResponse:
    """``body`` encoded as JSON, with CORS and the rate limits (a ``409`` with details, say)."""
    headers = dict(headers or {})
    add_cors(request, headers)
    add_limits(request, headers)
    return HTTPResponse(_encode(body), status=status, headers=headers, content_type=JSON)
