"""The inbound rate limits with their counts in Redis (``[cache] url``): the same policy as
:class:`chessstats.ratelimit.RateLimiter` (fixed windows aligned on the epoch, a general and an
expensive window, the same headers), shared by every worker of every host using that Redis.

One request is one script call (one round trip): per window it ``INCR``\\ s
``<prefix>rl:<g|e>:<client>:<window index>`` and sets its expiry on the first count. The window
index comes from **Redis's clock** (``TIME`` inside the script), so hosts with skewed clocks still
count in the same window.

When Redis cannot be reached the limiter counts in this process's memory (the base class's private
table: limits then hold per worker) for :data:`RETRY_S` seconds, logs it once, and tries again: a
Redis fault never refuses or fails a request by itself.

:func:`chessstats.ratelimit.open_limiter` picks the limiter from the configuration
(``chessstats.api.observe`` calls it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from chessstats.ratelimit import Decision, RateLimiter, Refusal, Verdict
from chessstats.redisconn import RedisBackend, RedisError

log = logging.getLogger(__name__)

#: Seconds the limiter counts in memory after a Redis failure before it tries Redis again.
RETRY_S = 5.0

# KEYS: general key base, expensive key base; ARGV: general window ms, expensive window ms, expensive (1/0)
# returns {general count, ms left in its window, expensive count, ms left in its window}
_HIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function hit(base, w)
  local idx = math.floor(now / w)
  local key = base .. ':' .. idx
  local n = redis.call('INCR', key)
  if n == 1 then redis.call('PEXPIRE', key, w + 1000) end
  return n, (idx + 1) * w - now
end
local gn, gl = hit(KEYS[1], tonumber(ARGV[1]))
local en, el = 0, 0
if ARGV[3] == '1' then en, el = hit(KEYS[2], tonumber(ARGV[2])) end
return {gn, gl, en, el}
"""


class RedisRateLimiter(RateLimiter):
    """:class:`~chessstats.ratelimit.RateLimiter` counting in Redis (see the module docstring).

    **Parameters:**
    * **config** - the ``[ratelimit]`` table.
    * **backend** - a :class:`~chessstats.redisconn.RedisBackend` (closed by :meth:`close`).
    """

    def __init__(self, config: Any, backend: RedisBackend) -> None:
        super().__init__(config, None)  # its private table: the fallback while Redis fails
        self.backend = backend
        self._hit = backend.client.register_script(_HIT)
        self._g_base = backend.key("rl:g:")
        self._e_base = backend.key("rl:e:")
        self._g_ms = int(self.window_s * 1000)
        self._e_ms = int(self.expensive_window_s * 1000)
        self._down_until = 0.0
        self.redis_errors = 0

    def _count(self, client: str, expensive: bool) -> tuple[int, float, int, float] | None:
        """``(general count, seconds left, expensive count, seconds left)`` after counting one request
        in Redis; None while Redis fails (the caller counts locally)."""
        if self._down_until and time.monotonic() < self._down_until:
            return None
        try:
            g_n, g_ms, e_n, e_ms = self._hit(keys=[self._g_base + client, self._e_base + client],
                                             args=[self._g_ms, self._e_ms, 1 if expensive else 0])
        except RedisError as exc:
            self.redis_errors += 1
            self._down_until = time.monotonic() + RETRY_S
            log.warning("rate limits: redis failed (%s); counting in this process for %.0f s", exc, RETRY_S)
            return None
        self._down_until = 0.0
        return int(g_n), g_ms / 1000, int(e_n), e_ms / 1000

    def _request_path(self) -> Callable[..., Verdict]:
        """Build :meth:`admit` (the same arguments and :data:`~chessstats.ratelimit.Verdict` as
        :class:`~chessstats.ratelimit.RateLimiter`'s): one script call per request; while Redis fails,
        the base class's request path on this process's private table."""
        local = super()._request_path()

        def admit(peer: str, forwarded_for: list[str] | None, expensive: bool = False, now: float | None = None
                  ) -> Verdict:
            """Count one ``/api`` request from ``peer`` in Redis and decide on it (see the class)."""
            counts = self._count(self.client_of(peer, forwarded_for), expensive)
            if counts is None:
                return local(peer, forwarded_for, expensive, now)
            g_n, g_left_s, e_n, e_left_s = counts
            left, limit, left_s, window = self.max_requests - g_n, self.max_requests, g_left_s, self.window_s
            if expensive and self.expensive_max - e_n <= left:
                left, limit, left_s = self.expensive_max - e_n, self.expensive_max, e_left_s
                window = self.expensive_window_s
            reset = max(1, int(left_s + 0.999999))
            if left >= 0:
                return b"ratelimit-limit: %d\r\nratelimit-remaining: %d\r\nratelimit-reset: %d" % (limit, left, reset)
            self.refused += 1
            return Refusal.of(limit, window, reset)

        return admit

    def check(self, client: str, expensive: bool, now: float | None = None) -> Decision:
        """:meth:`RateLimiter.check` with the counts in Redis (``now`` is ignored: Redis's clock decides)."""
        counts = self._count(client, expensive)
        if counts is None:
            return super().check(client, expensive, now)
        g_n, g_left_s, e_n, e_left_s = counts
        limit, left, left_s, window = self.max_requests, self.max_requests - g_n, g_left_s, self.window_s
        if expensive and self.expensive_max - e_n <= left:
            limit, left, left_s = self.expensive_max, self.expensive_max - e_n, e_left_s
            window = self.expensive_window_s
        reset = max(1, int(left_s + 0.999999))
        if left >= 0:
            return Decision(True, limit, left, reset, window)
        self.refused += 1
        return Decision(False, limit, 0, reset, window, reset)

    def close(self) -> None:
        """Release the fallback table and the Redis connection."""
        super().close()
        self.backend.close()
