"""The Redis connection shared by every part that coordinates through Redis (``[cache] url``).

When ``[cache] url`` is a ``redis://`` (``rediss://``, ``unix://``) URL, the cache, the named locks
(single-flight of misses, tournament imports, the scheduler and its job runs), the upstream gates
and the inbound rate limits keep their shared state in that Redis instead of the data dir, so
that they hold across every worker of every host using it.

* **One client per process** (:class:`RedisBackend`): redis-py's synchronous client with short
  socket timeouts (:data:`SOCKET_TIMEOUT_S`): every call is one round trip to a nearby server, a
  lookup costs tens of microseconds, and a dead server costs at most the timeout once before the
  callers back off.
* **Leased locks** (:class:`RedisLock`): ``SET key token NX PX lease`` with a random token,
  released by a compare-and-delete script, kept alive by one daemon thread per process
  (:class:`LeaseKeeper`) that extends every held lease every ``lease_s / 3`` seconds. A holder
  killed with ``kill -9`` stops extending, so its lock frees itself ``lease_s`` seconds later; no
  clock of any host is compared (Redis expires the key on its own clock).
* Every key starts with ``[cache] redis_prefix`` (default ``chessstats:``), so several
  deployments can share one Redis database.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import redis
    from redis.exceptions import RedisError

log = logging.getLogger(__name__)


def _load_redis() -> None:
    """Import redis-py into this module's globals (``redis``, ``RedisError``) on first use: a server
    without ``[cache] url`` never loads it (its 61 modules cost an idle process ≈6.4 MiB)."""
    global redis, RedisError  # noqa: PLW0603 - the deferred import itself
    import redis
    from redis.exceptions import RedisError


def __getattr__(name: str) -> Any:
    """``RedisError`` for modules that import it from here (the Redis engines, loaded only when used)."""
    if name in ("redis", "RedisError"):
        _load_redis()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["LeaseKeeper", "LockUnavailable", "RedisBackend", "RedisError", "RedisLock", "is_redis_url", "redacted"]

#: Seconds a Redis call (connect, send, answer) may take before it fails.
SOCKET_TIMEOUT_S = 1.0

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


def is_redis_url(url: str) -> bool:
    """Whether ``url`` names a Redis server (``redis://``, ``rediss://`` or ``unix://``)."""
    return url.split("://", 1)[0].lower() in ("redis", "rediss", "unix") and "://" in url


def redacted(url: str) -> str:
    """``url`` without its password (for logs and ``/health``)."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not sep or not at:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user + ':' if user else ':'}***@{host}"


class LockUnavailable(OSError):
    """Redis could not be asked (down, timed out): the caller runs without the lock, as it does
    when a lock file cannot be created (an :class:`OSError`)."""


class RedisBackend:
    """One process's connection to the coordinating Redis.

    **Parameters:**
    * **url** - ``redis://[:password@]host:port/db``, ``rediss://...`` or ``unix:///path/redis.sock?db=N``.
    * **prefix** - *(optional)* prepended to every key. Defaults to ``chessstats:``.
    * **lease_s** - *(optional)* lease of a lock in seconds: how long a lock of a killed holder
      stays taken. Defaults to 15.

    Connecting is lazy: building the object never fails because the server is down.

    Raises:
        ValueError: ``url`` is not a Redis URL redis-py understands.
    """

    def __init__(self, url: str, *, prefix: str = "chessstats:", lease_s: float = 15.0) -> None:
        self.url = url
        self.prefix = prefix
        self.lease_s = float(lease_s)
        _load_redis()
        self.client: redis.Redis = redis.Redis.from_url(
            url, socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=SOCKET_TIMEOUT_S, health_check_interval=30)
        self._release = self.client.register_script(_RELEASE)
        self._extend = self.client.register_script(_EXTEND)
        self._keeper: LeaseKeeper | None = None
        self._keeper_lock = threading.Lock()
        self.identity = f"{socket.gethostname()}:{os.getpid()}"

    def key(self, name: str) -> str:
        """The full Redis key of ``name`` (the prefix prepended)."""
        return self.prefix + name

    def lock(self, name: str) -> RedisLock:
        """A leased lock named ``name`` (``fetch-007``, ``import-03``, ``scheduler``, ``job-cleanup``)."""
        return RedisLock(self, name)

    def keeper(self) -> LeaseKeeper:
        """This process's lease keeper (started on first use)."""
        with self._keeper_lock:
            if self._keeper is None or not self._keeper.is_alive():
                self._keeper = LeaseKeeper(self)
                self._keeper.start()
            return self._keeper

    def now(self) -> float:
        """The Redis server's clock in epoch seconds (``TIME``): the one clock every host agrees on.

        Raises:
            RedisError: the server cannot be asked.
        """
        sec, usec = self.client.time()
        return sec + usec / 1e6

    def close(self) -> None:
        """Stop the lease keeper and close the connections (idempotent; never raises)."""
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.stop()
        try:
            self.client.close()
        except RedisError:
            pass


class RedisLock:
    """A non-blocking lock in Redis with the interface of :class:`chessstats.locks.FileLock`
    (``acquire``, ``release``, ``held``): a lease kept alive while held (see the module docstring).

    Two ``RedisLock`` objects on one name exclude each other, in one process or across hosts.
    """

    def __init__(self, backend: RedisBackend, name: str) -> None:
        self.backend = backend
        self.name = name
        self.key = backend.key("lock:" + name)
        self._token: str | None = None
        self.lost = False

    @property
    def path(self) -> str:
        """The lock's Redis key (named ``path`` like a lock file's, for log messages)."""
        return self.key

    @property
    def held(self) -> bool:
        """Whether this object holds the lock (False once its lease was lost)."""
        return self._token is not None

    def acquire(self) -> bool:
        """Try to take the lock without waiting; True when held (already or now), False when another
        holder has it.

        Raises:
            LockUnavailable: Redis cannot be asked (an :class:`OSError`, as a lock file that cannot
                be created): the lock is not held.
        """
        if self._token is not None:
            return True
        token = f"{self.backend.identity}:{uuid.uuid4().hex}"
        try:
            ok = self.backend.client.set(self.key, token, nx=True, px=int(self.backend.lease_s * 1000))
        except RedisError as exc:
            raise LockUnavailable(f"redis: {exc}") from exc
        if not ok:
            return False
        self._token = token
        self.lost = False
        self.backend.keeper().add(self)
        return True

    def release(self) -> None:
        """Release the lock if this object still holds it (idempotent; never raises). When Redis
        cannot be reached the lease simply runs out."""
        token, self._token = self._token, None
        if token is None:
            return
        keeper = self.backend._keeper
        if keeper is not None:
            keeper.discard(self)
        try:
            self.backend._release(keys=[self.key], args=[token])
        except RedisError as exc:
            log.debug("lock %s not released (%s): its lease runs out", self.key, exc)

    def holder(self) -> str | None:
        """Who holds the lock now (``host:pid:token``), None when free or unknown (informational)."""
        try:
            value = self.backend.client.get(self.key)
        except RedisError:
            return None
        return value.decode() if isinstance(value, bytes) else value

    def _extend(self) -> bool:
        token = self._token
        if token is None:
            return True
        ok = self.backend._extend(keys=[self.key], args=[token, int(self.backend.lease_s * 1000)])
        if not ok and self._token == token:
            self._token = None
            self.lost = True
            log.warning("lock %s was lost (its lease ran out before it could be extended)", self.key)
        return bool(ok)


class LeaseKeeper(threading.Thread):
    """A daemon thread that extends the lease of every lock this process holds every
    ``lease_s / 3`` seconds; a lock whose lease ran out meanwhile is marked lost (no longer held)."""

    def __init__(self, backend: RedisBackend) -> None:
        super().__init__(name="chessstats-redis-leases", daemon=True)
        self.backend = backend
        self._locks: weakref.WeakSet[RedisLock] = weakref.WeakSet()
        self._guard = threading.Lock()
        self._stop_event = threading.Event()

    def add(self, lock: RedisLock) -> None:
        with self._guard:
            self._locks.add(lock)

    def discard(self, lock: RedisLock) -> None:
        with self._guard:
            self._locks.discard(lock)

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:  # pragma: no cover - exercised through the locks' tests
        interval = max(0.05, self.backend.lease_s / 3)
        while not self._stop_event.wait(interval):
            with self._guard:
                locks: list[Any] = list(self._locks)
            for lock in locks:
                try:
                    lock._extend()
                except RedisError as exc:
                    log.debug("lease of %s not extended (%s): tried again in %.1f s", lock.key, exc, interval)
