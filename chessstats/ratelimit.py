"""Inbound rate limits per client address, shared by every worker process of a data dir.

Two fixed windows per client, each starting at the client's first request in it:

* the **general** window: every ``/api`` request (``[ratelimit] max_requests`` per ``window_s``);
* the **expensive** window: the routes of :data:`EXPENSIVE_ROUTES` on top
  (``expensive_max_requests`` per ``expensive_window_s``).

The counters live in ``<data dir>/ratelimit.table`` (:class:`SharedWindows`): a fixed-size table of
64-byte slots, memory-mapped by every worker and updated under an ``flock`` of the file. One
request costs one lock/unlock pair and a few ``struct`` operations on the mapping (a couple of
microseconds; no system call writes anything: the kernel writes the dirty page back on its own).
A SQLite row per client was measured at 20-60 µs per request (a write transaction), more than the
5 % budget of a cached GET (~7 µs), hence the table.

When the file cannot be used (read-only or full data dir) the table lives in this process's memory
(limits then hold per worker, not across workers) and that is logged once.
"""

from __future__ import annotations

import fcntl
import ipaddress
import logging
import math
import mmap
import os
import struct
import time
import zlib
from dataclasses import dataclass
from hashlib import blake2b
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Route templates (parameters written ``*``, one path segment each) limited by the expensive window.
#: A new expensive route is covered by adding its template here.
EXPENSIVE_ROUTES: tuple[str, ...] = (
    "/api/tournaments/*/games",
    "/api/players/*/*/games",
)

_MAGIC = b"CSRL0001"
_HEADER = struct.Struct("<8sI52x")  # magic, slots; 64 bytes
#: key (40 bytes, NUL padded), general window end (epoch s), general count, expensive window end, count
_SLOT = struct.Struct("<40sdIdI")
_KEY_BYTES = 40
#: Slots of the table (a power of two): 8192 x 64 bytes = 512 KiB.
DEFAULT_SLOTS = 8192
#: Slots looked at for one key (open addressing); when all hold live clients the one whose windows
#: end first is taken over (that client starts new windows: lenient, never stricter).
PROBES = 16
_MAX_COUNT = 0xFFFFFFFF


def _slot_key(client: str) -> bytes:
    raw = client.encode("utf-8", "replace")
    if len(raw) > _KEY_BYTES:
        raw = blake2b(raw, digest_size=_KEY_BYTES // 2).hexdigest().encode()
    return raw.ljust(_KEY_BYTES, b"\0")


class SharedWindows:
    """The counters of every client: a memory-mapped table shared through a file (or private).

    **Parameters:**
    * **path** - the table file (``<data dir>/ratelimit.table``); None: this process only.
    * **slots** - table size, a power of two (clients tracked at once before take-overs).
    """

    def __init__(self, path: str | Path | None, slots: int = DEFAULT_SLOTS) -> None:
        if slots & (slots - 1):
            raise ValueError("slots must be a power of two")
        self.path = Path(path) if path is not None else None
        self.slots = slots
        self._mask = slots - 1
        self._size = _HEADER.size + slots * _SLOT.size
        self._fd: int | None = None
        self.shared = False
        self.takeovers = 0
        self._mm = self._open()

    def _open(self) -> mmap.mmap:
        if self.path is not None:
            try:
                return self._open_file(self.path)
            except OSError as exc:
                if self._fd is not None:
                    os.close(self._fd)
                    self._fd = None
                log.warning("rate limits: cannot use %s (%s): counting per worker process instead of across "
                            "workers", self.path, exc.strerror or exc)
        mm = mmap.mmap(-1, self._size)
        _HEADER.pack_into(mm, 0, _MAGIC, self.slots)
        return mm

    def _open_file(self, path: Path) -> mmap.mmap:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self._fd = fd
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            header = os.pread(fd, _HEADER.size, 0)
            valid = (len(header) == _HEADER.size and _HEADER.unpack(header) == (_MAGIC, self.slots)
                     and os.fstat(fd).st_size == self._size)
            if not valid:  # new, damaged or of another size: start over (limits are re-learnt)
                os.ftruncate(fd, 0)
            # blocks reserved now: a write to the mapping can never hit a full disk (SIGBUS)
            os.posix_fallocate(fd, 0, self._size)
            if not valid:
                os.pwrite(fd, _HEADER.pack(_MAGIC, self.slots), 0)
            mm = mmap.mmap(fd, self._size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
        self.shared = True
        return mm

    def hit(self, client: str, now: float, window_s: float, expensive_window_s: float | None
            ) -> tuple[int, float, int, float]:
        """Count one request of ``client`` at ``now`` (epoch seconds).

        Args:
            client: the client's key (its address).
            now: the current wall-clock time, epoch seconds (shared by every process).
            window_s: length of the general window, seconds.
            expensive_window_s: length of the expensive window when the request is an expensive
                one, else None (that window is not counted).

        Returns:
            ``(count, window_end, expensive_count, expensive_window_end)`` after this request;
            the window ends are epoch seconds (the expensive pair is ``(0, 0.0)`` when not counted
            and never was).
        """
        key = _slot_key(client)
        mm = self._mm
        fd = self._fd
        start = zlib.crc32(key) & self._mask
        slot_size, mask, header = _SLOT.size, self._mask, _HEADER.size
        unpack_from = _SLOT.unpack_from
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            found = -1
            reuse = -1
            oldest, oldest_end = -1, math.inf
            for i in range(PROBES):
                off = header + ((start + i) & mask) * slot_size
                k = mm[off:off + _KEY_BYTES]
                if k == key:
                    found = off
                    break
                if k[0] == 0:  # never used: the key is not further on
                    if reuse < 0:
                        reuse = off
                    break
                if reuse < 0:
                    _, g_end, _, e_end, _ = unpack_from(mm, off)
                    end = max(g_end, e_end)
                    if end <= now:
                        reuse = off
                    elif end < oldest_end:
                        oldest, oldest_end = off, end
            if found >= 0:
                _, g_end, g_n, e_end, e_n = unpack_from(mm, found)
                off = found
            else:
                if reuse < 0:
                    reuse = oldest
                    self.takeovers += 1
                    if self.takeovers == 1:
                        log.warning("rate limits: more live clients than the table holds near one slot; a client "
                                    "was given new windows (lenient)")
                off = reuse
                g_end, g_n, e_end, e_n = 0.0, 0, 0.0, 0
            if g_end <= now or g_end - now > window_s:  # over, or a clock that jumped back
                g_end, g_n = now + window_s, 0
            g_n = min(g_n + 1, _MAX_COUNT)
            if expensive_window_s is not None:
                if e_end <= now or e_end - now > expensive_window_s:
                    e_end, e_n = now + expensive_window_s, 0
                e_n = min(e_n + 1, _MAX_COUNT)
            _SLOT.pack_into(mm, off, key, g_end, g_n, e_end, e_n)
        finally:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
        return g_n, g_end, e_n, e_end

    def close(self) -> None:
        """Unmap the table and close its file."""
        try:
            self._mm.close()
        except (BufferError, ValueError):
            pass
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None


def route_template(path: str) -> str:
    """A Sanic route path (``api/tournaments/<tid:str>/games``) as a template (``/api/tournaments/*/games``)."""
    parts = [("*" if p.startswith("<") else p) for p in path.strip("/").split("/")]
    return "/" + "/".join(parts)


def is_expensive(template: str, patterns: tuple[str, ...] = EXPENSIVE_ROUTES) -> bool:
    """Whether a route template matches one of ``patterns`` (``*`` stands for one parameter segment)."""
    segments = template.strip("/").split("/")
    for pattern in patterns:
        want = pattern.strip("/").split("/")
        if len(want) == len(segments) and all(w == s for w, s in zip(want, segments, strict=True)):
            return True
    return False


@dataclass(frozen=True, slots=True)
class Decision:
    """The verdict on one request: ``allowed``; the limit shown in the headers (``limit`` requests per
    ``window_s`` seconds, ``remaining``, ``reset_s``: whole seconds until its window ends);
    ``retry_after_s`` when refused."""

    allowed: bool
    limit: int
    remaining: int
    reset_s: int
    window_s: float
    retry_after_s: int | None = None

    def raw_headers(self) -> tuple[tuple[bytes, bytes], ...]:
        """``RateLimit-Limit``, ``-Remaining``, ``-Reset`` (and ``Retry-After`` when refused), encoded."""
        headers = ((b"ratelimit-limit", b"%d" % self.limit), (b"ratelimit-remaining", b"%d" % self.remaining),
                   (b"ratelimit-reset", b"%d" % self.reset_s))
        if self.retry_after_s is not None:
            headers += ((b"retry-after", b"%d" % self.retry_after_s),)
        return headers


def _ceil_s(seconds: float) -> int:
    return max(1, math.ceil(seconds - 1e-6))


class RateLimiter:
    """The ``[ratelimit]`` policy over a :class:`SharedWindows` table.

    **Parameters:**
    * **config** - the ``[ratelimit]`` table (:class:`~chessstats.config.RateLimitConfig`).
    * **table_path** - the shared table file; None: this process only.
    """

    def __init__(self, config: Any, table_path: str | Path | None) -> None:
        self.window_s = float(config.window_s)
        self.max_requests = int(config.max_requests)
        self.expensive_window_s = float(config.expensive_window_s)
        self.expensive_max = int(config.expensive_max_requests)
        self._trusted = tuple(ipaddress.ip_network(p.strip(), strict=False) for p in config.trusted_proxies)
        self._trust_cache: dict[str, bool] = {}
        self._key_cache: dict[str, str] = {}
        self._route_cache: dict[str, bool] = {}
        self.table = SharedWindows(table_path)
        self.refused = 0

    # --- client address ----------------------------------------------------------------------

    def trusted(self, address: str) -> bool:
        """Whether ``address`` (a peer) is one of ``trusted_proxies``; not an IP address: False."""
        known = self._trust_cache.get(address)
        if known is None:
            try:
                ip = ipaddress.ip_address(address.split("%", 1)[0])
                if ip.version == 6 and ip.ipv4_mapped is not None:
                    ip = ip.ipv4_mapped
                known = any(ip in net for net in self._trusted)
            except ValueError:
                known = False
            if len(self._trust_cache) > 4096:
                self._trust_cache.clear()
            self._trust_cache[address] = known
        return known

    def client_address(self, peer: str, forwarded_for: list[str] | None) -> str:
        """The client of a request from ``peer`` carrying ``X-Forwarded-For`` values ``forwarded_for``.

        The header is used only when ``peer`` is a trusted proxy: the client is then the rightmost
        address in it that is not itself a trusted proxy (the leftmost when all are).
        """
        if not forwarded_for or not self._trusted or not self.trusted(peer):
            return peer
        hops = [h.strip() for value in forwarded_for for h in value.split(",") if h.strip()]
        for hop in reversed(hops):
            if not self.trusted(hop):
                return hop
        return hops[0] if hops else peer

    def client_key(self, address: str) -> str:
        """The key an address is counted under: the address, an IPv6 address's /64 network (one
        host's usual allocation), an IPv4-mapped IPv6 address as IPv4."""
        key = self._key_cache.get(address)
        if key is None:
            key = address
            try:
                ip = ipaddress.ip_address(address.split("%", 1)[0])
                if ip.version == 6:
                    key = str(ip.ipv4_mapped) if ip.ipv4_mapped is not None else str(
                        ipaddress.ip_network(f"{ip}/64", strict=False))
                else:
                    key = str(ip)
            except ValueError:
                pass
            if len(self._key_cache) > 65536:
                self._key_cache.clear()
            self._key_cache[address] = key
        return key

    # --- verdict -------------------------------------------------------------------------------

    def expensive(self, route_path: str | None) -> bool:
        """Whether a Sanic route path (None: no route matched) is limited by the expensive window."""
        if route_path is None:
            return False
        known = self._route_cache.get(route_path)
        if known is None:
            known = self._route_cache[route_path] = is_expensive(route_template(route_path))
        return known

    def check(self, client: str, expensive: bool, now: float | None = None) -> Decision:
        """Count one request of ``client`` (a key from :meth:`client_key`) and decide on it.

        The headers show the window closest to refusing (the one with fewer requests left; the
        expensive one on a tie). Refused requests count too (a client that keeps trying does not
        get a fresh window sooner).
        """
        now = time.time() if now is None else now
        g_n, g_end, e_n, e_end = self.table.hit(client, now, self.window_s,
                                                self.expensive_window_s if expensive else None)
        g_left = self.max_requests - g_n
        if expensive:
            e_left = self.expensive_max - e_n
            if e_left <= g_left:
                limit, left, end, window = self.expensive_max, e_left, e_end, self.expensive_window_s
            else:
                limit, left, end, window = self.max_requests, g_left, g_end, self.window_s
        else:
            limit, left, end, window = self.max_requests, g_left, g_end, self.window_s
        reset = _ceil_s(end - now)
        if left >= 0:
            return Decision(True, limit, left, reset, window)
        self.refused += 1
        return Decision(False, limit, 0, reset, window, reset)

    def close(self) -> None:
        """Release the shared table."""
        self.table.close()
