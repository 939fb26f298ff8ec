"""The TTL cache: diskcache on disk (shared by every worker), a small LRU in memory in front.

Values are :class:`CacheEntry` Structs encoded with msgpack (never pickle). Each entry keeps the
time it was fetched from its upstream (``fetchedAt``) and when it stops being fresh
(``Cache-Control`` max-age); ``expires_at`` None makes an entry permanent. An entry may be kept on
disk after it stops being fresh (``stale_s``): :meth:`TTLCache.get` never returns it,
:meth:`TTLCache.get_stale` does (flagged ``stale``).

The in-memory LRU holds :class:`~chessstats.payload.Payload` objects, so a hit costs a dict
lookup (and, at most every :data:`GENERATION_CHECK_S`, one ``stat`` of ``<cache dir>/generation``):
:meth:`TTLCache.clear`, :meth:`TTLCache.delete` and :meth:`TTLCache.evict_tag` touch that file,
which tells every other worker to drop its LRU within 0.1 s.
:meth:`TTLCache.set` does the same when it replaces an existing entry (a job refreshing an
ongoing tournament).

**The cache never fails a request.** It is disposable: any error of diskcache, SQLite or the OS
(disk full, read-only file system, a deleted directory, a corrupt ``cache.db``, a diskcache
``Timeout``) is logged (once per burst), counted in :attr:`TTLCache.errors`, and treated as a
miss / not stored. A corrupt or missing ``cache.db`` (at open or while running) and a deleted
cache dir are deleted / recreated; when an entry cannot be removed (full disk), the whole cache
is wiped instead, so an invalidation is never lost. :attr:`TTLCache.healthy` and
:attr:`TTLCache.last_error` are reported by ``/health``.

:class:`CacheBase` holds what this engine and :class:`chessstats.cache_redis.RedisTTLCache` share
(the LRU in front, the fresh / stale decisions, ``set`` / ``add``, ``check``, ``stats``, the fault
bookkeeping); each engine supplies its storage primitives, its fault handling and its invalidations.
"""

from __future__ import annotations

import errno
import fnmatch
import logging
import os
import re
import shutil
import sqlite3
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import diskcache
import msgspec

from chessstats.payload import Payload

log = logging.getLogger(__name__)

GENERATION_FILE = "generation"
#: The diskcache database file inside the cache dir.
DB_FILE = "cache.db"
#: How often (seconds) a process looks at the generation file: another worker's clear or
#: replacement reaches this process's memory layer within this time.
GENERATION_CHECK_S = 0.1
#: While the disk layer cannot be opened, how often (seconds) a lookup tries to reopen it.
REOPEN_INTERVAL_S = 1.0
#: While the cache is unhealthy, how often (seconds) :meth:`TTLCache.check` tries a probe write.
PROBE_INTERVAL_S = 10.0
#: During a burst of errors, how often (seconds) a summary is logged (the first error always is).
LOG_INTERVAL_S = 60.0
#: diskcache's SQLite busy timeout (seconds): a lookup never waits longer on another writer.
DISK_TIMEOUT_S = 5.0

#: Errors of the disk layer that the cache absorbs (never raised to a caller).
CACHE_ERRORS: tuple[type[BaseException], ...] = (diskcache.Timeout, sqlite3.Error, OSError)

_PROBE_KEY = "__cache_probe__"
_VALUE_DIR = re.compile(r"^[0-9a-f]{2}$")  # diskcache keeps large values in <2 hex>/<2 hex>/*.val


class CacheEntry(msgspec.Struct, array_like=True):
    """What is stored per key: encoded envelope fields, origin and times (epoch seconds)."""

    fields: bytes
    source: str
    fetched_at: float
    expires_at: float | None


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(CacheEntry).decode


def describe_error(exc: BaseException) -> str:
    """A short reason for a storage error: ``disk full``, ``read-only``, ``I/O error``, ``corrupt``,
    ``missing``, ``timeout``, or the error's class and message."""
    if isinstance(exc, diskcache.Timeout):
        return "timeout (database locked)"
    if isinstance(exc, OSError):
        reason = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded", errno.EROFS: "read-only",
                  errno.EIO: "I/O error", errno.ENOENT: "missing", errno.EACCES: "permission denied"}.get(exc.errno)
        return reason or f"{type(exc).__name__}: {exc}"
    text = str(exc)
    low = text.lower()
    if "disk is full" in low:
        return "disk full"
    if "readonly" in low or "read-only" in low:
        return "read-only"
    if "disk i/o error" in low:
        return "I/O error"
    if "not a database" in low or "malformed" in low:
        return "corrupt"
    if "unable to open" in low or "no such table" in low:
        return "missing"
    return f"{type(exc).__name__}: {text}"


def _is_broken_db(exc: BaseException) -> bool:
    """Whether ``exc`` says the cache db itself is unusable (corrupt, gone, not a cache) rather than full."""
    if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
        return True  # "file is not a database", "database disk image is malformed"
    return describe_error(exc) in ("corrupt", "missing")



class CacheBase:
    """What both cache engines share: the in-process LRU of :class:`~chessstats.payload.Payload`
    objects in front of a shared layer, the fresh / stale decisions, the counters and the fault
    bookkeeping (logged once per burst, counted, reported by ``/health``).

    Not used alone: :class:`TTLCache` (diskcache) and :class:`chessstats.cache_redis.RedisTTLCache`
    (Redis) provide the shared layer through these primitives. The ones that touch it raise only the
    engine's :attr:`_errors` (absorbed here as a miss / not stored, through ``_fault``):

    * ``_available() -> bool``: whether the shared layer may be used now (may reopen it); never raises.
    * ``_fetch(key) -> bytes | None``: the encoded :class:`CacheEntry` under ``key``, None when absent
      or the layer is unavailable.
    * ``_store(key, entry, ttl_s, stale_s, tag) -> bool``: store it, kept ``ttl_s + stale_s`` seconds
      (``ttl_s`` None: permanent); returns whether it replaced an entry.
    * ``_store_new(key, entry, ttl_s) -> bool``: store it for ``ttl_s`` seconds only if the key is free.
    * ``_usage() -> (entries, bytes)``: size of the shared layer, ``(0, 0)`` when unavailable.
    * ``_probe_ready() -> bool`` (never raises) and ``_probe() -> bool``: one tiny write for
      :meth:`check`; ``_probe`` returns whether the cache works again.
    * ``_check_generation(now)``, ``_replaced()``, ``_fault(op, exc)``, ``_log_recovery()``: the
      cross-process invalidation of the LRU and the fault handling, which differ per engine, as do
      ``delete``, ``delete_pattern``, ``evict_tag``, ``clear``, ``cull`` and ``usable``.

    Attributes for ``/health`` and stats: ``hits``, ``misses``, ``evictions`` (LRU entries pushed out
    by newer ones), ``expired_removed``, ``errors`` (storage errors absorbed since start), ``healthy``
    (False from an error until the next successful write), ``last_error`` (the reason of the current
    fault, None when healthy) and ``last_error_at`` (epoch seconds UTC); all per process.
    """

    #: Errors of the shared layer that the cache absorbs (never raised to a caller).
    _errors: tuple[type[BaseException], ...] = ()
    #: Where the engine logs (its own module's logger).
    _log: logging.Logger = log
    #: The burst-log line: ``op``, reason, "(N more cache errors since the last report)" or "".
    _FAULT_MESSAGE = "cache %s failed (%s); treated as a miss / not stored%s"

    def __init__(self, *, memory_entries: int, size_limit_mb: int, enabled: bool) -> None:
        self.enabled = enabled
        self._size_limit = size_limit_mb * 2**20
        self._memory: OrderedDict[str, Payload] = OrderedDict()
        self._memory_entries = memory_entries
        self._probe_at = 0.0
        self._next_check = 0.0
        self._burst = 0  # errors since the cache was last healthy
        self._logged_at = 0.0
        self._logged_burst = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0  # in-memory LRU entries pushed out by newer ones (this process)
        self.expired_removed = 0  # entries removed by cull() past their stale window (this process)
        self.errors = 0
        self.healthy = True
        self.last_error: str | None = None
        self.last_error_at: float | None = None

    # --- faults --------------------------------------------------------------------------------

    def _record_fault(self, op: str, reason: str) -> None:
        """Count an absorbed error of operation ``op`` and log it (the first of a burst, then a
        summary at most every :data:`LOG_INTERVAL_S` seconds)."""
        self.errors += 1
        self._burst += 1
        self.healthy = False
        self.last_error = f"{op}: {reason}"
        self.last_error_at = time.time()
        now = time.monotonic()
        if self._burst == 1 or now - self._logged_at >= LOG_INTERVAL_S:
            more = self._burst - self._logged_burst - 1
            self._log.warning(self._FAULT_MESSAGE, op, reason,
                              f" ({more} more cache errors since the last report)" if more > 0 else "")
            self._logged_at, self._logged_burst = now, self._burst

    def _recovered(self) -> None:
        if not self.healthy:
            self._log_recovery()
        self.healthy = True
        self.last_error = None
        self._burst = self._logged_burst = 0

    # --- reads ---------------------------------------------------------------------------------

    def _read(self, key: str) -> CacheEntry | None:
        """The entry under ``key`` in the shared layer (fresh or within its stale window), or None;
        never raises (an undecodable entry is logged and deleted)."""
        try:
            raw = self._fetch(key)
        except self._errors as exc:
            self._fault("read", exc)
            return None
        if raw is None:
            return None
        try:
            return _decode(raw)
        except (msgspec.DecodeError, TypeError):
            self._log.warning("undecodable cache entry %s dropped", key)
            self.delete(key)
            return None

    def get(self, key: str, now: float | None = None) -> Payload | None:
        """The fresh payload under ``key`` (``cached=True``, ``source="cache"``), or None on a miss.

        ``now`` is epoch seconds (default: the current time). Never raises: a storage error is a miss.
        """
        if not self.enabled:
            self.misses += 1
            return None
        now = time.time() if now is None else now
        if now >= self._next_check:
            self._check_generation(now)
        payload = self._memory.get(key)
        if payload is not None:
            if payload.expires_at is None or payload.expires_at > now:
                self.hits += 1
                return payload
            del self._memory[key]
        entry = self._read(key)
        if entry is None or (entry.expires_at is not None and entry.expires_at <= now):
            self.misses += 1
            return None
        payload = Payload(
            entry.fields, source="cache", cached=True, fetched_at=entry.fetched_at, expires_at=entry.expires_at
        )
        self.hits += 1
        if self._memory_entries:
            self._memory[key] = payload
            if len(self._memory) > self._memory_entries:
                self._memory.popitem(last=False)
                self.evictions += 1
        return payload

    def get_stale(self, key: str, now: float | None = None) -> Payload | None:
        """The payload under ``key`` whether fresh or expired but still kept (see ``stale_s`` of :meth:`set`).

        A fresh entry is returned as :meth:`get` returns it. An expired one is a new Payload with
        ``stale=True``, ``cached=True``, ``source="cache"`` and its original ``fetched_at`` and
        ``expires_at`` (epoch seconds); it is never put in the memory layer. None when nothing is
        kept (or the cache is disabled or failing). Never raises.
        """
        fresh = self.get(key, now)
        if fresh is not None or not self.enabled:
            return fresh
        entry = self._read(key)  # the miss above was counted; a stale answer is not a hit
        if entry is None:
            return None
        return Payload(entry.fields, source="cache", cached=True, stale=True, fetched_at=entry.fetched_at,
                       expires_at=entry.expires_at)

    # --- writes --------------------------------------------------------------------------------

    def set(self, key: str, payload: Payload, ttl_s: float | None, *, stale_s: float = 0.0,
            tag: str | None = None) -> None:
        """Store ``payload`` under ``key``, fresh for ``ttl_s`` seconds (None: permanent).

        Sets ``payload.expires_at`` (epoch seconds: now + ``ttl_s``; None when permanent). The entry
        is kept ``stale_s`` seconds longer, for :meth:`get_stale`. ``tag`` groups entries for
        :meth:`evict_tag`. Replacing an existing entry makes every worker drop its memory layer.
        Never raises: a storage error is logged and the payload is simply not cached.
        """
        payload.expires_at = None if ttl_s is None else time.time() + ttl_s
        if not self.enabled or not self._available():
            return
        entry = CacheEntry(payload.fields, payload.source, payload.fetched_at, payload.expires_at)
        self._memory.pop(key, None)
        try:
            replaced = self._store(key, entry, ttl_s, stale_s, tag)
        except self._errors as exc:
            self._fault("write", exc)
            return
        if not self.healthy:
            self._recovered()
        if replaced:  # another worker may hold the old payload in memory: make every worker drop it
            self._replaced()

    def add(self, key: str, payload: Payload, ttl_s: float | None) -> bool:
        """Store ``payload`` under ``key`` for ``ttl_s`` seconds (None: permanent) only if no entry is there.

        For "first writer wins" markers (atomic across workers). Sets ``payload.expires_at`` like
        :meth:`set`. Returns whether this call stored it: False when the key is taken, and also when
        the cache is disabled or cannot be written (never raises).
        """
        payload.expires_at = None if ttl_s is None else time.time() + ttl_s
        if not self.enabled or not self._available():
            return False
        entry = CacheEntry(payload.fields, payload.source, payload.fetched_at, payload.expires_at)
        try:
            stored = self._store_new(key, entry, ttl_s)
        except self._errors as exc:
            self._fault("write", exc)
            return False
        if not self.healthy:
            self._recovered()
        if stored:
            self._memory.pop(key, None)  # an expired copy, if any
        return stored

    # --- health --------------------------------------------------------------------------------

    def check(self) -> bool:
        """Whether the cache works, for ``/health``. While unhealthy: tries one tiny probe write at most
        every :data:`PROBE_INTERVAL_S` seconds (a success clears the fault). Never raises."""
        if self.healthy or not self.enabled:
            return True
        if not self._probe_ready() or self.healthy:
            return self.healthy
        now = time.monotonic()
        if now < self._probe_at:
            return False
        self._probe_at = now + PROBE_INTERVAL_S
        try:
            works = self._probe()
        except self._errors as exc:
            self._fault("probe", exc)
            return False
        if not works:
            return False
        self._recovered()
        return True

    def stats(self) -> dict[str, Any]:
        """``{entries, sizeBytes, sizeLimitBytes, hits, misses, hitRate, memoryEntries, evictions,
        expiredRemoved, errors, healthy}`` of this process (hits/misses/evictions/errors since start:
        ``evictions`` counts in-memory LRU entries pushed out by newer ones, ``expiredRemoved`` entries
        removed by ``cull``; ``entries`` and ``sizeBytes`` (bytes) describe the shared layer, 0 when it
        cannot be read; ``hitRate`` is hits / (hits + misses), None before the first lookup). Never raises."""
        total = self.hits + self.misses
        try:
            entries, size = self._usage()
        except self._errors as exc:
            self._fault("stats", exc)
            entries = size = 0
        return {
            "entries": entries,
            "sizeBytes": size,
            "hits": self.hits,
            "misses": self.misses,
            "hitRate": round(self.hits / total, 4) if total else None,
            "sizeLimitBytes": self._size_limit,
            "memoryEntries": len(self._memory),
            "evictions": self.evictions,
            "expiredRemoved": self.expired_removed,
            "errors": self.errors,
            "healthy": self.healthy,
        }


class TTLCache(CacheBase):
    """TTL cache in ``directory`` with an in-process LRU of ``memory_entries`` payloads.

    **Parameters:**
    * **directory** - the diskcache directory (``<data dir>/cache``).
    * **memory_entries** - *(optional)* size of the in-memory LRU; 0 disables it. Defaults to 2048.
    * **size_limit_mb** - *(optional)* diskcache size limit in MiB. Defaults to 1024.
    * **enabled** - *(optional)* when False every lookup misses and nothing is stored.

    Never raises on a storage fault (see the module docstring). Attributes for ``/health`` and
    stats: ``hits``, ``misses``, ``errors`` (storage errors absorbed since start), ``healthy``
    (False from an error until the next successful write), ``last_error`` (the reason of the
    current fault, None when healthy) and ``last_error_at`` (epoch seconds). Lookups, writes,
    ``check`` and ``stats`` are :class:`CacheBase`'s; the disk layer, its faults (rebuild,
    reopen) and the invalidations through the generation file are this class's.
    """

    _errors = CACHE_ERRORS

    def __init__(
        self, directory: str | Path, *, memory_entries: int = 2048, size_limit_mb: int = 1024, enabled: bool = True
    ) -> None:
        super().__init__(memory_entries=memory_entries, size_limit_mb=size_limit_mb, enabled=enabled)
        self.directory = Path(directory)
        self._generation_path = self.directory / GENERATION_FILE
        self._db_path = self.directory / DB_FILE
        self._disk: diskcache.Cache | None = None
        self._db_ino = 0
        self._reopen_at = 0.0
        self._open()
        self._generation = self._read_generation()

    # --- the disk layer: open, rebuild, faults -----------------------------------------------

    def _connect(self) -> diskcache.Cache:
        self.directory.mkdir(parents=True, exist_ok=True)
        disk = diskcache.Cache(str(self.directory), timeout=DISK_TIMEOUT_S, size_limit=self._size_limit,
                               tag_index=True)
        try:
            self._db_ino = os.stat(self._db_path).st_ino
            self._generation_path.touch(exist_ok=True)
        except OSError:
            pass
        return disk

    def _open(self) -> bool:
        """(Re)open the disk layer; a corrupt db is deleted and recreated. Returns whether it is open.

        On failure the cache runs without its disk layer (every lookup misses) and a lookup tries
        again after :data:`REOPEN_INTERVAL_S`.
        """
        self._close_disk()
        try:
            try:
                self._disk = self._connect()
            except CACHE_ERRORS as exc:
                if not _is_broken_db(exc):
                    raise
                log.warning("cache db %s is unusable (%s): deleted and recreated (the cache is disposable)",
                            self._db_path, describe_error(exc))
                self._wipe_files()
                self._disk = self._connect()
                self._bump_generation()  # a worker that opened the old file meanwhile reopens within 0.1 s
        except CACHE_ERRORS as exc:
            self._disk = None
            self._reopen_at = time.monotonic() + REOPEN_INTERVAL_S
            self._fault("open", exc, rebuild=False)
            return False
        if not self.healthy:  # opening wrote the db's settings: the disk layer works again
            self._recovered()
        return True

    def _close_disk(self) -> None:
        disk, self._disk = self._disk, None
        if disk is not None:
            try:
                disk.close()
            except CACHE_ERRORS:
                pass

    def _wipe_files(self) -> None:
        """Delete the cache's files (db, WAL, value files), keeping the directory.

        Raises:
            OSError: a file could not be deleted (read-only file system).
        """
        self._close_disk()
        if not self.directory.is_dir():
            return
        for child in self.directory.iterdir():
            if child.name.startswith(DB_FILE):
                child.unlink(missing_ok=True)
            elif child.is_dir() and _VALUE_DIR.match(child.name):
                shutil.rmtree(child)

    def _rebuild(self, why: str) -> bool:
        """Wipe the disk layer and recreate it empty; every worker drops its LRU. Returns success."""
        log.warning("cache in %s rebuilt empty: %s", self.directory, why)
        self._memory.clear()
        try:
            self._wipe_files()
        except OSError as exc:
            self._fault("rebuild", exc, rebuild=False)
            self._disk = None
            self._reopen_at = time.monotonic() + REOPEN_INTERVAL_S
            return False
        opened = self._open()
        self._bump_generation()
        return opened

    def _same_db(self) -> bool:
        """Whether the open disk layer still is the file at ``<dir>/cache.db`` (not deleted or replaced)."""
        try:
            return os.stat(self._db_path).st_ino == self._db_ino
        except OSError:
            return False

    def _fault(self, op: str, exc: BaseException, *, rebuild: bool = True) -> None:
        """Record an absorbed storage error; rebuild the disk layer when the db itself is broken or gone."""
        reason = describe_error(exc)
        self._record_fault(op, reason)
        if rebuild and self._disk is not None and (_is_broken_db(exc) or not self._same_db()):
            self._rebuild(f"{op} failed: {reason}")

    def _log_recovery(self) -> None:
        log.warning("cache in %s works again (%d errors during the fault)", self.directory, self._burst)

    def _disk_or_reopen(self) -> diskcache.Cache | None:
        """The disk layer, reopened when it is closed (at most every :data:`REOPEN_INTERVAL_S`)."""
        if self._disk is None and time.monotonic() >= self._reopen_at:
            if self._open():
                self._memory.clear()
                self._bump_generation()
        return self._disk

    def _current_disk(self) -> diskcache.Cache | None:
        """The disk layer for an invalidation: reopened first when its file was deleted or replaced
        (``rm -rf cache/`` while running), so that the invalidation reaches the file the workers use."""
        if self._disk is not None and not self._same_db():
            log.warning("cache db %s was deleted or replaced: reopened", self._db_path)
            self._open()
        return self._disk or self._disk_or_reopen()

    def _lost_invalidation(self, op: str, exc: BaseException) -> None:
        """An entry could not be removed: remove everything (the cache is disposable), else bypass it."""
        self._fault(op, exc, rebuild=False)
        if not isinstance(exc, diskcache.Timeout):
            self._rebuild(f"{op} failed ({describe_error(exc)}), so nothing stale can be served")

    # --- generation file: cross-worker invalidation -------------------------------------------

    def _read_generation(self) -> int:
        try:
            return os.stat(self._generation_path).st_mtime_ns
        except OSError:
            return 0

    def _bump_generation(self) -> None:
        now = time.time_ns()
        try:
            try:
                os.utime(self._generation_path, ns=(now, now))
            except FileNotFoundError:
                self.directory.mkdir(parents=True, exist_ok=True)
                self._generation_path.touch()
        except OSError as exc:
            self._fault("invalidate", exc, rebuild=False)
        self._generation = self._read_generation()

    def _check_generation(self, now: float) -> None:
        """At most every :data:`GENERATION_CHECK_S` (from :meth:`get`): drop the LRU if another worker
        touched the generation file."""
        self._next_check = now + GENERATION_CHECK_S
        generation = self._read_generation()
        if generation != self._generation:
            self._generation_changed(generation)

    def _generation_changed(self, generation: int) -> None:
        """Another worker cleared, replaced or rebuilt: drop the LRU; reopen if the db was replaced."""
        self._memory.clear()
        self._generation = generation
        if self._disk is not None and not self._same_db():
            log.warning("cache db %s was deleted or replaced: reopened", self._db_path)
            self._open()
            self._generation = self._read_generation()

    def close(self) -> None:
        """Close the diskcache connection (idempotent; never raises)."""
        self._close_disk()

    # --- primitives of the shared logic (see CacheBase) ---------------------------------------

    def _available(self) -> bool:
        """Whether the disk layer is open (reopened at most every :data:`REOPEN_INTERVAL_S`)."""
        return self._disk is not None or self._disk_or_reopen() is not None

    def _fetch(self, key: str) -> bytes | None:
        disk = self._disk
        if disk is None:
            disk = self._disk_or_reopen()
            if disk is None:
                return None
        return disk.get(key)

    def _store(self, key: str, entry: CacheEntry, ttl_s: float | None, stale_s: float, tag: str | None) -> bool:
        disk = self._disk
        expire = None if ttl_s is None else ttl_s + max(0.0, stale_s)
        replaced = key in disk
        disk.set(key, _encode(entry), expire=expire, tag=tag)
        return replaced

    def _store_new(self, key: str, entry: CacheEntry, ttl_s: float | None) -> bool:
        return bool(self._disk.add(key, _encode(entry), expire=ttl_s))

    def _replaced(self) -> None:
        self._bump_generation()

    def _usage(self) -> tuple[int, int]:
        disk = self._disk
        if disk is None:
            return 0, 0
        return len(disk), int(disk.volume())

    def _probe_ready(self) -> bool:
        return self._available()

    def _probe(self) -> bool:
        self._disk.set(_PROBE_KEY, b"", expire=1)
        return True

    # --- invalidations ----------------------------------------------------------------------------

    def delete(self, key: str) -> bool:
        """Remove one key everywhere (every worker drops its LRU). Returns whether it existed.

        Never raises. When the entry cannot be removed (disk full, I/O error) the whole cache is
        wiped instead, so the old value is never served again.
        """
        self._memory.pop(key, None)
        existed = False
        disk = self._current_disk()
        if disk is not None:
            try:
                existed = bool(disk.delete(key))
            except CACHE_ERRORS as exc:
                self._lost_invalidation("delete", exc)
        self._bump_generation()
        return existed

    def delete_pattern(self, pattern: str) -> int:
        """Remove every key matching a glob ``pattern`` (``tournament:*``); returns how many went.

        Never raises (a failure wipes the whole cache, as :meth:`delete` does).
        """
        count = 0
        disk = self._current_disk()
        if disk is not None:
            try:
                for key in list(disk.iterkeys()):
                    if isinstance(key, str) and fnmatch.fnmatchcase(key, pattern):
                        count += bool(disk.delete(key))
            except CACHE_ERRORS as exc:
                self._lost_invalidation("invalidate", exc)
        self._memory.clear()
        self._bump_generation()
        return count

    def evict_tag(self, tag: str) -> int:
        """Remove every entry stored with ``tag`` (see :meth:`set`) everywhere: every worker drops its
        memory layer. Returns how many entries went. Never raises (a failure wipes the whole cache,
        as :meth:`delete` does)."""
        count = 0
        disk = self._current_disk()
        if disk is not None:
            try:
                count = int(disk.evict(tag))
            except CACHE_ERRORS as exc:
                self._lost_invalidation("evict", exc)
        self._memory.clear()
        self._bump_generation()
        return count

    def clear(self) -> int:
        """Empty the cache (every worker drops its LRU); returns how many entries went.

        Works on a full disk, a deleted directory or a corrupt db: when diskcache cannot clear,
        the cache files are deleted and recreated. Never raises.
        """
        self._memory.clear()
        count = 0
        disk = self._current_disk()
        if disk is not None:
            try:
                count = int(disk.clear())
            except CACHE_ERRORS as exc:
                self._lost_invalidation("clear", exc)
            else:
                if not self.healthy:
                    self._recovered()
        self._bump_generation()
        return count

    def cull(self) -> int:
        """Remove expired entries (past their stale window) from disk; returns how many went (0 on error)."""
        disk = self._current_disk()
        if disk is None:
            return 0
        try:
            removed = int(disk.expire())
        except CACHE_ERRORS as exc:
            self._fault("cull", exc)
            return 0
        self.expired_removed += removed
        return removed

    @property
    def usable(self) -> bool:
        """False while the disk layer cannot be opened at all (every lookup misses); True otherwise,
        also when the cache is disabled by configuration."""
        return self._disk is not None or not self.enabled
