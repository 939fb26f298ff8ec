"""One gate per upstream, shared by every worker process of a host.

Every call to an upstream (Lichess, Chess.com, FIDE) goes through one :class:`UpstreamGate`, which
owns, for that upstream:

1. **In flight**: at most ``max_in_flight`` requests at once across every process using the same
   data dir: ``<data dir>/gate/<name>.slot<i>`` files taken with a non-blocking ``fcntl.flock``
   (the kernel releases them when a holder dies), polled with ``asyncio.sleep``.
2. **Rate**: ``count`` requests per ``window_s`` seconds with strict spacing (GCRA, "next allowed
   send time" = ``max(now, last) + window_s / count``): no burst, any rate (``10/60s`` included).
3. **Pause after a 429**: ``Retry-After`` (seconds or an HTTP date) or ``pause_after_429_s``; a
   repeated 429 (the next 429 after a pause ended without a success in between) doubles the pause
   up to ``max_pause_s``. While paused, calls raise :class:`~chessstats.errors.UpstreamRateLimited`
   at once without touching the network.
4. **A total deadline per call**: connect + headers + whole body (``timeout_s`` for JSON calls,
   ``stream_timeout_s`` for streamed exports); over it the call raises ``UpstreamError`` "timed out".
5. **A bounded queue**: a call that would wait longer than ``max_queue_wait_s`` (or the caller's
   ``max_wait_s``) for its turn raises :class:`~chessstats.errors.UpstreamBusy` without consuming a
   rate slot.
6. **A circuit breaker**: ``breaker_failures`` consecutive failures (anything but success, 404, 410
   and 429) open it for ``breaker_open_s`` (doubling on each re-open up to ``max_pause_s``); while
   open, calls raise ``UpstreamBusy`` at once; then one probe call (across processes) is let through.
7. **Counters** (in-process): :meth:`UpstreamGate.stats` and :meth:`UpstreamGate.health`.
8. **Interactive calls first**: a call made under :func:`background_calls` (the scheduler's jobs,
   background imports, stale-while-revalidate refreshes) is a *background* call. It waits up to
   ``background_max_wait_s`` (not the 2-s bound of a user's request) and it sends only when no
   interactive call of any process is waiting for its turn (each waiting interactive call keeps
   a short lease, ``fg_wait_until``, in the shared state); background calls together use at most
   ``background_share`` of the rate (their own spacing, ``bg_next_send``, on top of the common
   one), never the last in-flight slot when there is more than one, and never hold a slot while
   they wait. The total rate stays the configured one: every call, background or not, moves the
   common ``next_send``.

Rate, pause and breaker live in ``<data dir>/gate/<name>.state``: one fixed-size record rewritten
in place (``pwrite`` at offset 0, never truncated) under an ``flock``, times as wall-clock epoch
seconds, so they hold across workers and across a restart. When that file cannot be used (full
disk, read-only dir) the gate carries on with an in-memory copy and logs it once: the gate's own
state never fails a call.
"""

from __future__ import annotations

import asyncio
import contextvars
import errno
import fcntl
import logging
import math
import os
import struct
import time
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from chessstats.config import Rate, parse_rate
from chessstats.errors import Gone, NotFound, UpstreamBusy, UpstreamError, UpstreamRateLimited

if TYPE_CHECKING:
    from chessstats.redisconn import RedisBackend

__all__ = ["GateCall", "GateSettings", "Rate", "UpstreamGate", "background_calls", "in_background", "open_gate",
           "parse_rate"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds between two tries to take a slot (or the state lock) while waiting.
POLL_S = 0.01
#: Seconds a process waits for the state lock before it decides with its in-memory copy.
STATE_LOCK_WAIT_S = 1.0
#: Seconds after a failed state write before the file is tried again.
DISK_RETRY_S = 30.0
#: Seconds an interactive call's "I am waiting for my turn" lease lasts in the shared state; it is
#: renewed every :data:`WAITING_RENEW_S` seconds while the call waits.
WAITING_LEASE_S = 0.3
WAITING_RENEW_S = 0.1
#: Longest sleep, in seconds, of a background call between two looks at the shared state.
BACKGROUND_POLL_S = 0.05

_BACKGROUND: contextvars.ContextVar[bool] = contextvars.ContextVar("chessstats_gate_background", default=False)


@contextmanager
def background_calls() -> Iterator[None]:
    """Make the upstream calls of the block, and of every task it creates, background calls of
    every gate (see the module docstring, point 8): they give way to interactive calls."""
    token = _BACKGROUND.set(True)
    try:
        yield
    finally:
        _BACKGROUND.reset(token)


def in_background() -> bool:
    """True inside :func:`background_calls` (in the block or a task created there)."""
    return _BACKGROUND.get()


@dataclass(frozen=True, slots=True)
class GateSettings:
    """The limits of one upstream (all durations in seconds).

    ``timeout_s``: total deadline of a JSON call; ``stream_timeout_s``: of a streamed export;
    ``max_in_flight``: requests at once across processes; ``rate``: see :class:`Rate`;
    ``pause_after_429_s``: pause after a 429 without ``Retry-After``; ``max_pause_s``: ceiling of a
    doubled pause or breaker interval; ``max_queue_wait_s``: longest wait for a turn;
    ``breaker_failures``: consecutive failures that open the breaker; ``breaker_open_s``: first
    open interval; ``background_share``: the largest part (0 < share <= 1) of ``rate`` that
    background calls take together; ``background_max_wait_s``: a background call's wait bound when
    its caller gives none.
    """

    timeout_s: float = 20.0
    stream_timeout_s: float = 600.0
    max_in_flight: int = 1
    rate: Rate = Rate(2, 1.0)
    pause_after_429_s: float = 60.0
    max_pause_s: float = 900.0
    max_queue_wait_s: float = 2.0
    breaker_failures: int = 5
    breaker_open_s: float = 10.0
    background_share: float = 0.5
    background_max_wait_s: float = 60.0

    def __post_init__(self) -> None:
        if not 0 < self.background_share <= 1:
            raise ValueError(f"background_share must be in (0, 1], got {self.background_share}")

    @classmethod
    def from_config(cls, table: Any) -> GateSettings:
        """Settings from a config table with the shared upstream shape (``[lichess]``, ``[chesscom]``, ``[fide]``).

        Raises:
            ValueError: its ``rate`` does not parse.
        """
        return cls(
            timeout_s=float(table.timeout_s), stream_timeout_s=float(table.stream_timeout_s),
            max_in_flight=int(table.max_in_flight), rate=parse_rate(table.rate),
            pause_after_429_s=float(table.pause_after_429_s), max_pause_s=float(table.max_pause_s),
            max_queue_wait_s=float(table.max_queue_wait_s), breaker_failures=int(table.breaker_failures),
            breaker_open_s=float(table.breaker_open_s),
        )


# --- the shared state record -------------------------------------------------------------------

_MAGIC = b"CSG2"
# magic, next_send, paused_until, last_pause_s, strike, failures, open_until, open_s, probe_until,
# last_ok_at, last_fail_at, fg_wait_until, bg_next_send; then a CRC-32 of everything before it
_BODY = struct.Struct("<4sdddIIddddddd")
_RECORD_SIZE = _BODY.size + 4


@dataclass(slots=True)
class _State:
    """The shared state (epoch seconds). ``strike``: a 429 came since the last success;
    ``fg_wait_until``: an interactive call waits for its turn until then (a lease, renewed while it
    waits); ``bg_next_send``: the earliest send time of the next background call."""

    next_send: float = 0.0
    paused_until: float = 0.0
    last_pause_s: float = 0.0
    strike: int = 0
    failures: int = 0
    open_until: float = 0.0  # 0: breaker closed; else open until then, half-open after
    open_s: float = 0.0
    probe_until: float = 0.0  # a probe is out until then (its lease)
    last_ok_at: float = 0.0
    last_fail_at: float = 0.0
    fg_wait_until: float = 0.0
    bg_next_send: float = 0.0

    def pack(self) -> bytes:
        body = _BODY.pack(_MAGIC, self.next_send, self.paused_until, self.last_pause_s, self.strike, self.failures,
                          self.open_until, self.open_s, self.probe_until, self.last_ok_at, self.last_fail_at,
                          self.fg_wait_until, self.bg_next_send)
        return body + struct.pack("<I", zlib.crc32(body))

    @classmethod
    def unpack(cls, data: bytes) -> _State | None:
        if len(data) != _RECORD_SIZE or data[:4] != _MAGIC:
            return None
        body = data[: _BODY.size]
        if struct.unpack("<I", data[_BODY.size:])[0] != zlib.crc32(body):
            return None
        return cls(*_BODY.unpack(body)[1:])

    def copy(self) -> _State:
        return _State(self.next_send, self.paused_until, self.last_pause_s, self.strike, self.failures,
                      self.open_until, self.open_s, self.probe_until, self.last_ok_at, self.last_fail_at,
                      self.fg_wait_until, self.bg_next_send)


@dataclass(slots=True)
class GateCall:
    """One admitted call: set ``status`` to the upstream's HTTP status once known (for the counters).

    ``deadline_s`` is the call's total deadline in seconds; ``waited_s`` how long it waited for its
    turn; ``probe`` whether it is the breaker's probe; ``background`` whether it is a background call.
    """

    deadline_s: float
    waited_s: float = 0.0
    probe: bool = False
    background: bool = False
    status: int | None = None
    slot: int = -1


def _ceil_s(seconds: float) -> int:
    return max(1, math.ceil(seconds - 1e-6))


class UpstreamGate:
    """The gate of one upstream; see the module docstring for what it enforces.

    **Parameters:**
    * **name** - the upstream (``lichess``, ``chesscom``, ``fide``): names the files and the errors.
    * **settings** - :class:`GateSettings` (seconds).
    * **state_dir** - *(optional)* the directory of the shared files, normally ``<data dir>/gate``;
      None keeps everything in this process (one gate object = one "host").

    Use :meth:`request` (an async context manager around one upstream request, body included) or
    :meth:`call` (awaits a coroutine function inside :meth:`request`).
    """

    def __init__(self, name: str, settings: GateSettings | None = None, state_dir: str | Path | None = None) -> None:
        self.name = name
        self.settings = settings or GateSettings()
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self._held: set[int] = set()
        self._slot_fds: dict[int, int | None] = {}
        self._state_fd: int | None = None
        self._disk_ok = self.state_dir is not None
        self._disk_retry_at = 0.0
        self._mem = _State()
        self._logged: set[str] = set()
        self._counters: Counter[str] = Counter()
        self._by_status: Counter[str] = Counter()

    # --- public API ------------------------------------------------------------------------------

    @asynccontextmanager
    async def request(self, *, stream: bool = False, max_wait_s: float | None = None,
                      background: bool | None = None) -> AsyncIterator[GateCall]:
        """Admit one upstream request and run the block (send, headers, whole body) under its deadline.

        Args:
            stream: a streamed export: the deadline is ``stream_timeout_s`` instead of ``timeout_s``.
            max_wait_s: longest wait in seconds for a turn (slot and rate); None for ``max_queue_wait_s``
                (``background_max_wait_s`` for a background call).
            background: a background call (gives way to interactive calls, see the module docstring);
                None: whether the caller runs inside :func:`background_calls`.

        Raises:
            UpstreamRateLimited: paused after a 429 (``retry_after_s``: seconds left), raised before any
                network use; or the block's own 429.
            UpstreamBusy: the breaker is open, or the turn would come later than the wait bound.
            UpstreamError: the deadline passed ("timed out"), or what the block raised, mapped by
                :func:`chessstats.upstream.http.map_upstream_errors` (the cause kept).
            NotFound / Gone: what the block raised (404 / 410: not failures).
        """
        from chessstats.upstream.http import map_upstream_errors  # http imports nothing of the gate

        if background is None:
            background = _BACKGROUND.get()
        if max_wait_s is None:
            max_wait_s = self.settings.background_max_wait_s if background else self.settings.max_queue_wait_s
        call = await (self._admit_background(stream, max_wait_s) if background else self._admit(stream, max_wait_s))
        outcome, settled = "neutral", False
        try:
            with map_upstream_errors(self.name, deadline_s=call.deadline_s):
                async with asyncio.timeout(call.deadline_s):
                    yield call
            outcome = "ok"
        except (NotFound, Gone):
            outcome = "ok"
            raise
        except UpstreamRateLimited as exc:
            settled = True
            paused_for = await self._settle(call, "429", float(exc.retry_after_s))
            if paused_for > 0:  # the pause every worker keeps now (doubled when repeated)
                exc.retry_after_s = _ceil_s(paused_for)
            raise
        except UpstreamBusy:
            raise
        except UpstreamError as exc:
            outcome = "fail"
            if isinstance(exc.__cause__, TimeoutError) or "timed out" in exc.message:
                self._counters["timeouts"] += 1
            raise
        finally:
            try:
                if not settled:
                    await self._settle(call, outcome, 0.0)
            finally:  # settled before the slot is free: the next holder sees a 429's pause
                self._release(call.slot)

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any, stream: bool = False,
                   max_wait_s: float | None = None, background: bool | None = None, **kwargs: Any) -> T:
        """Await ``fn(*args, **kwargs)`` inside :meth:`request` (same arguments and errors)."""
        async with self.request(stream=stream, max_wait_s=max_wait_s, background=background):
            return await fn(*args, **kwargs)

    def stats(self) -> dict[str, Any]:
        """In-process counters (for Prometheus): ``calls`` sent, ``callsByStatus`` (``2xx``, ``4xx``,
        ``5xx``, ``none``), ``responses429``, ``pauseSeconds`` (sum of pauses set here),
        ``refusedPaused``, ``refusedBusy``, ``refusedOpen``, ``breakerOpens``, ``timeouts``,
        ``backgroundCalls`` (of ``calls``), ``backgroundYields`` (looks at which a background call gave
        way to a waiting interactive call), plus the
        current shared state (``pausedForS``, ``breaker``, ``failures``, ``inFlightHere``)."""
        c = self._counters
        return {
            "upstream": self.name,
            "calls": c["calls"],
            "callsByStatus": dict(self._by_status),
            "responses429": c["responses_429"],
            "pauseSeconds": c["pause_s"],
            "refusedPaused": c["refused_paused"],
            "refusedBusy": c["refused_busy"],
            "refusedOpen": c["refused_open"],
            "breakerOpens": c["breaker_opens"],
            "timeouts": c["timeouts"],
            "backgroundCalls": c["background_calls"],
            "backgroundYields": c["background_yields"],
            "inFlightHere": len(self._held),
            "rate": str(self.settings.rate),
            "maxInFlight": self.settings.max_in_flight,
            **{k: v for k, v in self.health().items() if k != "status"},
        }

    def health(self) -> dict[str, Any]:
        """``{"status", "pausedForS", "breaker", "failures", "openForS", "lastOutcomeAgoS"}`` from the
        shared state (``lastOutcomeAgoS``: seconds since the last success or failure in any process,
        None before the first).

        ``status``: ``paused`` (after a 429), ``open`` (breaker open or probing), ``degraded`` (the
        last outcome, in any process, was a failure), ``ok`` (a success), ``unknown`` (no call yet).
        """
        state, now = self._peek(), self._clock()
        paused_for = max(0.0, state.paused_until - now)
        if state.open_until == 0:
            breaker = "closed"
        elif now < state.open_until:
            breaker = "open"
        else:
            breaker = "half-open"
        if paused_for > 0:
            status = "paused"
        elif breaker != "closed":
            status = "open"
        elif state.last_fail_at > state.last_ok_at:
            status = "degraded"
        elif state.last_ok_at > 0:
            status = "ok"
        else:
            status = "unknown"
        last = max(state.last_ok_at, state.last_fail_at)
        return {"status": status, "pausedForS": round(paused_for, 1), "breaker": breaker,
                "failures": state.failures, "openForS": round(max(0.0, state.open_until - now), 1),
                "lastOutcomeAgoS": round(max(0.0, now - last), 1) if last > 0 else None}

    def _clock(self) -> float:
        """The clock the shared state's times are in (epoch seconds): this host's; Redis's for
        :class:`~chessstats.upstream.gate_redis.RedisGate`."""
        return time.time()

    @property
    def requests(self) -> int:
        """Requests this process sent through the gate."""
        return self._counters["calls"]

    @property
    def healthy(self) -> bool | None:
        """None before any outcome; True when :meth:`health` says ``ok``; False otherwise."""
        status = self.health()["status"]
        if status == "unknown":
            return None
        return status == "ok"

    def close(self) -> None:
        """Close the files this gate holds open (slots still held are released by the kernel)."""
        for fd in [*self._slot_fds.values(), self._state_fd]:
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._slot_fds.clear()
        self._state_fd = None
        self._held.clear()

    # --- admission ---------------------------------------------------------------------------------

    def _refusal(self, state: _State, now: float, probe_lease_s: float | None) -> Exception | bool:
        """The error that refuses a call now, or (no refusal) whether it becomes the probe."""
        if state.paused_until > now:
            left = state.paused_until - now
            self._counters["refused_paused"] += 1
            return UpstreamRateLimited(f"{self.name}: paused for {left:.0f} s after a 429 from the upstream",
                                       self.name, _ceil_s(left))
        if state.open_until == 0:
            return False
        if now < state.open_until or state.probe_until > now:
            left = max(state.open_until - now, state.probe_until - now, 0.0)
            self._counters["refused_open"] += 1
            return UpstreamBusy(f"{self.name}: the upstream is failing ({state.failures} failures in a row) and "
                                f"is backed off for {left:.0f} s", self.name, _ceil_s(left))
        if probe_lease_s is not None:
            state.probe_until = now + probe_lease_s
            return True
        return False

    async def _admit(self, stream: bool, max_wait_s: float) -> GateCall:
        settings = self.settings
        call = GateCall(deadline_s=settings.stream_timeout_s if stream else settings.timeout_s)
        started = time.monotonic()
        deadline = started + max(0.0, max_wait_s)
        refusal = await self._transact(lambda s, now: self._refusal(s, now, None))
        if isinstance(refusal, Exception):
            raise refusal
        call.slot = await self._take_slot(deadline, announce=True)
        if call.slot < 0:
            self._counters["refused_busy"] += 1
            raise UpstreamBusy(f"{self.name}: {settings.max_in_flight} request(s) already in flight and none "
                               f"finished within {max_wait_s:g} s; try again shortly", self.name,
                               _ceil_s(max(max_wait_s, 1.0)))
        try:
            def reserve(state: _State, now: float) -> tuple[Exception | bool | None, float]:
                """(refusal, 0) | (probe?, 0): reserved now | (None, wait): the slot is ``wait`` s away."""
                budget = max(0.0, deadline - time.monotonic()) + 0.01  # a few ms of spacing is no queue
                send_at = max(now, state.next_send)
                if send_at - now > 86400 + settings.rate.window_s:  # a clock that jumped back: start over
                    send_at = now
                if send_at - now > budget:
                    self._counters["refused_busy"] += 1
                    waited = time.monotonic() - started
                    if waited < 0.05:
                        why = (f"the next request slot ({settings.rate}) is {send_at - now:.1f} s away, longer than "
                               f"the {max_wait_s:g} s wait bound")
                    else:
                        why = (f"waited {waited:.1f} s for a request in flight to finish, then the next request "
                               f"slot ({settings.rate}) was {send_at - now:.1f} s away, past the "
                               f"{max(0.0, budget - 0.01):.1f} s left of the {max_wait_s:g} s wait bound")
                    return UpstreamBusy(f"{self.name}: {why}; try again shortly", self.name,
                                        _ceil_s(send_at - now)), 0.0
                verdict = self._refusal(state, now, None)
                if isinstance(verdict, Exception):
                    return verdict, 0.0
                if send_at > now + 0.001:  # wait, then reserve at the real send time; background calls give way
                    state.fg_wait_until = max(state.fg_wait_until, send_at + WAITING_LEASE_S)
                    return None, send_at - now
                verdict = self._refusal(state, now, call.deadline_s + 5)
                state.next_send = now + settings.rate.interval_s
                return verdict, 0.0

            while True:
                verdict, wait = await self._transact(reserve)
                if isinstance(verdict, Exception):
                    raise verdict
                if verdict is not None:
                    break
                await asyncio.sleep(wait)
            call.probe = bool(verdict)
        except BaseException:
            self._release(call.slot)
            raise
        return self._admitted(call, started)

    def _admitted(self, call: GateCall, started: float) -> GateCall:
        call.waited_s = time.monotonic() - started
        self._counters["calls"] += 1
        if call.background:
            self._counters["background_calls"] += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s: request admitted at %.4f (epoch s) after %.3f s%s%s", self.name, time.time(), call.waited_s,
                      " (background)" if call.background else "", " (breaker probe)" if call.probe else "")
        return call

    async def _admit_background(self, stream: bool, max_wait_s: float) -> GateCall:
        """Admit a background call: only when no interactive call waits and both the common spacing and
        the background spacing (``interval / background_share``) allow a send now; the slot is taken
        only for that send (never the last one when ``max_in_flight`` > 1), so a background call never
        holds a slot while it waits.

        Raises:
            UpstreamRateLimited / UpstreamBusy: as :meth:`request` (busy after ``max_wait_s`` seconds).
        """
        settings = self.settings
        call = GateCall(deadline_s=settings.stream_timeout_s if stream else settings.timeout_s, background=True)
        started = time.monotonic()
        deadline = started + max(0.0, max_wait_s)
        reserve_slots = 1 if settings.max_in_flight > 1 else 0
        bg_interval = settings.rate.interval_s / settings.background_share

        def reserve(state: _State, now: float) -> Exception | bool | None:
            """A refusal | probe? (reserved now) | None: not now (an interactive call waits, or spacing)."""
            verdict = self._refusal(state, now, None)
            if isinstance(verdict, Exception):
                return verdict
            if state.fg_wait_until > now:
                self._counters["background_yields"] += 1
                return None
            if max(state.next_send, state.bg_next_send) > now + 0.001:
                return None
            verdict = self._refusal(state, now, call.deadline_s + 5)
            state.next_send = now + settings.rate.interval_s
            state.bg_next_send = now + bg_interval
            return verdict

        refusal = await self._transact(lambda s, now: self._refusal(s, now, None))
        if isinstance(refusal, Exception):
            raise refusal
        while True:
            state, now = self._peek(), self._clock()
            hold = max(state.fg_wait_until, state.next_send, state.bg_next_send) - now
            if hold > 86400 + settings.rate.window_s + bg_interval:  # a clock that jumped back: let it decide
                hold = 0.0
            if hold <= 0.001:
                call.slot = self._try_slot(reserve_slots)
                if call.slot >= 0:
                    try:
                        verdict = await self._transact(reserve)
                    except BaseException:
                        self._release(call.slot)
                        raise
                    if verdict is not None and not isinstance(verdict, Exception):
                        call.probe = bool(verdict)
                        return self._admitted(call, started)
                    self._release(call.slot)
                    call.slot = -1
                    if isinstance(verdict, Exception):
                        raise verdict
                hold = POLL_S
            left = deadline - time.monotonic()
            if left <= 0:
                self._counters["refused_busy"] += 1
                raise UpstreamBusy(f"{self.name}: a background request found no turn within {max_wait_s:g} s "
                                   f"(interactive requests go first; background requests use at most "
                                   f"{settings.background_share:g} of {settings.rate})", self.name,
                                   _ceil_s(max(hold, 1.0)))
            await asyncio.sleep(min(hold, BACKGROUND_POLL_S, left))

    async def _settle(self, call: GateCall, outcome: str, retry_after: float) -> float:
        """Record an outcome in the shared state; for a 429, the seconds the pause lasts from now."""
        settings = self.settings
        status = call.status
        self._by_status["none" if status is None else f"{status // 100}xx"] += 1
        if outcome == "429":
            self._counters["responses_429"] += 1
        if outcome == "neutral" and not call.probe:
            return 0.0

        def apply(state: _State, now: float) -> tuple[float, bool, float]:
            if call.probe:
                state.probe_until = 0.0
            pause, opened = 0.0, False
            if outcome == "ok":
                state.failures, state.open_until, state.open_s, state.strike = 0, 0.0, 0.0, 0
                state.last_pause_s, state.last_ok_at = 0.0, now
            elif outcome == "429":
                state.last_fail_at = now
                base = retry_after if retry_after > 0 else settings.pause_after_429_s
                pause = base
                if state.paused_until > now:  # the same episode (another request was in flight): no doubling
                    state.paused_until = max(state.paused_until, now + base)
                    state.last_pause_s = max(state.last_pause_s, base)
                else:
                    if state.strike and state.last_pause_s > 0:  # a repeated 429: double the last pause
                        pause = max(base, min(state.last_pause_s * 2, settings.max_pause_s))
                    state.paused_until = now + pause
                    state.last_pause_s = pause
                state.strike = 1
            elif outcome == "fail":
                state.failures += 1
                state.last_fail_at = now
                if call.probe and state.open_until:
                    state.open_s = min(max(state.open_s, settings.breaker_open_s) * 2,
                                       max(settings.max_pause_s, settings.breaker_open_s))
                    state.open_until, opened = now + state.open_s, True
                elif state.open_until == 0 and state.failures >= settings.breaker_failures:
                    state.open_s = settings.breaker_open_s
                    state.open_until, opened = now + state.open_s, True
            return pause, opened, max(0.0, state.paused_until - now)

        try:
            pause, opened, paused_for = await self._transact(apply)
        except asyncio.CancelledError:  # cancelled again while waiting for the lock: applied here only
            apply(self._mem, time.time())
            raise
        if pause:
            self._counters["pause_s"] += pause
            log.warning("%s answered 429: every worker pauses its requests for %.0f s", self.name, pause)
        if opened:
            self._counters["breaker_opens"] += 1
            log.warning("%s: circuit breaker open after %s failure(s) in a row; calls refused for %.0f s",
                        self.name, settings.breaker_failures, self._mem.open_s)
        return paused_for

    # --- slots ---------------------------------------------------------------------------------------

    def _slot_fd(self, i: int) -> int | None:
        if i in self._slot_fds:
            return self._slot_fds[i]
        fd = None
        if self.state_dir is not None:
            try:
                self.state_dir.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.state_dir / f"{self.name}.slot{i}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                self._log_once("slot", "%s: cannot open the in-flight slot files in %s (%s): limiting this "
                               "process only", self.name, self.state_dir, exc.strerror or exc)
        self._slot_fds[i] = fd
        return fd

    def _try_slot(self, reserved: int = 0) -> int:
        """Take a free in-flight slot now, leaving the last ``reserved`` ones alone; -1 when none is free."""
        for i in range(self.settings.max_in_flight - reserved):
            if i in self._held:
                continue
            fd = self._slot_fd(i)
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    self._log_once("flock", "%s: flock on a slot file failed (%s): limiting this process only",
                                   self.name, exc.strerror or exc)
                    self._slot_fds[i] = None
            self._held.add(i)
            return i
        return -1

    async def _take_slot(self, deadline: float, *, announce: bool = False) -> int:
        """A free in-flight slot, waiting until ``deadline`` (monotonic); -1 when none came free.

        ``announce``: while waiting, keep the shared "an interactive call waits" lease so that
        background calls of every process give way.
        """
        renew_at = 0.0
        while True:
            slot = self._try_slot()
            if slot >= 0:
                return slot
            left = deadline - time.monotonic()
            if left <= 0:
                return -1
            if announce and time.monotonic() >= renew_at:
                renew_at = time.monotonic() + WAITING_RENEW_S
                await self._transact(_announce_waiting)
                continue
            await asyncio.sleep(min(POLL_S, left))

    def _release(self, slot: int) -> None:
        if slot < 0 or slot not in self._held:
            return
        fd = self._slot_fds.get(slot)
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            except OSError:
                pass
        self._held.discard(slot)

    # --- shared state --------------------------------------------------------------------------------

    def _log_once(self, key: str, message: str, *args: Any) -> None:
        if key not in self._logged:
            self._logged.add(key)
            log.warning(message, *args)

    def _open_state(self) -> int | None:
        if self._state_fd is not None:
            return self._state_fd
        if self.state_dir is None:
            return None
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.state_dir / f"{self.name}.state", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            self._disk_failed("cannot open the state file", exc)
            return None
        self._state_fd = fd
        return fd

    def _disk_failed(self, what: str, exc: OSError) -> None:
        self._disk_ok = False
        self._disk_retry_at = time.monotonic() + DISK_RETRY_S
        self._log_once("state", "%s: %s in %s (%s): the gate goes on with an in-memory state (not shared "
                       "with other workers) and tries the file again every %.0f s", self.name, what,
                       self.state_dir, exc.strerror or exc, DISK_RETRY_S)

    def _read(self, fd: int) -> _State:
        data = os.pread(fd, _RECORD_SIZE, 0)
        if not data:  # a new file (or one that could not be written before): start from this process's copy
            return self._mem.copy()
        return _State.unpack(data) or _State()  # a damaged record starts over (limits are re-learnt)

    def _use_disk(self) -> int | None:
        if self.state_dir is None:
            return None
        if not self._disk_ok:
            if time.monotonic() < self._disk_retry_at:
                return None
            self._disk_ok = True
        return self._open_state()

    async def _transact(self, fn: Callable[[_State, float], T]) -> T:
        """Run ``fn(state, now)`` on the shared state under its flock and write it back when changed.

        ``fn`` must not await: the read-modify-write is atomic across processes and coroutines.
        """
        fd = self._use_disk()
        if fd is not None:
            give_up = time.monotonic() + STATE_LOCK_WAIT_S
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > give_up:
                        self._log_once("lock", "%s: the gate state lock is held for over %.0f s: deciding in "
                                       "memory", self.name, STATE_LOCK_WAIT_S)
                        fd = None
                        break
                    await asyncio.sleep(POLL_S / 10)
                except OSError as exc:
                    self._disk_failed("cannot lock the state file", exc)
                    fd = None
                    break
        if fd is None:
            return fn(self._mem, time.time())
        try:
            try:
                state = self._read(fd)
            except OSError as exc:
                self._disk_failed("cannot read the state file", exc)
                return fn(self._mem, time.time())
            before = state.pack()
            result = fn(state, time.time())
            self._mem = state
            after = state.pack()
            if after != before:
                try:
                    if os.pwrite(fd, after, 0) != len(after):
                        raise OSError(errno.ENOSPC, "short write")
                except OSError as exc:
                    self._disk_failed("cannot write the state file", exc)
            return result
        finally:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            except OSError:
                pass

    def _peek(self) -> _State:
        """The shared state without its lock (a torn read falls back to the last copy seen here)."""
        fd = self._use_disk()
        if fd is None:
            return self._mem
        try:
            state = _State.unpack(os.pread(fd, _RECORD_SIZE, 0))
        except OSError:
            return self._mem
        return state or self._mem


def _announce_waiting(state: _State, now: float) -> None:
    """An interactive call waits for its turn: background calls give way for :data:`WAITING_LEASE_S`."""
    state.fg_wait_until = max(state.fg_wait_until, now + WAITING_LEASE_S)


def open_gate(name: str, table: Any, data_dir: str | Path | None, redis: RedisBackend | None = None) -> UpstreamGate:
    """The gate of upstream ``name`` configured by ``table`` (a ``[lichess]``/``[chesscom]``/``[fide]``
    config table), sharing its state in ``<data_dir>/gate`` (None: this process only), or in Redis
    with every host using it when ``redis`` is given (``[cache] url``).

    Raises:
        ValueError: the table's ``rate`` does not parse (the config loader checks it first).
    """
    if redis is not None:
        from chessstats.upstream.gate_redis import RedisGate  # it subclasses UpstreamGate

        return RedisGate(name, GateSettings.from_config(table), redis)
    return UpstreamGate(name, GateSettings.from_config(table), None if data_dir is None else Path(data_dir) / "gate")
