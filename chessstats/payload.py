"""A response payload as it travels from a service to the HTTP layer (and through the cache).

The JSON of the payload is encoded once, when it is produced, into ``fields``: the members of
the success envelope other than its metadata, e.g. ``"data":[…],"pagination":{…}``. The HTTP
layer wraps them with ``success``/``cached``/``source``/``stale``/``fetchedAt`` without
re-encoding the data.
"""

from __future__ import annotations

import functools
import hashlib
import time
from datetime import UTC, datetime
from typing import Any

import msgspec

_encoder = msgspec.json.Encoder()


@functools.lru_cache(maxsize=4096)
def iso_of(epoch: float) -> str:
    """An epoch time (seconds, UTC) as the envelope's ``fetchedAt`` text: ISO 8601 UTC to the second
    (``2026-11-30T05:33:20Z``). Memoised: a stored answer's ``fetchedAt`` repeats on every read."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@functools.lru_cache(maxsize=4096)
def epoch_of(iso: str) -> float:
    """An ISO 8601 time as stored in the database (``2026-11-30T05:33:20Z``, or with an offset) as
    epoch seconds (UTC). Memoised like :func:`iso_of`.

    Raises:
        ValueError: ``iso`` is not an ISO 8601 time.
    """
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


#: How every success envelope starts (its ``fields`` follow).
ENVELOPE_HEAD = b'{"success":true,'
#: What separates an envelope's ``fields`` from its metadata members.
_META = b',"cached":'


def envelope_body(fields: bytes, *, cached: bool, source: str, stale: bool, fetched_iso: str) -> bytes:
    """The success envelope's bytes: ``{"success":true,<fields>,"cached":…,"source":…,"stale":…,
    "fetchedAt":…}`` (the one definition: the HTTP layer wraps a payload with it, the store keeps
    database-served answers built by it)."""
    return b"".join((
        ENVELOPE_HEAD, fields,
        _META, b"true" if cached else b"false",
        b',"source":"', source.encode(),
        b'","stale":', b"true" if stale else b"false",
        b',"fetchedAt":"', fetched_iso.encode(), b'"}',
    ))


def envelope_fields(body: bytes) -> bytes:
    """The ``fields`` of an envelope built by :func:`envelope_body` (the inverse of it)."""
    return body[len(ENVELOPE_HEAD): body.rindex(_META)]


def envelope_etag(fields: bytes, fetched_iso: str) -> str:
    """The strong ``ETag`` of a success envelope (quoted): a 128-bit BLAKE2b of its ``fields`` and its
    ``fetchedAt`` (the envelope's ``cached``/``source``/``stale`` members are left out, so a cache hit
    and the miss that filled it share one tag). The one definition: the HTTP layer computes it for
    a payload that carries none, the store precomputes it for the answers it keeps encoded."""
    digest = hashlib.blake2b(fields, digest_size=16)
    digest.update(b':"' + fetched_iso.encode() + b'"}')  # the envelope's last bytes, as it always hashed them
    return '"' + digest.hexdigest() + '"'


def encode_fields(data: Any, **extra: Any) -> bytes:
    """Encode ``data`` and any extra members (``pagination=…``, ``count=…``) as envelope fields.

    Returns bytes such as ``b'"data":{…},"pagination":{…}'`` (keys in the order given).
    """
    parts = [b'"data":', _encoder.encode(data)]
    for key, value in extra.items():
        parts += [b',"', key.encode(), b'":', _encoder.encode(value)]
    return b"".join(parts)


class Payload:
    """One answer of a service.

    Attributes:
        fields: encoded envelope members (see :func:`encode_fields`); for a payload made from a whole
            envelope (``body``, with ``fields`` None) they are sliced out of it on first use (a
            database-served answer that is not cached never needs them).
        source: where the payload came from on this request: ``cache``, ``database`` or ``api``.
        cached: True when served from the TTL cache.
        stale: True when an expired entry is served (stale-while-revalidate / stale-if-error).
        fetched_at: when the payload was last fetched from its upstream (epoch seconds, UTC).
        expires_at: when the payload stops being fresh (epoch seconds), None for never.
        etag: its ``ETag`` when its producer knows it already (:func:`envelope_etag` of these
            ``fields`` and ``fetched_at``: a stored document's), else None (computed when rendered).
        body: its whole envelope when its producer has it already (:func:`envelope_body` of these
            fields and metadata: a database-served answer stored whole), else None.
        rendered: a slot where the HTTP layer memoises the encoded response of a cached payload.
    """

    __slots__ = ("_fields", "source", "cached", "stale", "fetched_at", "expires_at", "etag", "body", "rendered")

    def __init__(
        self,
        fields: bytes | None,
        *,
        source: str,
        fetched_at: float,
        expires_at: float | None = None,
        cached: bool = False,
        stale: bool = False,
        etag: str | None = None,
        body: bytes | None = None,
    ) -> None:
        if fields is None and body is None:
            raise ValueError("a payload needs its fields or its whole envelope")
        self._fields = fields
        self.source = source
        self.cached = cached
        self.stale = stale
        self.fetched_at = fetched_at
        self.expires_at = expires_at
        self.etag = etag
        self.body = body
        self.rendered: Any = None

    @property
    def fields(self) -> bytes:
        fields = self._fields
        if fields is None:
            fields = self._fields = envelope_fields(self.body)  # type: ignore[arg-type]
        return fields

    def max_age_s(self, now: float | None = None) -> int:
        """Seconds of freshness left (for ``Cache-Control: max-age``); a year when permanent."""
        if self.expires_at is None:
            return 31_536_000
        return max(0, int(self.expires_at - (time.time() if now is None else now)))
