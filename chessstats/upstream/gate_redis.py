"""The upstream gate with its shared state in Redis (``[cache] url``): one gate per upstream for
every worker of every host using that Redis.

The rules are :class:`~chessstats.upstream.gate.UpstreamGate`'s (in flight, strict spacing, pause
after a 429 doubling when repeated, breaker, bounded wait, interactive calls before background
ones); only where the state lives changes:

* **In flight**: slot ``i`` is the leased lock ``<prefix>lock:gate:<name>:slot<i>``
  (:class:`~chessstats.redisconn.RedisLock`), extended while the request runs; a holder killed
  with ``kill -9`` frees its slot ``[cache] lock_lease_s`` seconds later.
* **Rate, 429 pause, breaker**: the gate's fixed-size record under ``<prefix>gate:<name>``, read,
  decided on and written back in one optimistic transaction (``WATCH`` / ``MULTI`` / ``EXEC``,
  retried when another process wrote in between), with **Redis's clock** (``TIME``) as "now": the
  hosts' clocks are never compared.
* When Redis cannot be reached, the gate decides with this process's in-memory copy (limiting this
  process only), logs it once, and tries Redis again after :data:`RETRY_S` seconds: the gate's own
  state never fails a call.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from redis.exceptions import WatchError

from chessstats.redisconn import LockUnavailable, RedisBackend, RedisError, RedisLock
from chessstats.upstream.gate import GateSettings, UpstreamGate, _State

T = TypeVar("T")

#: Seconds after a Redis failure before the gate tries Redis again.
RETRY_S = 5.0
#: Optimistic transaction attempts before the gate decides with its in-memory copy.
MAX_ATTEMPTS = 50


class RedisGate(UpstreamGate):
    """:class:`~chessstats.upstream.gate.UpstreamGate` sharing its slots and state through ``backend``.

    **Parameters:**
    * **name** - the upstream (``lichess``, ``chesscom``, ``fide``).
    * **settings** - :class:`~chessstats.upstream.gate.GateSettings` (seconds).
    * **backend** - the process's :class:`~chessstats.redisconn.RedisBackend`.
    """

    def __init__(self, name: str, settings: GateSettings | None, backend: RedisBackend) -> None:
        super().__init__(name, settings, None)
        self.backend = backend
        self.key = backend.key(f"gate:{name}")
        self._slot_locks: dict[int, RedisLock | None] = {}
        self._down_until = 0.0

    # --- Redis availability ------------------------------------------------------------------------

    def _usable(self) -> bool:
        return time.monotonic() >= self._down_until

    def _redis_failed(self, what: str, exc: BaseException) -> None:
        self._down_until = time.monotonic() + RETRY_S
        self._log_once("redis", "%s: %s in redis failed (%s): the gate goes on with an in-memory state (not "
                       "shared with other workers or hosts) and tries redis again every %.0f s", self.name, what,
                       exc, RETRY_S)

    def _clock(self) -> float:
        if self._usable():
            try:
                return self.backend.now()
            except RedisError as exc:
                self._redis_failed("reading the clock", exc)
        return time.time()

    # --- slots -------------------------------------------------------------------------------------

    def _try_slot(self, reserved: int = 0) -> int:
        """Take a free slot lock now, leaving the last ``reserved`` slots alone; -1 when none is free."""
        for i in range(self.settings.max_in_flight - reserved):
            if i in self._held:
                continue
            lock: RedisLock | None = None
            if self._usable():
                lock = self.backend.lock(f"gate:{self.name}:slot{i}")
                try:
                    if not lock.acquire():
                        continue
                except LockUnavailable as exc:
                    self._redis_failed("taking an in-flight slot", exc)
                    lock = None
            self._slot_locks[i] = lock
            self._held.add(i)
            return i
        return -1

    def _release(self, slot: int) -> None:
        if slot < 0 or slot not in self._held:
            return
        lock = self._slot_locks.pop(slot, None)
        if lock is not None:
            lock.release()
        self._held.discard(slot)

    def close(self) -> None:
        """Release the slots this gate holds (their leases would run out anyway)."""
        for slot in list(self._held):
            self._release(slot)
        self._held.clear()

    # --- shared state ------------------------------------------------------------------------------

    async def _transact(self, fn: Callable[[_State, float], T]) -> T:
        """Run ``fn(state, now)`` on the shared state in one optimistic Redis transaction, ``now``
        being Redis's clock; written back when changed. ``fn`` must not await."""
        if not self._usable():
            return fn(self._mem, time.time())
        client = self.backend.client
        try:
            with client.pipeline(transaction=True) as pipe:
                for _ in range(MAX_ATTEMPTS):
                    try:
                        pipe.watch(self.key)
                        raw = pipe.get(self.key)
                        sec, usec = pipe.time()
                        state = (_State.unpack(raw) or _State()) if raw else self._mem.copy()
                        before = state.pack()
                        result = fn(state, sec + usec / 1e6)
                        after = state.pack()
                        if after == before:
                            pipe.reset()  # nothing to write: no EXEC round trip
                        else:
                            pipe.multi()
                            pipe.set(self.key, after)
                            pipe.execute()
                    except WatchError:
                        continue
                    self._mem = state
                    return result
        except RedisError as exc:
            self._redis_failed("the gate state", exc)
            return fn(self._mem, time.time())
        self._log_once("contention", "%s: the gate state in redis changed under %d attempts in a row: deciding "
                       "in memory", self.name, MAX_ATTEMPTS)
        return fn(self._mem, time.time())

    def _peek(self) -> _State:
        if not self._usable():
            return self._mem
        try:
            raw = self.backend.client.get(self.key)
        except RedisError as exc:
            self._redis_failed("reading the gate state", exc)
            return self._mem
        return (_State.unpack(raw) if raw else None) or self._mem
