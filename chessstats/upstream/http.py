"""Shared HTTP plumbing for upstream clients.

* :func:`build_client` makes the ``httpx.AsyncClient`` (identifying User-Agent, timeouts in seconds).
* :func:`map_upstream_errors` is the one boundary where transport errors, HTTP statuses and
  undecodable bodies become our error tree (:mod:`chessstats.errors`), keeping the cause.
* :func:`iter_ndjson` parses an NDJSON stream record by record, tolerant of records split across
  network chunks and of blank lines; a truncated last record is an error, never a short result.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import msgspec

from chessstats import __version__
from chessstats.errors import Gone, NotFound, UpstreamError, UpstreamRateLimited

log = logging.getLogger(__name__)

#: Pause after an upstream 429 that carries no Retry-After, in seconds (Lichess asks for a minute).
DEFAULT_429_PAUSE_S = 60


class TruncatedStream(ValueError):
    """Raised when a streamed body (NDJSON, PGN) ends in the middle of a record."""


def user_agent(contact: str) -> str:
    """The User-Agent sent upstream: the application, its version and the operator's contact."""
    ua = f"chessstats/{__version__} (self-hosted chess statistics backend"
    return ua + (f"; contact: {contact})" if contact else ")")


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
    )


def retry_after_s(response: httpx.Response, default: int = DEFAULT_429_PAUSE_S) -> int:
    """The ``Retry-After`` header in seconds (numeric form), or ``default``."""
    value = response.headers.get("retry-after", "").strip()
    if value.isdigit():
        return max(1, int(value))
    return default


def check_response(response: httpx.Response, upstream: str) -> None:
    """Raise the error that an upstream response's status means; return on 2xx.

    Raises:
        NotFound: 404 with a JSON body (the upstream says the entity does not exist).
        UpstreamError: 404 with an HTML body (the upstream blocked us, e.g. no User-Agent),
            any 5xx, or another unexpected status.
        Gone: 410.
        UpstreamRateLimited: 429, with the pause from ``Retry-After`` (default 60 s).
    """
    status = response.status_code
    if 200 <= status < 300:
        return
    ctype = response.headers.get("content-type", "")
    where = f"{upstream} {response.request.method} {response.request.url.path}"
    if status == 404:
        if "html" in ctype:
            raise UpstreamError(f"{where}: answered an HTML 404 page (request blocked?)", upstream)
        raise NotFound(f"{where}: not found")
    if status == 410:
        raise Gone(f"{where}: gone")
    if status == 429:
        raise UpstreamRateLimited(f"{where}: rate limited (429)", upstream, retry_after_s(response))
    raise UpstreamError(f"{where}: HTTP {status}", upstream)


@contextmanager
def map_upstream_errors(upstream: str) -> Iterator[None]:
    """Translate httpx and msgspec exceptions raised inside the block into :class:`UpstreamError`.

    Errors already in our tree pass through unchanged. The original exception is the cause.
    """
    try:
        yield
    except (NotFound, Gone, UpstreamError):
        raise
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
