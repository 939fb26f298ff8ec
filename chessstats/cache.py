"""The TTL cache: diskcache on disk (shared by every worker), a small LRU in memory in front.

Values are :class:`CacheEntry` Structs encoded with msgpack (never pickle). Each entry keeps the
time it was fetched from its upstream (``fetchedAt``) and when it stops being fresh
(``Cache-Control`` max-age); ``expires_at`` None makes an entry permanent.

The in-memory LRU holds :class:`~chessstats.payload.Payload` objects, so a hit costs a dict
lookup (and, at most every :data:`GENERATION_CHECK_S`, one ``stat`` of ``<cache dir>/generation``):
:meth:`TTLCache.clear` and :meth:`TTLCache.delete` touch that file, which tells every other
worker to drop its LRU within 0.1 s.
:meth:`TTLCache.set` does the same when it replaces an existing entry (a job refreshing an
ongoing tournament). A diskcache ``Timeout`` (SQLite contention) is treated as a miss, never as
an error.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import diskcache
import msgspec

from chessstats.payload import Payload

log = logging.getLogger(__name__)

GENERATION_FILE = "generation"
#: How often (seconds) a process looks at the generation file: another worker's clear or
#: replacement reaches this process's memory layer within this time.
GENERATION_CHECK_S = 0.1


class CacheEntry(msgspec.Struct, array_like=True):
    """What is stored per key: encoded envelope fields, origin and times (epoch seconds)."""

    fields: bytes
    source: str
    fetched_at: float
    expires_at: float | None


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(CacheEntry).decode


class TTLCache:
    """TTL cache in ``directory`` with an in-process LRU of ``memory_entries`` payloads.

    **Parameters:**
    * **directory** - the diskcache directory (``<data dir>/cache``).
    * **memory_entries** - *(optional)* size of the in-memory LRU; 0 disables it. Defaults to 2048.
    * **size_limit_mb** - *(optional)* diskcache size limit in MiB. Defaults to 1024.
    * **enabled** - *(optional)* when False every lookup misses and nothing is stored.
    """

    def __init__(
        self, directory: str | Path, *, memory_entries: int = 2048, size_limit_mb: int = 1024, enabled: bool = True
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.enabled = enabled
        self._disk = diskcache.Cache(str(self.directory), size_limit=size_limit_mb * 2**20)
        self._memory: OrderedDict[str, Payload] = OrderedDict()
        self._memory_entries = memory_entries
        self._generation_path = self.directory / GENERATION_FILE
        self._generation_path.touch(exist_ok=True)
        self._generation = self._read_generation()
        self._next_check = 0.0
        self.hits = 0
        self.misses = 0

    def _read_generation(self) -> int:
        try:
            return os.stat(self._generation_path).st_mtime_ns
        except OSError:
            return 0

    def _bump_generation(self) -> None:
        now = time.time_ns()
        try:
            os.utime(self._generation_path, ns=(now, now))
        except OSError:
            self._generation_path.touch()
        self._generation = self._read_generation()

    def close(self) -> None:
        """Close the diskcache connection."""
        self._disk.close()

    def _hit(self, payload: Payload, key: str) -> Payload:
        self.hits += 1
        self._memory[key] = payload
        self._memory.move_to_end(key)
        if len(self._memory) > self._memory_entries:
            self._memory.popitem(last=False)
        return payload

    def get(self, key: str, now: float | None = None) -> Payload | None:
        """The fresh payload under ``key`` (``cached=True``, ``source="cache"``), or None on a miss."""
        if not self.enabled:
            self.misses += 1
            return None
        now = time.time() if now is None else now
        if now >= self._next_check:
            self._next_check = now + GENERATION_CHECK_S
            generation = self._read_generation()
            if generation != self._generation:
                self._memory.clear()
                self._generation = generation
        payload = self._memory.get(key)
        if payload is not None:
            if payload.expires_at is None or payload.expires_at > now:
                self.hits += 1
                return payload
            del self._memory[key]
        try:
            raw = self._disk.get(key)
        except diskcache.Timeout:
            log.warning("cache read timed out for %s; treated as a miss", key)
            raw = None
        if raw is None:
            self.misses += 1
            return None
        try:
            entry = _decode(raw)
        except (msgspec.DecodeError, TypeError):
            log.warning("undecodable cache entry %s dropped", key)
            self.delete(key)
            self.misses += 1
            return None
        if entry.expires_at is not None and entry.expires_at <= now:
            self.misses += 1
            return None
        payload = Payload(
            entry.fields, source="cache", cached=True, fetched_at=entry.fetched_at, expires_at=entry.expires_at
        )
        if self._memory_entries:
            return self._hit(payload, key)
        self.hits += 1
        return payload

    def get_stale(self, key: str) -> Payload | None:
        """TEMPORARY (replaced by the storage branch): fresh or expired-but-kept entry."""
        if not self.enabled:
            return None
        raw = self._disk.get(key)
        if raw is None:
            return None
        entry = _decode(raw)
        stale = entry.expires_at is not None and entry.expires_at <= time.time()
        return Payload(entry.fields, source="cache", cached=True, stale=stale, fetched_at=entry.fetched_at,
                       expires_at=entry.expires_at)

    def evict_tag(self, tag: str) -> int:
        """TEMPORARY (replaced by the storage branch)."""
        n = self._disk.evict(tag)
        self._memory.clear()
        self._bump_generation()
        return n

    def set(self, key: str, payload: Payload, ttl_s: float | None, *, stale_s: float = 0.0,
            tag: str | None = None) -> None:
        """Store ``payload`` under ``key`` for ``ttl_s`` seconds (None: permanent).

        Sets ``payload.expires_at`` accordingly. A diskcache timeout is logged and ignored.
        """
        payload.expires_at = None if ttl_s is None else time.time() + ttl_s
        if not self.enabled:
            return
        entry = CacheEntry(payload.fields, payload.source, payload.fetched_at, payload.expires_at)
        try:
            replaced = key in self._disk
            self._disk.set(key, _encode(entry), expire=None if ttl_s is None else ttl_s + stale_s, tag=tag)
        except diskcache.Timeout:
            log.warning("cache write timed out for %s; not cached", key)
            return
        self._memory.pop(key, None)
        if replaced:  # another worker may hold the old payload in memory: make every worker drop it
            self._bump_generation()

    def delete(self, key: str) -> bool:
        """Remove one key everywhere (every worker drops its LRU). Returns whether it existed."""
        self._memory.pop(key, None)
        try:
            existed = bool(self._disk.delete(key))
        except diskcache.Timeout:
            existed = False
        self._bump_generation()
        return existed

    def delete_pattern(self, pattern: str) -> int:
        """Remove every key matching a glob ``pattern`` (``tournament:*``); returns how many went."""
        count = 0
        for key in list(self._disk.iterkeys()):
            if isinstance(key, str) and fnmatch.fnmatchcase(key, pattern):
                count += bool(self._disk.delete(key))
        self._memory.clear()
        self._bump_generation()
        return count

    def clear(self) -> int:
        """Empty the cache (every worker drops its LRU); returns how many entries went."""
        count = self._disk.clear()
        self._memory.clear()
        self._bump_generation()
        return count

    def cull(self) -> int:
        """Remove expired entries from disk; returns how many went."""
        return self._disk.expire()

    def stats(self) -> dict[str, Any]:
        """``{entries, sizeBytes, hits, misses, hitRate, evictions}`` of this process (hits/misses)."""
        total = self.hits + self.misses
        return {
            "entries": len(self._disk),
            "sizeBytes": self._disk.volume(),
            "hits": self.hits,
            "misses": self.misses,
            "hitRate": round(self.hits / total, 4) if total else None,
            "memoryEntries": len(self._memory),
        }
