"""The error tree of chessstats.

Every error that can reach a client carries its HTTP status and a machine ``code``
(the table in ``docs/API.md``). Upstream failures are translated into this tree at one
boundary (:func:`chessstats.upstream.http.map_upstream_errors`), keeping the cause as
``__cause__``.

    ChessstatsError
    ├── BadRequest             400 bad_request
    ├── Unauthorized           401 unauthorized
    ├── NotFound               404 not_found
    ├── Gone                   410 gone
    ├── Conflict               409 conflict              (a player link contradicting another)
    ├── PayloadTooLarge        413 payload_too_large
    ├── RateLimited            429 rate_limited          (inbound limit)
    ├── StorageUnavailable     503 storage_unavailable   (disk full, read-only)
    ├── UpstreamError          502 upstream_error
    │   ├── UpstreamBlocked     502 upstream_blocked      (the upstream's edge refused us)
    │   ├── UpstreamRateLimited 503 upstream_rate_limited (carries retry_after_s)
    │   └── UpstreamBusy        503 upstream_busy         (queue bound or circuit open; carries retry_after_s)
    └── ConfigError            (start-up only, never sent to a client)
"""

from __future__ import annotations


class ChessstatsError(Exception):
    """Base class. ``status`` is the HTTP status, ``code`` the machine code of the error envelope."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ChessstatsError):
    """Raised when a request is malformed: bad id, bad query value, bad JSON body."""

    status = 400
    code = "bad_request"


class Unauthorized(ChessstatsError):
    """Raised when an admin route is called without a valid ``Authorization: Bearer`` token."""

    status = 401
    code = "unauthorized"


class NotFound(ChessstatsError):
    """Raised when the upstream says an entity does not exist, or a route is unknown.

    ``cached`` is True when the answer came from a negative cache entry, not from the upstream.
    """

    status = 404
    code = "not_found"

    def __init__(self, message: str, *, cached: bool = False) -> None:
        super().__init__(message)
        self.cached = cached


class Gone(ChessstatsError):
    """Raised when the upstream says an account is closed, disabled or banned."""

    status = 410
    code = "gone"


class Conflict(ChessstatsError):
    """Raised when a write conflicts with what is stored (a player link that contradicts another).

    ``details`` are extra members of the error envelope (e.g. ``existing`` and ``requested``).
    """

    status = 409
    code = "conflict"

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.details = details


class PayloadTooLarge(ChessstatsError):
    """Raised when a request body is over the limit (refused before it is read)."""

    status = 413
    code = "payload_too_large"


class StorageUnavailable(ChessstatsError):
    """Raised when the database or the cache cannot be written (disk full, read-only, gone).

    Nothing is half-written: the transaction that hit it was rolled back.
    """

    status = 503
    code = "storage_unavailable"

    def __init__(self, message: str = "storage is unavailable (disk full or read-only); try again later",
                 retry_after_s: int = 30) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RateLimited(ChessstatsError):
    """Raised when a client exceeds the inbound rate limit. ``retry_after_s`` is in seconds."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class UpstreamError(ChessstatsError):
    """Raised when an upstream fails (5xx, timeout, unparsable body, truncated stream).

    ``upstream`` names the upstream (``lichess``, ``chesscom``, ``fide``).
    """

    status = 502
    code = "upstream_error"

    def __init__(self, message: str, upstream: str = "") -> None:
        super().__init__(message)
        self.upstream = upstream


class UpstreamRateLimited(UpstreamError):
    """Raised when an upstream answers 429. ``retry_after_s`` is the pause (seconds) to respect."""

    status = 503
    code = "upstream_rate_limited"

    def __init__(self, message: str, upstream: str = "", retry_after_s: int = 60) -> None:
        super().__init__(message, upstream)
        self.retry_after_s = retry_after_s


class UpstreamBlocked(UpstreamError):
    """Raised when an upstream's edge refuses us (an HTML 403 page); the message says what to configure."""

    status = 502
    code = "upstream_blocked"


class UpstreamBusy(UpstreamError):
    """Raised when a request would wait longer than the bound for an upstream (its queue is full, or its
    circuit breaker is open after repeated failures). ``retry_after_s`` is in seconds."""

    status = 503
    code = "upstream_busy"

    def __init__(self, message: str, upstream: str = "", retry_after_s: int = 5) -> None:
        super().__init__(message, upstream)
        self.retry_after_s = retry_after_s


class ConfigError(ChessstatsError):
    """Raised at start-up when a configuration key is unknown or its value is bad."""

    status = 500
    code = "config_error"
