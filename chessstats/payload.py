"""A response payload as it travels from a service to the HTTP layer (and through the cache).

The JSON of the payload is encoded once, when it is produced, into ``fields``: the members of
the success envelope other than its metadata, e.g. ``"data":[…],"pagination":{…}``. The HTTP
layer wraps them with ``success``/``cached``/``source``/``stale``/``fetchedAt`` without
re-encoding the data.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

_encoder = msgspec.json.Encoder()


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
        fields: encoded envelope members (see :func:`encode_fields`).
        source: where the payload came from on this request: ``cache``, ``database`` or ``api``.
        cached: True when served from the TTL cache.
        stale: True when an expired entry is served (stale-while-revalidate / stale-if-error).
        fetched_at: when the payload was last fetched from its upstream (epoch seconds, UTC).
        expires_at: when the payload stops being fresh (epoch seconds), None for never.
        rendered: a slot where the HTTP layer memoises the encoded response of a cached payload.
    """

    __slots__ = ("fields", "source", "cached", "stale", "fetched_at", "expires_at", "rendered")

    def __init__(
        self,
        fields: bytes,
        *,
        source: str,
        fetched_at: float,
        expires_at: float | None = None,
        cached: bool = False,
        stale: bool = False,
    ) -> None:
        self.fields = fields
        self.source = source
        self.cached = cached
        self.stale = stale
        self.fetched_at = fetched_at
        self.expires_at = expires_at
        self.rendered: Any = None

    def max_age_s(self, now: float | None = None) -> int:
        """Seconds of freshness left (for ``Cache-Control: max-age``); a year when permanent."""
        if self.expires_at is None:
            return 31_536_000
        return max(0, int(self.expires_at - (time.time() if now is None else now)))
