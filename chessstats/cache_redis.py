"""The TTL cache on Redis (``[cache] url = "redis://..."``): the same interface as
:class:`chessstats.cache.TTLCache`, shared by every worker of every host using that Redis.

* **Entries**: ``<prefix>c:<key>`` holds a :class:`~chessstats.cache.CacheEntry` encoded with
  msgspec's msgpack (never pickle): encoded envelope fields, ``source``, ``fetchedAt`` and
  ``expires_at`` (epoch seconds). Redis expires a key ``ttl_s + stale_s`` seconds after it was
  stored (``PX``), so the stale window is kept by the server; a permanent entry (``ttl_s`` None) has
  no expiry.
* **Tags**: ``<prefix>tag:<tag>`` is the set of the keys stored with that tag; :meth:`RedisTTLCache.evict_tag`
  deletes them and the set in one script (atomic). Set, tag and generation bump are one script too.
* **Patterns**: :meth:`RedisTTLCache.delete_pattern` walks the keys with ``SCAN MATCH`` (never ``KEYS``).
* **The in-process LRU** of :class:`~chessstats.payload.Payload` objects stays in front: a hit costs
  a dict lookup. Every invalidation (delete, pattern, tag, clear, a replacing set) increments
  ``<prefix>gen``; each process reads it at most every :data:`~chessstats.cache.GENERATION_CHECK_S`
  seconds and drops its LRU when it moved, so another host's clear reaches this process's memory
  within 0.1 s.
* **The cache never fails a request**: a Redis error (down, timeout, out of memory) is logged once
  per burst, counted in ``errors`` and is a miss / not stored; after a connection error the cache
  is bypassed for :data:`DOWN_BACKOFF_S` seconds, so a dead server costs one socket timeout, not one
  per request. An invalidation that could not be sent is not lost: the cache is bypassed until the
  whole cache (every ``<prefix>c:*`` and ``tag:*`` key) has been deleted once Redis answers again.

Hit/miss counters are per process, as with diskcache.
"""

from __future__ import annotations

import logging
import time

from chessstats.cache import GENERATION_CHECK_S, CacheBase, CacheEntry, _encode
from chessstats.redisconn import RedisBackend, RedisError, redacted

log = logging.getLogger(__name__)

#: Seconds the cache is bypassed (every lookup misses) after Redis could not be reached.
DOWN_BACKOFF_S = 1.0
#: Keys deleted per ``UNLINK`` while walking a pattern.
SCAN_BATCH = 500

# KEYS: entry, tag set (or the entry again), generation; ARGV: value, px (0: permanent), tagged (1/0)
_SET = """
local existed = redis.call('EXISTS', KEYS[1])
local px = tonumber(ARGV[2])
if px > 0 then redis.call('SET', KEYS[1], ARGV[1], 'PX', px) else redis.call('SET', KEYS[1], ARGV[1]) end
if ARGV[3] == '1' then
  local left = redis.call('PTTL', KEYS[2])  -- -2: no set yet, -1: a permanent one
  redis.call('SADD', KEYS[2], KEYS[1])
  if px == 0 then redis.call('PERSIST', KEYS[2])
  elseif left == -2 or (left >= 0 and left < px) then redis.call('PEXPIRE', KEYS[2], px) end
end
if existed == 1 then redis.call('INCR', KEYS[3]) end
return existed
"""
# KEYS: tag set, generation
_EVICT = """
local members = redis.call('SMEMBERS', KEYS[1])
local n = 0
for i = 1, #members do n = n + redis.call('DEL', members[i]) end
redis.call('DEL', KEYS[1])
redis.call('INCR', KEYS[2])
return n
"""


def _redis_glob(pattern: str) -> str:
    """An fnmatch glob (``*``, ``?``, ``[...]``, ``[!...]``) in Redis ``MATCH`` syntax."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1: i + 2] in ("!", "]") else i + 1)
            if end < 0:
                out.append("\\[")
            else:
                body = pattern[i + 1: end]
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
                i = end
        elif c == "\\":
            out.append("\\\\")
        else:
            out.append(c)
        i += 1
    return "".join(out)


def _escape(text: str) -> str:
    """``text`` matched literally by a Redis glob."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class RedisTTLCache(CacheBase):
    """TTL cache in Redis with an in-process LRU of ``memory_entries`` payloads (see the module docstring).

    **Parameters:**
    * **backend** - the process's :class:`~chessstats.redisconn.RedisBackend` (client and key prefix).
    * **memory_entries** - *(optional)* size of the in-memory LRU; 0 disables it. Defaults to 2048.
    * **size_limit_mb** - *(optional)* only reported (``sizeLimitBytes``): Redis's own ``maxmemory``
      bounds it. Defaults to 1024.
    * **enabled** - *(optional)* when False every lookup misses and nothing is stored.

    Same methods, attributes and guarantees as :class:`chessstats.cache.TTLCache`; never raises on a
    Redis fault. Lookups, writes, ``check`` and ``stats`` are :class:`~chessstats.cache.CacheBase`'s;
    the back-off, the lost-invalidation flush and the invalidations are this class's.
    """

    _errors = (RedisError,)
    _log = log
    _FAULT_MESSAGE = "cache %s on redis failed (%s); treated as a miss / not stored%s"

    def __init__(self, backend: RedisBackend, *, memory_entries: int = 2048, size_limit_mb: int = 1024,
                 enabled: bool = True) -> None:
        super().__init__(memory_entries=memory_entries, size_limit_mb=size_limit_mb, enabled=enabled)
        self.backend = backend
        self.client = backend.client
        self.directory = redacted(backend.url)  # where the entries are (shown in messages)
        self._prefix = backend.key("c:")
        self._tag_prefix = backend.key("tag:")
        self._gen_key = backend.key("gen")
        self._set = self.client.register_script(_SET)
        self._evict = self.client.register_script(_EVICT)
        self._down_until = 0.0
        self._must_flush = False  # an invalidation was lost: bypass until everything is deleted
        self._generation = self._read_generation()

    # --- faults ----------------------------------------------------------------------------------

    def _fault(self, op: str, exc: BaseException) -> None:
        """Record an absorbed Redis error; drop the LRU and back off for :data:`DOWN_BACKOFF_S` seconds."""
        self._memory.clear()  # another host's invalidation may be missed while Redis cannot be read
        self._down_until = time.monotonic() + DOWN_BACKOFF_S
        self._record_fault(op, f"{type(exc).__name__}: {exc}")

    def _log_recovery(self) -> None:
        log.warning("cache on redis works again (%d errors during the fault)", self._burst)

    def _up(self) -> bool:
        """Whether Redis may be used now: not backing off after an error, no lost invalidation pending."""
        if self._down_until and time.monotonic() < self._down_until:
            return False
        if self._must_flush:
            return self._flush()
        return True

    def _flush(self) -> bool:
        """Delete the whole cache after a lost invalidation; True once done."""
        try:
            self._delete_matching(_escape(self._prefix) + "*")
            self._delete_matching(_escape(self._tag_prefix) + "*")
            self._generation = int(self.client.incr(self._gen_key))
        except RedisError as exc:
            self._fault("flush", exc)
            return False
        log.warning("cache on redis emptied: an invalidation could not be sent while redis failed")
        self._must_flush = False
        self._memory.clear()
        return True

    def _lost_invalidation(self, op: str, exc: BaseException) -> None:
        self._fault(op, exc)
        self._must_flush = True

    # --- generation: cross-host invalidation of the memory layer -----------------------------------

    def _read_generation(self) -> int:
        try:
            value = self.client.get(self._gen_key)
        except RedisError:
            return -1
        return int(value or 0)

    def _check_generation(self, now: float) -> None:
        self._next_check = now + GENERATION_CHECK_S
        if not self._memory:
            return
        if not self._up():
            self._memory.clear()
            return
        try:
            generation = int(self.client.get(self._gen_key) or 0)
        except RedisError as exc:
            self._fault("read", exc)
            return
        if generation != self._generation:
            self._memory.clear()
            self._generation = generation

    def _bump(self) -> None:
        try:
            self._generation = int(self.client.incr(self._gen_key))
        except RedisError as exc:
            self._lost_invalidation("invalidate", exc)

    def close(self) -> None:
        """Nothing to close here: the connection belongs to the backend (never raises)."""

    # --- primitives of the shared logic (see CacheBase) -------------------------------------------

    def _available(self) -> bool:
        return self._up()

    def _fetch(self, key: str) -> bytes | None:
        if not self._up():
            return None
        return self.client.get(self._prefix + key)

    def _store(self, key: str, entry: CacheEntry, ttl_s: float | None, stale_s: float, tag: str | None) -> bool:
        """One script: SET (``PX`` ttl + stale window), the tag set, and ``INCR gen`` when it replaced."""
        px = 0 if ttl_s is None else max(1, int((ttl_s + max(0.0, stale_s)) * 1000))
        full = self._prefix + key
        tag_key = self._tag_prefix + tag if tag else full
        return bool(self._set(keys=[full, tag_key, self._gen_key], args=[_encode(entry), px, "1" if tag else "0"]))

    def _store_new(self, key: str, entry: CacheEntry, ttl_s: float | None) -> bool:
        """``SET NX`` with ``PX`` ttl (no expiry when ``ttl_s`` is None)."""
        px = None if ttl_s is None else max(1, int(ttl_s * 1000))
        return bool(self.client.set(self._prefix + key, _encode(entry), nx=True, px=px))

    def _replaced(self) -> None:
        self._generation = -1  # the script's bump: the next check clears the LRU here too

    def _usage(self) -> tuple[int, int]:
        """Keys in the Redis database and its ``used_memory`` (bytes); (0, 0) while backing off."""
        if not self._up():
            return 0, 0
        return int(self.client.dbsize()), int(self.client.info("memory").get("used_memory", 0))

    def _probe_ready(self) -> bool:
        return True  # the probe itself ends the back-off

    def _probe(self) -> bool:
        """One tiny ``SET`` (ending the back-off); then the pending flush of a lost invalidation, if any."""
        self._down_until = 0.0
        self.client.set(self.backend.key("probe"), b"", px=1000)
        return not self._must_flush or self._flush()

    # --- invalidations -------------------------------------------------------------------------------

    def delete(self, key: str) -> bool:
        """Remove one key everywhere (every process drops its LRU); returns whether it existed.
        Never raises (a lost invalidation empties the whole cache once Redis answers again)."""
        self._memory.pop(key, None)
        existed = False
        if self._up():
            try:
                existed = bool(self.client.delete(self._prefix + key))
            except RedisError as exc:
                self._lost_invalidation("delete", exc)
                return False
            self._bump()
        else:
            self._must_flush = True
        return existed

    def _delete_matching(self, match: str) -> int:
        """``UNLINK`` every key matching the Redis glob ``match`` (walked with ``SCAN``); returns how many.

        Raises:
            RedisError: Redis failed midway.
        """
        count = 0
        batch: list[bytes] = []
        for full in self.client.scan_iter(match=match, count=1000):
            batch.append(full)
            if len(batch) >= SCAN_BATCH:
                count += int(self.client.unlink(*batch))
                batch.clear()
        if batch:
            count += int(self.client.unlink(*batch))
        return count

    def delete_pattern(self, pattern: str) -> int:
        """Remove every key matching a glob ``pattern`` (``tournament:*``) with ``SCAN`` (never
        ``KEYS``); returns how many went. Never raises."""
        self._memory.clear()
        if not self._up():
            self._must_flush = True
            return 0
        try:
            count = self._delete_matching(_escape(self._prefix) + _redis_glob(pattern))
        except RedisError as exc:
            self._lost_invalidation("invalidate", exc)
            return 0
        self._bump()
        return count

    def evict_tag(self, tag: str) -> int:
        """Remove every entry stored with ``tag`` everywhere (one script); returns how many went.
        Never raises."""
        self._memory.clear()
        if not self._up():
            self._must_flush = True
            return 0
        try:
            count = int(self._evict(keys=[self._tag_prefix + tag, self._gen_key]))
        except RedisError as exc:
            self._lost_invalidation("evict", exc)
            return 0
        self._generation = -1
        return count

    def clear(self) -> int:
        """Empty the cache (every ``<prefix>c:*`` and ``tag:*`` key; every process drops its LRU);
        returns how many entries went. Never raises."""
        self._memory.clear()
        if self._down_until and time.monotonic() < self._down_until:
            self._must_flush = True
            return 0
        try:
            count = self._delete_matching(_escape(self._prefix) + "*")
            self._delete_matching(_escape(self._tag_prefix) + "*")
            self._generation = int(self.client.incr(self._gen_key))
        except RedisError as exc:
            self._lost_invalidation("clear", exc)
            return 0
        self._must_flush = False
        if not self.healthy:
            self._recovered()
        return count

    def cull(self) -> int:
        """Nothing to do: Redis removes entries past their stale window itself. Returns 0."""
        return 0

    @property
    def usable(self) -> bool:
        """False while Redis cannot be reached (every lookup misses); True otherwise, also when the
        cache is disabled by configuration."""
        if not self.enabled:
            return True
        return not (self._down_until and time.monotonic() < self._down_until) and not self._must_flush
