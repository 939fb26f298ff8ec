"""Shared HTTP plumbing for upstream clients.

* :func:`build_client` makes the ``httpx.AsyncClient`` (identifying User-Agent, timeouts in seconds).
* :func:`map_upstream_errors` is the one boundary where transport errors, HTTP statuses, deadlines
  and undecodable bodies become our error tree (:mod:`chessstats.errors`), keeping the cause. The
  upstream gate (:mod:`chessstats.upstream.gate`) applies it around every request.
* :func:`gated_stream` sends one request through an upstream's gate and checks its status.
* :func:`iter_ndjson` parses an NDJSON stream record by record, tolerant of records split across
  network chunks and of blank lines; a truncated last record is an error, never a short result.
"""

from __future__ import annotations

import email.utils
import functools
import logging
import math
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any

import httpx
import msgspec

from chessstats import __version__
from chessstats.errors import Gone, NotFound, UpstreamBlocked, UpstreamError, UpstreamRateLimited

if TYPE_CHECKING:
    from chessstats.upstream.gate import UpstreamGate

log = logging.getLogger(__name__)

#: Pause after an upstream 429 that carries no Retry-After, in seconds (Lichess asks for a minute).
DEFAULT_429_PAUSE_S = 60


class TruncatedStream(ValueError):
    """Raised when a streamed body (NDJSON, PGN) ends in the middle of a record."""


def user_agent(contact: str) -> str:
    """The User-Agent sent upstream: the application, its version and the operator's contact."""
    ua = f"chessstats/{__version__} (self-hosted chess statistics backend"
    return ua + (f"; contact: {contact})" if contact else ")")


@functools.cache
def ssl_context() -> ssl.SSLContext:
    """The TLS settings every upstream client shares: httpx's default (certifi's CA bundle, TLS 1.2+).

    Each ``httpx.AsyncClient`` built without one loads the whole CA bundle into its own context,
    about 0.8 MiB of RSS per client; the upstream clients of a process share this one.
    """
    return httpx.create_ssl_context()


def build_client(
    base_url: str, *, contact: str, timeout_s: float, headers: dict[str, str] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` for one upstream.

    Args:
        base_url: the upstream base including its path prefix (``https://lichess.org/api``).
        contact: put into the User-Agent (Chess.com and Lichess ask for one).
        timeout_s: connect/read/write/pool timeout, in seconds.
        headers: extra default headers (e.g. ``Authorization``).
        transport: an injected transport (tests); None for the network.
    """
    all_headers = {"User-Agent": user_agent(contact)}
    all_headers.update(headers or {})
    return httpx.AsyncClient(
        base_url=base_url.rstrip("/"),
        headers=all_headers,
        timeout=httpx.Timeout(timeout_s),
        transport=transport,
        follow_redirects=True,
        verify=ssl_context(),
    )


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta seconds (``"120"``) or an HTTP date
    (``"Wed, 21 Oct 2026 07:28:00 GMT"``, compared with ``now``, epoch seconds, default the clock).

    Returns None for a missing or unreadable value; a date in the past gives 0.
    """
    value = (value or "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)


def retry_after_s(response: httpx.Response, default: float = DEFAULT_429_PAUSE_S) -> int:
    """The pause a 429 asks for, in whole seconds (at least 1): ``Retry-After`` as seconds or as an
    HTTP date, or ``default`` when the header is missing or unreadable."""
    seconds = parse_retry_after(response.headers.get("retry-after"))
    if seconds is None:
        return max(1, math.ceil(default))
    return max(1, math.ceil(seconds))


#: The most characters of one path segment an error message echoes (docs/API.md: echoed values are cut to 40).
SHOWN_SEGMENT_CHARS = 40


def shown_path(path: str) -> str:
    """An upstream request path as an error message shows it: each segment (an id, a username) cut to
    :data:`SHOWN_SEGMENT_CHARS` characters, with ``…`` where it was cut."""
    return "/".join(part if len(part) <= SHOWN_SEGMENT_CHARS else part[:SHOWN_SEGMENT_CHARS] + "…"
                    for part in path.split("/"))


def check_response(response: httpx.Response, upstream: str, *, default_429_s: float = DEFAULT_429_PAUSE_S) -> None:
    """Raise the error that an upstream response's status means; return on 2xx.

    Args:
        response: the response (its body read when the status is not 2xx).
        upstream: the upstream's name, for messages.
        default_429_s: the pause (seconds) of a 429 without a readable ``Retry-After``.

    Raises:
        NotFound: 404 with a JSON body (the upstream says the entity does not exist).
        UpstreamBlocked: 403 with an HTML body (an edge such as Cloudflare refused us); the message
            says to set ``[upstream] contact`` / ``CHESSSTATS_CONTACT``.
        UpstreamError: 404 with an HTML body (the upstream blocked us, e.g. no User-Agent),
            any 5xx, or another unexpected status.
        Gone: 410.
        UpstreamRateLimited: 429, with the pause from ``Retry-After`` (seconds or HTTP date) or
            ``default_429_s``.
    """
    status = response.status_code
    if 200 <= status < 300:
        return
    ctype = response.headers.get("content-type", "")
    where = f"{upstream} {response.request.method} {shown_path(response.request.url.path)}"
    if status == 404:
        if "html" in ctype:
            raise UpstreamError(f"{where}: answered an HTML 404 page (request blocked?)", upstream)
        raise NotFound(f"{where}: not found")
    if status == 403 and "html" in ctype:
        raise UpstreamBlocked(
            f"{where}: the upstream's edge refused the request (an HTML 403 page). It blocks clients it cannot "
            "identify: set [upstream] contact (or CHESSSTATS_CONTACT) to your e-mail or URL so the User-Agent "
            "names you, and check that this host's address is not blocked", upstream)
    if status == 410:
        raise Gone(f"{where}: gone")
    if status == 429:
        raise UpstreamRateLimited(f"{where}: rate limited (429)", upstream, retry_after_s(response, default_429_s))
    raise UpstreamError(f"{where}: HTTP {status}", upstream)


@contextmanager
def map_upstream_errors(upstream: str, *, deadline_s: float | None = None) -> Iterator[None]:
    """Translate httpx and msgspec exceptions raised inside the block into :class:`UpstreamError`.

    Errors already in our tree pass through unchanged. The original exception is the cause. A
    ``TimeoutError`` (the gate's total deadline of ``deadline_s`` seconds) becomes "timed out".
    """
    try:
        yield
    except (NotFound, Gone, UpstreamError):
        raise
    except TimeoutError as exc:
        limit = f" after the {deadline_s:g} s deadline (connect, headers and whole body)" if deadline_s else ""
        raise UpstreamError(f"{upstream}: timed out{limit}", upstream) from exc
    except httpx.TimeoutException as exc:
        raise UpstreamError(f"{upstream}: timed out ({type(exc).__name__})", upstream) from exc
    except httpx.HTTPError as exc:
        raise UpstreamError(f"{upstream}: {type(exc).__name__}: {exc}", upstream) from exc
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise UpstreamError(f"{upstream}: unparsable body: {exc}", upstream) from exc
    except UnicodeDecodeError as exc:
        raise UpstreamError(f"{upstream}: body is not UTF-8", upstream) from exc
    except TruncatedStream as exc:
        raise UpstreamError(f"{upstream}: truncated body: {exc}", upstream) from exc


@asynccontextmanager
async def gated_stream(
    gate: UpstreamGate, client: httpx.AsyncClient, path: str, *, accept: str = "application/json",
    params: dict[str, str | int] | None = None, stream: bool = False, max_wait_s: float | None = None,
    method: str = "GET", content: bytes | None = None,
) -> AsyncIterator[httpx.Response]:
    """``GET path`` (or ``method`` with ``content`` as its body) through ``gate``: admitted (slot, rate,
    pause, breaker), under its total deadline,
    the status checked by :func:`check_response`; the block reads the body (errors it raises while
    doing so are mapped and counted too).

    Args:
        stream: a streamed export (the deadline is ``stream_timeout_s``, else ``timeout_s``).
        max_wait_s: longest wait for a turn, seconds; None for the gate's ``max_queue_wait_s``.

    Raises:
        the errors of :meth:`~chessstats.upstream.gate.UpstreamGate.request` and :func:`check_response`.
    """
    async with gate.request(stream=stream, max_wait_s=max_wait_s) as call:
        headers = {"Accept": accept}
        if content is not None:
            headers["Content-Type"] = "text/plain"
        async with client.stream(method, path, params=params, headers=headers, content=content) as resp:
            call.status = resp.status_code
            if not 200 <= resp.status_code < 300:
                await resp.aread()
            check_response(resp, gate.name, default_429_s=gate.settings.pause_after_429_s)
            yield resp


async def iter_ndjson(chunks: AsyncIterator[bytes], decoder: msgspec.json.Decoder[Any]) -> AsyncIterator[Any]:
    """Decode an NDJSON byte stream record by record.

    Records may be split across chunks; blank lines are skipped. A last line without its
    newline is accepted only when it decodes as a whole record.

    Raises:
        TruncatedStream: the last line has no newline and is not a whole record.
        msgspec.DecodeError / msgspec.ValidationError: a record is not valid JSON or not of the
            expected shape (both mapped to UpstreamError by :func:`map_upstream_errors`).
    """
    buffer = b""
    async for chunk in chunks:
        buffer += chunk
        if b"\n" not in chunk:
            continue
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.strip():
                yield decoder.decode(line)
    if buffer.strip():
        try:
            record = decoder.decode(buffer)
        except msgspec.DecodeError as exc:
            raise TruncatedStream(f"last record cut off after {len(buffer)} bytes") from exc
        yield record


class GatedClient:
    """Base of the upstream clients: an ``httpx.AsyncClient`` (``_client``) whose every request goes
    through ``gate`` (:class:`~chessstats.upstream.gate.UpstreamGate`); what they share for health."""

    _client: httpx.AsyncClient
    gate: Any

    @property
    def requests(self) -> int:
        """Requests this process sent to the upstream."""
        return int(self.gate.requests)

    @property
    def healthy(self) -> bool | None:
        """None before any answer; True after a success; False when failing, paused or backed off."""
        return self.gate.healthy  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        """Close the HTTP client and the gate's files."""
        await self._client.aclose()
        self.gate.close()
