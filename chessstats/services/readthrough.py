"""The one read-through path of every cached route: cache → (database) → upstream.

:meth:`ReadThrough.get` answers a key in this order:

1. **Fresh entry** in the cache: returned as it is (``X-Cache: HIT``).
2. **Expired entry within its stale window** (stale-while-revalidate): returned at once with
   ``stale=True`` and its old ``fetchedAt``, while one background revalidation per key (per
   process an in-flight task, across worker processes a file lock) refreshes it.
3. **Miss**: one fetch per key, however many requests and workers ask: in a process the callers
   share one task; across processes the fetching worker holds a striped file lock while the others
   poll the cache for its result (they never fetch again after waiting). The fetch runs detached
   from the requests that wait for it, so a client hang-up never cancels it.

A failed fetch is remembered under ``fail:<key>`` (:func:`chessstats.keys.failure`), shared by
every worker: a 404/410 for ``not_found_ttl_s``, any other upstream failure for a short interval
that doubles with each consecutive failure (``failure_base_s`` up to ``failure_max_s``). While it
is remembered, requests get the stale copy or the same error at once, without an upstream call.

When a stored copy exists (``fallback``), a client never waits longer than ``wait_s`` seconds for
the upstream (stale-if-error and slow upstreams): after that it gets the stored copy, flagged
stale, and the fetch goes on in the background.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec

from chessstats import keys
from chessstats.cache import TTLCache
from chessstats.errors import (
    ChessstatsError,
    Gone,
    NotFound,
    UpstreamBlocked,
    UpstreamBusy,
    UpstreamError,
    UpstreamRateLimited,
)
from chessstats.locks import Locks, as_locks
from chessstats.payload import Payload
from chessstats.upstream.gate import background_calls

log = logging.getLogger(__name__)

#: Lock files are striped by key hash: a bounded set of files, none left behind per key.
LOCK_STRIPES = 512
#: How often (seconds) a worker waiting for another worker's fetch looks at the cache.
POLL_S = 0.02


@dataclass(slots=True)
class Fresh:
    """What a fetch produced: the payload, how long it stays fresh (seconds; None: permanent),
    whether to cache it at all, and the cache tag of the entry (:mod:`chessstats.keys`)."""

    payload: Payload
    ttl_s: float | None
    cache: bool = True
    tag: str | None = None


Fetch = Callable[[], Awaitable[Fresh]]
Fallback = Callable[[], Awaitable[Payload | None]]


class _Failure(msgspec.Struct, array_like=True):
    code: str
    message: str
    retry_after_s: int | None
    count: int
    until: float


_encode_failure = msgspec.msgpack.Encoder().encode
_decode_failure = msgspec.msgpack.Decoder(_Failure).decode

_ERRORS: dict[str, type[ChessstatsError]] = {
    cls.code: cls for cls in (NotFound, Gone, UpstreamError, UpstreamBlocked, UpstreamBusy, UpstreamRateLimited)
}


def _rebuild(failure: _Failure, upstream: str) -> ChessstatsError:
    """The error a remembered failure stands for (a 404 marked as coming from the cache)."""
    left = max(1, int(failure.until - time.time()) + 1)
    cls = _ERRORS.get(failure.code, UpstreamError)
    if cls is NotFound:
        return NotFound(failure.message, cached=True)
    if cls is Gone:
        return Gone(failure.message)
    if cls in (UpstreamBusy, UpstreamRateLimited):
        return cls(failure.message, upstream, left)  # type: ignore[call-arg]
    return cls(failure.message, upstream)  # type: ignore[call-arg]


class ReadThrough:
    """Cache → fetch with stale-while-revalidate, stale-if-error, coalescing and failure memory.

    **Parameters:**
    * **cache** - the TTL cache (shared by every worker through its directory).
    * **locks_dir** - the striped cross-process fetch locks: a :class:`~chessstats.locks.Locks` (flock
      files or Redis leases) or the directory of their files (``<data dir>/locks``).
    * **stale_s** - seconds an expired entry is kept and served stale while it is revalidated.
    * **wait_s** - seconds a client waits for the upstream when a stored copy exists.
    * **failure_base_s** / **failure_max_s** - the remembered-failure interval: doubles from the
      first to the second with each consecutive failure of one key.
    * **not_found_ttl_s** - seconds a 404 (or 410) of the upstream is remembered.
    * **lock_wait_s** - seconds a worker waits for another worker's fetch of the same key before it
      fetches itself (the other worker is presumed stuck).
    """

    def __init__(self, cache: TTLCache, locks_dir: Locks | Path, *, stale_s: float = 86_400.0, wait_s: float = 2.0,
                 failure_base_s: float = 5.0, failure_max_s: float = 300.0, not_found_ttl_s: float = 60.0,
                 lock_wait_s: float = 60.0) -> None:
        self.cache = cache
        self.locks = as_locks(locks_dir)
        self.locks_dir = self.locks.directory
        self.stale_s = stale_s
        self.wait_s = wait_s
        self.failure_base_s = failure_base_s
        self.failure_max_s = failure_max_s
        self.not_found_ttl_s = not_found_ttl_s
        self.lock_wait_s = lock_wait_s
        self._inflight: dict[str, asyncio.Task[Payload]] = {}
        #: stripes this process holds: a fetch nested in another (standings need the detail) on the
        #: same stripe must not wait for its own process
        self._held: set[str] = set()
        self.revalidations = 0
        self.stale_served = 0

    # --- public ------------------------------------------------------------------------------

    async def get(self, key: str, fetch: Fetch, *, fallback: Fallback | None = None, upstream: str = "") -> Payload:
        """The payload of ``key``: fresh from the cache, stale while revalidating, or fetched.

        Args:
            key: the cache key (:mod:`chessstats.keys`).
            fetch: produces the payload (database and/or upstream); runs at most once at a time
                per key across every worker; never cancelled by a client hang-up.
            fallback: a stored copy (flagged stale) served when the fetch fails or takes longer
                than ``wait_s``; None when nothing is stored.
            upstream: the upstream's name, for errors rebuilt from a remembered failure.

        Raises:
            NotFound, Gone, UpstreamError (and its subclasses): the fetch failed (now, or within
                the remembered interval) and no stale or stored copy exists.
        """
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        stale = self.cache.get_stale(key)
        if stale is not None:
            self.stale_served += 1
            self.revalidate(key, fetch)
            return stale
        failure = self._failure(key)
        if failure is not None and failure.until > time.time():
            if fallback is not None and failure.code not in ("not_found", "gone"):
                stored = await fallback()
                if stored is not None:
                    return stored
            raise _rebuild(failure, upstream)
        task = self._start(key, fetch, background=False)
        if fallback is None:
            return await asyncio.shield(task)
        try:
            return await asyncio.wait_for(asyncio.shield(task), self.wait_s)
        except TimeoutError:
            stored = await fallback()
            if stored is not None:
                log.info("%s: the upstream is slow; serving the stored copy while the fetch goes on", key)
                return stored
            return await asyncio.shield(task)
        except (NotFound, Gone):
            raise
        except UpstreamError:
            stored = await fallback()
            if stored is not None:
                return stored
            raise

    def revalidate(self, key: str, fetch: Fetch) -> None:
        """Refresh ``key`` in the background unless this process or another worker already does,
        or its last fetch failed within the remembered interval."""
        if key in self._inflight:
            return
        failure = self._failure(key)
        if failure is not None and failure.until > time.time():
            return
        with background_calls():  # the refresh (a task created here) gives way to users' requests
            self._start(key, fetch, background=True)

    async def refresh(self, key: str, fetch: Fetch) -> Payload:
        """Fetch ``key`` now whatever the cache holds (jobs), coalesced with any fetch under way.

        Raises like :meth:`get` (no fallback).
        """
        return await asyncio.shield(self._start(key, fetch, background=False, force=True))

    def keep(self, key: str, fresh: Fresh) -> Payload:
        """Cache an answer its caller read itself, exactly as a fetch's result is cached (permanent
        entries get no stale window), and return its payload.

        For answers that need no fetch: a stored, imported tournament is read from the database in
        one quick query, with no upstream call to coalesce or remember.
        """
        if fresh.cache:
            stale_s = 0.0 if fresh.ttl_s is None else self.stale_s
            self.cache.set(key, fresh.payload, fresh.ttl_s, stale_s=stale_s, tag=fresh.tag)
        return fresh.payload

    def forget_failure(self, key: str) -> None:
        """Drop the remembered failure of ``key`` (an admin action, a re-import)."""
        self.cache.delete(keys.failure(key))

    async def aclose(self) -> None:
        """Cancel the fetches under way (at shutdown)."""
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- internals ---------------------------------------------------------------------------

    def _start(self, key: str, fetch: Fetch, *, background: bool, force: bool = False) -> asyncio.Task[Payload]:
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._load(key, fetch, background=background, force=force))
            self._inflight[key] = task
            task.add_done_callback(lambda t: self._done(key, t))
        return task

    def _done(self, key: str, task: asyncio.Task[Payload]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            exc = task.exception()  # retrieved here, so a background failure is never "never retrieved"
            if exc is not None and not isinstance(exc, ChessstatsError):
                log.error("fetch of %s failed", key, exc_info=exc)

    def _lock_name(self, key: str) -> str:
        stripe = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=4).digest(), "big") % LOCK_STRIPES
        return f"fetch-{stripe:03d}"

    async def _load(self, key: str, fetch: Fetch, *, background: bool, force: bool) -> Payload:
        path = self._lock_name(key)
        lock = self.locks.lock(path)
        deadline = time.monotonic() + self.lock_wait_s
        held = False
        if path in self._held:  # this process holds the stripe already (a nested fetch): go ahead
            deadline = 0.0
        else:
            try:
                held = lock.acquire()
            except OSError as exc:  # the locks dir cannot be written (full disk): fetch unlocked
                log.warning("fetch lock for %s unavailable (%s); fetching without it", key, exc)
                deadline = 0.0
        try:
            while not held and time.monotonic() < deadline:
                if background:  # another worker is revalidating it (or a key on the same stripe): leave it
                    stale = self.cache.get_stale(key)
                    if stale is not None:
                        return stale
                    background = False  # the entry went meanwhile: wait for that worker like a miss does
                hit = self.cache.get(key)
                if hit is not None and not force:
                    return hit
                failure = self._failure(key)
                if failure is not None and failure.until > time.time() and not force:
                    raise _rebuild(failure, "")
                await asyncio.sleep(POLL_S)
                if path in self._held:
                    break
                try:
                    held = lock.acquire()
                except OSError:
                    break
            if not force:
                hit = self.cache.get(key)  # filled by the worker we waited for
                if hit is not None:
                    return hit
                failure = self._failure(key)
                if failure is not None and failure.until > time.time():
                    raise _rebuild(failure, "")
            if held:
                self._held.add(path)
            return await self._fetch(key, fetch)
        finally:
            if held:
                self._held.discard(path)
            lock.release()

    async def _fetch(self, key: str, fetch: Fetch) -> Payload:
        if self.cache.get_stale(key) is not None:
            self.revalidations += 1
        try:
            fresh = await fetch()
        except (NotFound, Gone, UpstreamError) as exc:
            self.remember_failure(key, exc)
            raise
        self.keep(key, fresh)
        if self._failure(key) is not None:
            self.forget_failure(key)
        return fresh.payload

    def remember_failure(self, key: str, exc: ChessstatsError, *, not_found_ttl_s: float | None = None) -> None:
        """Remember that fetching ``key`` failed with ``exc`` (shared by every worker through the cache), as
        a failed fetch of :meth:`get` is: a ``NotFound`` / ``Gone`` for ``not_found_ttl_s`` seconds (default
        the read-through's), any other failure for ``failure_base_s`` doubled with each consecutive
        failure up to ``failure_max_s`` (at least the upstream's ``Retry-After``)."""
        if isinstance(exc, (NotFound, Gone)):
            self._remember(key, exc, self.not_found_ttl_s if not_found_ttl_s is None else not_found_ttl_s)
            return
        previous = self._failure(key)
        count = (previous.count if previous is not None else 0) + 1
        interval = min(self.failure_max_s, self.failure_base_s * 2 ** (count - 1))
        retry = getattr(exc, "retry_after_s", None)
        self._remember(key, exc, max(interval, float(retry or 0)), count)

    def failed_lately(self, key: str) -> bool:
        """Whether the last fetch of ``key`` failed within its remembered interval (:meth:`remember_failure`)."""
        failure = self._failure(key)
        return failure is not None and failure.until > time.time()

    def _failure(self, key: str) -> _Failure | None:
        entry = self.cache.get_stale(keys.failure(key))
        if entry is None:
            return None
        try:
            return _decode_failure(entry.fields)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None

    def _remember(self, key: str, exc: ChessstatsError, interval_s: float, count: int = 1) -> None:
        until = time.time() + interval_s
        failure = _Failure(exc.code, exc.message, getattr(exc, "retry_after_s", None), count, until)
        payload = Payload(_encode_failure(failure), source="api", fetched_at=time.time())
        # kept past its interval (stale window) so that the next failure doubles the interval
        self.cache.set(keys.failure(key), payload, interval_s, stale_s=self.failure_max_s * 2)
        log.info("%s: %s remembered for %.0f s (%s)", key, exc.code, interval_s, exc.message)
