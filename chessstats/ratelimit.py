"""Inbound rate limits per client address, shared by every worker process of a data dir.

Two fixed windows, aligned on the epoch (the window of ``now`` is ``int(now // window_s)``, the
same in every process; ``RateLimit-Reset`` is the time left in it):

* the **general** window: every ``/api`` request (``[ratelimit] max_requests`` per ``window_s``);
* the **expensive** window: the routes of :data:`EXPENSIVE_ROUTES` on top
  (``expensive_max_requests`` per ``expensive_window_s``).

The counts live in ``<data dir>/ratelimit.table`` (:class:`SharedWindows`): a fixed-size table
memory-mapped by every worker. A slot holds a client and one column of counts per worker; a worker
writes only its own column and sums every column to decide, so a counted request takes no lock and
no system call (an ``flock`` pair alone is 1 µs on this machine and a SQLite row per client
16-60 µs, against a 5 % budget of 2-3 µs on a ~45 µs cached GET). Only taking a slot for a new
client locks the file. The kernel writes the dirty pages back on its own.

:meth:`RateLimiter.admit` is the request path: each process keeps, per peer address, the client's
key and slot offset (re-checked against the slot's key on every call, so a slot another process
took over is never counted into), and the window index and the format of the ``RateLimit-*`` lines
change at most once a second, so a request costs a few word accesses on the mapping and one
formatting of its remaining count.

**Allowances.** Even those word accesses cost a cached GET more than the limiter's 5 % (each is a
few hundred instructions of CPython). So an allowed request of a client that is far from its limit
also *claims* part of what is left: with ``r`` requests left after it, ``r // (CLAIM_SHARE x
workers)`` more are counted in this worker's column at once and kept in the process as that client's
allowance until the end of the current second (the moment ``RateLimit-Reset`` changes). The next
requests of that client in this worker spend the allowance without touching the table
(:meth:`RateLimiter.inline_source`: a dict lookup and the next item of an iterator that formats the
header lines of each remaining count); what a second leaves unspent is given back (the column's
count goes down by it) by the first request of the next second or by
:meth:`RateLimiter.release_claims`, which the server runs every second. What this changes:

* with one worker, nothing a client can see: the allowance never exceeds what is left, and
  ``RateLimit-Remaining`` counts it down exactly;
* with several, another worker's unspent allowance counts as used for up to about a second: the
  client may see ``RateLimit-Remaining`` step down by more than one and, if it spends the rest of
  its window within that second, be refused early by up to the others' unspent allowances until they
  are given back. The limit is never exceeded (each worker claims at most ``1 / (CLAIM_SHARE x
  workers)`` of what is left, counted before it is spent).

No allowance is claimed under ``CLAIM_MIN x CLAIM_SHARE x workers`` requests left (128 with one
worker): with the default 100 a minute, or near any limit, every request is counted in the shared
table one by one, as without allowances.

When the file cannot be used (read-only or full data dir) the table lives in this process's memory
(limits then hold per worker, not across workers) and that is logged once.
"""

from __future__ import annotations

import fcntl
import ipaddress
import logging
import math
import mmap
import operator
import os
import re
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from hashlib import blake2b
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
_time = time.time

#: Route templates limited by the expensive window (:func:`is_expensive`): ``*`` is any one path
#: segment, a parameter or a literal one (the players' platform is a literal segment of each route:
#: ``/api/players/lichess/<username>/games``, ``/api/players/chesscom/<username>/games``). A new
#: expensive route is covered by adding its template here.
EXPENSIVE_ROUTES: tuple[str, ...] = (
    "/api/tournaments/*/games",
    "/api/players/*/*/games",
)

_MAGIC = b"CSRL0003"
_HEADER = struct.Struct("<8sII48x")  # magic, slots, columns; 64 bytes
_KEY_BYTES = 40
#: After the key: its tag (``crc32`` of the key, never 0), the word a request checks to know that the
#: slot still holds its client (another process may have taken the slot over for another one), and 4
#: bytes of padding (each column's general pair is an aligned 64-bit word).
_TAG = struct.Struct("<I4x")
#: Columns of counters per slot: one per worker process (worker ``n`` writes column ``n % COLUMNS``).
COLUMNS = 8
#: A column: general window index, its count, expensive window index, its count (window index =
#: ``int(epoch seconds // window)``: fixed windows aligned on the epoch, the same in every process).
_COLUMN = struct.Struct("<IIII")
_SLOT_BYTES = _KEY_BYTES + _TAG.size + COLUMNS * _COLUMN.size
#: Slots of the table: 8192 x 176 bytes = 1.4 MiB.
DEFAULT_SLOTS = 8192
#: Slots looked at for one key (open addressing); when all hold live clients the first is taken
#: over (that client starts with fresh counts: lenient, never stricter).
PROBES = 16
_MAX_COUNT = 0xFFFFFFFF
#: An allowed request of a client with ``r`` requests left claims ``r // (CLAIM_SHARE * columns read)``
#: more for the rest of the second (see the module): a worker never holds more than an eighth of what
#: was left divided by the workers.
CLAIM_SHARE = 8
#: The smallest allowance claimed: a client with fewer than ``CLAIM_MIN * CLAIM_SHARE * workers``
#: requests left (1,024 with 8 workers, 128 with one: always under the default 100 a minute) claims
#: none, and each of its requests is counted in the table.
CLAIM_MIN = 16


def _slot_key(client: str) -> bytes:
    raw = client.encode("utf-8", "replace")
    if len(raw) > _KEY_BYTES:
        raw = blake2b(raw, digest_size=_KEY_BYTES // 2).hexdigest().encode()
    return raw.ljust(_KEY_BYTES, b"\0")


def worker_column() -> int:
    """This process's column: its Sanic server number (``Sanic-Server-<n>-<k>``), 0 in one process."""
    match = re.match(r"^Sanic-Server-(\d+)-", os.environ.get("SANIC_WORKER_NAME", ""))
    return int(match.group(1)) % COLUMNS if match else 0


class SharedWindows:
    """Every client's counts: a memory-mapped table shared through a file (or private to a process).

    A slot holds a client key, its tag and one column of counts per worker process. A process only
    ever writes its own column (no lock: one writer per column) and reads the columns of every worker
    to decide; the counts are read and written as 32-bit words through a ``memoryview`` of the
    mapping, so a request costs a few item accesses and no system call. Only taking a slot for a
    new client is done under an ``flock`` of the file. Each column write is ordered so that a
    concurrent reader can only under-count, never see an old count in a new window.

    **Parameters:**
    * **path** - the table file (``<data dir>/ratelimit.table``); None: this process only.
    * **window_s** / **expensive_window_s** - the two windows, seconds.
    * **column** - the column this process writes (:func:`worker_column`).
    * **columns_read** - how many columns hold workers (the server's worker count, at most
      :data:`COLUMNS`); more workers share columns (and may lose a count now and then).
    * **slots** - table size, a power of two (clients tracked at once before take-overs).
    """

    def __init__(self, path: str | Path | None, window_s: float = 60.0, expensive_window_s: float = 300.0, *,
                 column: int = 0, columns_read: int = 1, slots: int = DEFAULT_SLOTS) -> None:
        if slots & (slots - 1):
            raise ValueError("slots must be a power of two")
        self.path = Path(path) if path is not None else None
        self.window_s = float(window_s)
        self.expensive_window_s = float(expensive_window_s)
        self.column = column % COLUMNS
        self.columns_read = max(self.column + 1, min(COLUMNS, columns_read))
        # 32-bit word offsets from a slot's tag word: each column read (its general index; count,
        # expensive index and count follow), and this process's own column
        self._columns = tuple(2 + 4 * c for c in range(self.columns_read))
        self._own = 2 + 4 * self.column
        self.slots = slots
        self._mask = slots - 1
        self._size = _HEADER.size + slots * _SLOT_BYTES
        self._fd: int | None = None
        self._where: dict[bytes, int] = {}
        self.shared = False
        self.takeovers = 0
        self._mm = self._open()
        self._words = memoryview(self._mm).cast("I")

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
        _HEADER.pack_into(mm, 0, _MAGIC, self.slots, COLUMNS)
        return mm

    def _open_file(self, path: Path) -> mmap.mmap:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self._fd = fd
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            header = os.pread(fd, _HEADER.size, 0)
            valid = (len(header) == _HEADER.size and _HEADER.unpack(header) == (_MAGIC, self.slots, COLUMNS)
                     and os.fstat(fd).st_size == self._size)
            if not valid:  # new, damaged or of another layout: start over (limits are re-learnt)
                os.ftruncate(fd, 0)
            # blocks reserved now: a write to the mapping can never hit a full disk (SIGBUS)
            os.posix_fallocate(fd, 0, self._size)
            if not valid:
                os.pwrite(fd, _HEADER.pack(_MAGIC, self.slots, COLUMNS), 0)
            mm = mmap.mmap(fd, self._size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
        self.shared = True
        return mm

    def locate(self, client: str) -> tuple[bytes, int, int]:
        """``(slot key, first slot looked in, tag)`` of ``client`` (for :meth:`hit_key`)."""
        key = _slot_key(client)
        crc = zlib.crc32(key)
        return key, crc & self._mask, crc or 1

    def hit(self, client: str, now: float, expensive: bool) -> tuple[int, float, int, float]:
        """Count one request of ``client`` at ``now`` (epoch seconds, shared by every process).

        Args:
            client: the client's key (its address).
            now: the current wall-clock time, epoch seconds.
            expensive: also count it in the expensive window.

        Returns:
            ``(count, window_end, expensive_count, expensive_window_end)`` over every worker after this
            request; window ends in epoch seconds (the expensive pair is ``(0, 0.0)`` when not counted).
        """
        return self.hit_key(*self.locate(client), now, expensive)

    def hit_key(self, key: bytes, start: int, tag: int, now: float, expensive: bool) -> tuple[int, float, int, float]:
        """:meth:`hit` for a client already :meth:`locate`-d (same result)."""
        w = self._words
        t = self._where.get(key)
        if t is None or w[t] != tag:
            t = self._find(key, start, tag, now)
        g_idx = int(now // self.window_s)
        g_n = self._count(w, t, 0, g_idx)
        if not expensive:
            return g_n, (g_idx + 1) * self.window_s, 0, 0.0
        e_idx = int(now // self.expensive_window_s)
        e_n = self._count(w, t, 2, e_idx)
        return g_n, (g_idx + 1) * self.window_s, e_n, (e_idx + 1) * self.expensive_window_s

    def _count(self, w: memoryview, t: int, which: int, idx: int) -> int:
        """Count one request in window ``idx`` (``which``: 0 general, 2 expensive) of the slot whose tag
        is word ``t``; the count over every column after it."""
        n = 1
        for c in self._columns:
            if w[t + c + which] == idx:
                n += w[t + c + which + 1]
        own = t + self._own + which
        if w[own] == idx:
            w[own + 1] = min(w[own + 1] + 1, _MAX_COUNT)
        else:  # a new window in this column: the count first, then the index (a reader under-counts)
            w[own + 1] = 1
            w[own] = idx
        return n

    def _find(self, key: bytes, start: int, tag: int, now: float) -> int:
        """The tag word of ``key``'s slot: found (no lock), or taken for it under the file's lock."""
        off = self._probe(key, start, tag, now, claim=False)
        if off < 0:
            fd = self._fd
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                off = self._probe(key, start, tag, now, claim=True)
            finally:
                if fd is not None:
                    fcntl.flock(fd, fcntl.LOCK_UN)
        if len(self._where) > 65536:
            self._where.clear()
        t = self._where[key] = (off + _KEY_BYTES) // 4
        return t

    def _probe(self, key: bytes, start: int, tag: int, now: float, *, claim: bool) -> int:
        mm, mask = self._mm, self._mask
        g_idx, e_idx = int(now // self.window_s), int(now // self.expensive_window_s)
        free = -1
        for i in range(PROBES):
            off = _HEADER.size + ((start + i) & mask) * _SLOT_BYTES
            k = mm[off:off + _KEY_BYTES]
            if k == key:
                return off
            if k[0] == 0:  # never used: the key is not further on
                if free < 0:
                    free = off
                break
            if claim and free < 0:
                cols = struct.unpack_from("<" + "I" * 4 * COLUMNS, mm, off + _KEY_BYTES + _TAG.size)
                if all(cols[c] < g_idx and cols[c + 2] < e_idx for c in range(0, len(cols), 4)):
                    free = off  # every count of that client is from a past window
        if not claim:
            return -1
        if free < 0:
            free = _HEADER.size + start * _SLOT_BYTES
            self.takeovers += 1
            if self.takeovers == 1:
                log.warning("rate limits: more live clients than the table holds near one slot; a client was "
                            "given fresh counts (lenient)")
        # counts first, the key, the tag last: a process still holding the old client sees the tag change
        mm[free + _KEY_BYTES + _TAG.size:free + _SLOT_BYTES] = bytes(_SLOT_BYTES - _KEY_BYTES - _TAG.size)
        mm[free:free + _KEY_BYTES] = key
        _TAG.pack_into(mm, free + _KEY_BYTES, tag)
        return free

    def close(self) -> None:
        """Unmap the table and close its file."""
        try:
            self._words.release()
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
    """Whether a route template (:func:`route_template`: ``/api/players/lichess/*/games``) matches one of
    ``patterns``: as many segments, each equal or matched by a pattern's ``*`` (any one segment, a
    parameter or a literal one)."""
    segments = template.strip("/").split("/")
    for pattern in patterns:
        want = pattern.strip("/").split("/")
        if len(want) == len(segments) and all(w in ("*", s) for w, s in zip(want, segments, strict=True)):
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


class Refusal(bytes):
    """The headers of a refused request (:meth:`RateLimiter.admit`): ``RateLimit-*`` and ``Retry-After``
    lines, with the refused window's ``limit`` (requests), ``window_s`` and ``reset_s`` (whole seconds
    until it ends) as attributes."""

    limit: int = 0
    window_s: float = 0.0
    reset_s: int = 0

    @classmethod
    def of(cls, limit: int, window_s: float, reset_s: int) -> Refusal:
        """The refusal of a window of ``limit`` requests per ``window_s`` seconds that ends in ``reset_s``."""
        refusal = cls(b"ratelimit-limit: %d\r\nratelimit-remaining: 0\r\nratelimit-reset: %d\r\nretry-after: %d"
                      % (limit, reset_s, reset_s))
        refusal.limit, refusal.window_s, refusal.reset_s = limit, window_s, reset_s
        return refusal


#: What :meth:`RateLimiter.admit` returns: the ``RateLimit-Limit``, ``-Remaining`` and ``-Reset`` header
#: lines (joined by CRLF, no trailing CRLF) of an allowed request, a :class:`Refusal` (the same lines and
#: ``Retry-After``) for a refused one.
Verdict = bytes


def _ceil_s(seconds: float) -> int:
    return max(1, math.ceil(seconds - 1e-6))


class RateLimiter:
    """The ``[ratelimit]`` policy over a :class:`SharedWindows` table.

    **Parameters:**
    * **config** - the ``[ratelimit]`` table (:class:`~chessstats.config.RateLimitConfig`).
    * **table_path** - the shared table file; None: this process only.
    """

    def __init__(self, config: Any, table_path: str | Path | None, *, column: int = 0, workers: int = 1) -> None:
        self.window_s = float(config.window_s)
        self.max_requests = int(config.max_requests)
        self.expensive_window_s = float(config.expensive_window_s)
        self.expensive_max = int(config.expensive_max_requests)
        self._trusted = tuple(ipaddress.ip_network(p.strip(), strict=False) for p in config.trusted_proxies)
        self._trust_cache: dict[str, bool] = {}
        self._key_cache: dict[str, str] = {}
        self._route_cache: dict[str, bool] = {}
        self._clients: dict[str, list[Any]] = {}
        self._peers: dict[str | tuple[str, ...], list[Any]] = {}
        #: The entries holding an allowance (:meth:`admit`), by ``id``: :meth:`release_claims` gives
        #: back those whose second has ended.
        self._claims: dict[int, list[Any]] = {}
        #: The header lines of each peer key's allowance of this second (:meth:`inline_source`).
        self._allowed: dict[str | tuple[str, ...], Any] = {}
        self.table = SharedWindows(table_path, self.window_s, self.expensive_window_s, column=column,
                                   columns_read=workers)
        self.refused = 0
        #: The state :meth:`inline_source`'s code reads, as the globals of the functions that inline it.
        self.fast: dict[str, Any] = {
            "_rl_peers": self._peers, "_rl_allowed": self._allowed, "_rl_words": self.table._words,
            "_rl_mm": self.table._mm,
            "_rl_unpack": struct.Struct("<I4x" + "II8x" * len(self.table._columns)).unpack_from,
            "_rl_max": self.max_requests,
            "_rl_cap": min(self.max_requests, _MAX_COUNT - 1), "_rl_until": 0.0, "_rl_g": -1,
            "_rl_lines": b"",
        }
        self.admit = self._request_path()

    # --- client address ----------------------------------------------------------------------

    @property
    def trusts_proxies(self) -> bool:
        """Whether ``trusted_proxies`` names any (else ``X-Forwarded-For`` is never read)."""
        return bool(self._trusted)

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

    def _request_path(self) -> Callable[..., Verdict]:
        """Build :meth:`admit`: one closure over the table's words and this second's encoded headers.

        It does what :meth:`SharedWindows.hit_key` does for the general window, inline (a request pays
        one Python call for the limiter, and reads its state from closure cells, not attributes): per
        peer address the client's slot is located once per process and re-checked by its tag on every
        call; the window index and the header lines' format are recomputed only when the whole
        seconds left in the window change (and published in :attr:`fast` for :meth:`inline_source`'s
        code; the allowances of the second that ended are given back then). An allowed request far
        from the limit also claims an allowance for the rest of this second (see the module), which
        the inlined path then spends. A forwarded client is found once per (peer, header values)
        (:meth:`client_address`); expensive routes take the general path (:meth:`SharedWindows.hit_key`).
        """
        table = self.table
        words, find, columns, own_at = table._words, table._find, table._columns, table._own
        single = len(columns) == 1
        peers, peer_entry, entry_of, client_of = self._peers, self._peer_entry, self._entry, self.client_of
        claims, allowed, release = self._claims, self._allowed, self._release
        trusted = bool(self._trusted)
        max_requests, window_s = self.max_requests, self.window_s
        claim_share = CLAIM_SHARE * len(columns)
        admit_expensive = self._admit_expensive
        fast = self.fast
        until, g_idx, lines = 0.0, -1, b""
        refused = Refusal.of(max_requests, window_s, 1)

        def admit(peer: str, forwarded_for: list[str] | None, expensive: bool = False, now: float | None = None
                  ) -> Verdict:
            """Count one ``/api`` request from ``peer`` (with its ``X-Forwarded-For`` values) and decide on it.

            Args:
                peer: the socket's peer address.
                forwarded_for: the request's ``X-Forwarded-For`` values (None: none); used only from a
                    trusted proxy (:meth:`RateLimiter.client_address`).
                expensive: the route is one of :data:`EXPENSIVE_ROUTES` (:meth:`RateLimiter.expensive`).
                now: the current time (``time.time()``, epoch seconds), if the caller has it.

            Returns:
                A :data:`Verdict`: allowed, the ``RateLimit-Limit``, ``-Remaining`` and ``-Reset`` lines
                (``bytes``, joined by CRLF); refused, a :class:`Refusal` (a ``bytes`` subclass: the same
                lines and ``Retry-After``). The headers show the window closest to refusing (the
                expensive one on a tie). Refused requests count too (a client that keeps trying does
                not get a fresh window sooner).
            """
            nonlocal until, g_idx, lines, refused
            if now is None:
                now = _time()
            if forwarded_for and trusted:  # kept per (peer, X-Forwarded-For values) too, for the inlined path
                key: str | tuple[str, ...] = (peer, *forwarded_for)
                entry = peers.get(key)
                if entry is None:
                    if len(peers) > 65536:
                        peers.clear()
                    entry = peers[key] = entry_of(client_of(peer, forwarded_for), now)
            else:
                key = peer
                entry = peers.get(peer)
                if entry is None:
                    entry = peer_entry(peer, now)
            if now >= until:  # the whole seconds left in the window changed: new headers (or a new window)
                if claims:  # this second's allowances end with it
                    for ended in list(claims.values()):
                        release(ended)
                g_idx = int(now // window_s)
                end = (g_idx + 1) * window_s
                reset = _ceil_s(end - now)
                until = end - reset + 1  # ceil(end - t) == reset for t in [end - reset, end - reset + 1)
                lines = b"ratelimit-limit: %d\r\nratelimit-remaining: %%d\r\nratelimit-reset: %d" % (
                    max_requests, reset)
                refused = Refusal.of(max_requests, window_s, reset)
                # what the inlined path reads (until last: it may then use the others)
                fast["_rl_g"], fast["_rl_lines"], fast["_rl_until"] = g_idx, lines, until
            if expensive:
                return admit_expensive(entry, now)
            t = entry[3]
            if words[t] != entry[2]:  # the slot was taken over for another client: find (or take) one again
                if entry[6] is not None:  # void: it was counted in the counts the new client's zeroed
                    release(entry)
                t = entry[3] = find(entry[0], entry[1], entry[2], now)
                entry[5] = 4 * t
            elif entry[6] is not None:
                spent = next(entry[7], None)
                if spent is not None:  # an allowance of this second (another peer key of the client)
                    allowed[key] = entry[7]
                    entry[8].append(key)
                    return spent
                release(entry)
            own = t + own_at
            if words[own] == g_idx:
                n = words[own + 1] + 1
                if n < _MAX_COUNT:
                    words[own + 1] = n
            else:  # a new window in this column: the count first, then the index (a reader under-counts)
                words[own + 1] = 1
                words[own] = g_idx
                n = 1
            if not single:
                for c in columns:
                    if c != own_at and words[t + c] == g_idx:
                        n += words[t + c + 1]
            left = max_requests - n
            if left >= 0:
                claim = left // claim_share
                if claim >= CLAIM_MIN:  # counted now, spent by the next requests of this second (the module)
                    words[own + 1] += claim
                    counts = iter(range(left - 1, left - claim - 1, -1))  # the remaining counts it shows
                    entry[6], entry[7], entry[8], entry[9] = counts, map(lines.__mod__, counts), [key], g_idx
                    allowed[key] = entry[7]
                    claims[id(entry)] = entry
                return lines % left
            self.refused += 1
            return refused

        return admit

    def inline_source(self, peer: str, now: str, count: str, fallback: str) -> str | None:
        """Python source of the request path's common cases, for a route wrapper to inline: a request
        from a peer already seen, on a general route, under the limit, in the second of the window
        :meth:`admit` saw last, that either spends its client's allowance of this second (:meth:`admit`
        claimed it: no shared memory touched, the allowance was counted in the table when it was
        claimed; its header lines come formatted from an iterator) or, without one, is counted in
        the table.

        The code reads ``_rl_*`` globals: the wrapper must run with :attr:`fast` as its globals (the
        window state and header lines' format :meth:`admit` publishes there once a second, the table,
        the peers' entries and allowances). Without an allowance it reads the slot's tag and every
        column in one ``struct`` call and counts the request in this process's column exactly as
        :meth:`admit` would (the same words, the same checks of the slot's tag and of the window
        index). Either way it then runs ``count`` with the name ``raw`` bound to the verdict (the
        header lines, as :meth:`admit` returns them). When it cannot decide (a new peer or second, an
        allowance spent, the slot taken over, a new window, at or past the limit) it counts nothing
        and runs ``fallback`` (which must call :meth:`admit`). The code binds the locals ``k``, ``it``,
        ``e``, ``tag``, ``n`` and ``g<c>``/``n<c>`` per column.

        Args:
            peer: an expression (evaluated once) for the peer's address, or, for a request carrying
                ``X-Forwarded-For`` when proxies are trusted, the tuple ``(peer address, *the header's
                values)`` (:meth:`admit` keeps the client of each such tuple it has seen).
            now: the name of a local holding ``time.time()``.
            count: statements (not indented) run after counting (they should return).
            fallback: statements (not indented) run instead when the fast path does not apply.

        Returns:
            Statements (not indented); None when this limiter's request path is not
            :class:`RateLimiter`'s own (a subclass counting elsewhere, e.g. Redis): call :meth:`admit`.
        """
        if type(self)._request_path is not RateLimiter._request_path:
            return None
        table = self.table
        own = table._own
        cols = len(table._columns)
        names = [f"g{c}, n{c}" for c in range(cols)]
        mine = own // 4  # this column's number
        others = [c for c in range(cols) if c != mine]
        body = count.strip("\n").splitlines()
        lines = [
            f"k = {peer}",
            f"if {now} < _rl_until:",
            "    it = _rl_allowed.get(k)",
            "    if it is not None:",
            "        raw = next(it, None)",
            "        if raw is not None:",
            *("            " + line for line in body),
            "    else:",
            "        e = _rl_peers.get(k)",
            "        if e is not None:",
            f"            tag, {', '.join(names)} = _rl_unpack(_rl_mm, e[5])",
            f"            if tag == e[2] and g{mine} == _rl_g:",
            f"                n{mine} += 1",
        ]
        total = f"n{mine}"
        if others:
            lines.append(f"                n = n{mine}")
            for c in others:
                lines.append(f"                if g{c} == _rl_g:")
                lines.append(f"                    n += n{c}")
            total = "n"
        lines += [
            f"                if {total} <= _rl_cap:",
            f"                    _rl_words[e[3] + {own + 1}] = n{mine}",
            f"                    raw = _rl_lines % (_rl_max - {total})",
            *("                    " + line for line in body),
        ]
        lines += fallback.strip("\n").splitlines()
        return "".join(line + "\n" for line in lines)

    def _release(self, entry: list[Any]) -> None:
        """Give a client's unspent allowance back: its count in this process's column goes down by it
        (when the slot still holds that client in the allowance's window; else it is dropped)."""
        counts = entry[6]
        if counts is None:
            return
        left = operator.length_hint(counts)
        for key in entry[8]:
            self._allowed.pop(key, None)
        entry[6] = entry[7] = entry[8] = None
        self._claims.pop(id(entry), None)
        words, t = self.table._words, entry[3]
        if left and words[t] == entry[2]:
            own = t + self.table._own
            if words[own] == entry[9]:
                n = words[own + 1]
                words[own + 1] = n - left if n > left else 0

    def release_claims(self, now: float | None = None) -> int:
        """Give back every allowance when their second has ended (:meth:`_release`); how many. Called
        about once a second (:mod:`chessstats.api.observe`), so an allowance a worker no longer spends
        (its client's requests went to another worker, or stopped) holds the client's count up for at
        most about a second. (Every allowance held was claimed in the second :meth:`admit` saw last:
        it gives back the others when that second changes.)"""
        now = _time() if now is None else now
        if now < self.fast["_rl_until"]:
            return 0
        ended = list(self._claims.values())
        for entry in ended:
            self._release(entry)
        return len(ended)

    def _admit_expensive(self, entry: list[Any], now: float) -> Verdict:
        if entry[6] is not None:  # the table then holds only requests made: the headers show them
            self._release(entry)
        g_n, g_end, e_n, e_end = self.table.hit_key(entry[0], entry[1], entry[2], now, True)
        left, limit, end, window = self.max_requests - g_n, self.max_requests, g_end, self.window_s
        if self.expensive_max - e_n <= left:
            left, limit, end, window = self.expensive_max - e_n, self.expensive_max, e_end, self.expensive_window_s
        reset = _ceil_s(end - now)
        if left >= 0:
            return b"ratelimit-limit: %d\r\nratelimit-remaining: %d\r\nratelimit-reset: %d" % (limit, left, reset)
        self.refused += 1
        return Refusal.of(limit, window, reset)

    def _peer_entry(self, peer: str, now: float) -> list[Any]:
        """:meth:`_entry` of a peer address, kept per peer."""
        if len(self._peers) > 65536:
            self._peers.clear()
        entry = self._peers[peer] = self._entry(self.client_key(peer), now)
        return entry

    def _entry(self, client: str, now: float) -> list[Any]:
        """``[slot key, first slot, tag, tag word, client, tag word's byte offset, allowance, its header
        lines, its peer keys, its window index]`` of a client key: its slot located (or taken at ``now``)
        when first seen; the tag word is re-checked by every :meth:`admit`. An allowance (None: none) is
        an iterator over the remaining counts it shows (its length is what is left of it), its lines
        that iterator's counts formatted (what :meth:`inline_source`'s code spends), and the peer keys
        under which :attr:`_allowed` holds those lines."""
        entry = self._clients.get(client)
        if entry is None:
            if len(self._clients) > 65536:
                self._clients.clear()
            key, start, tag = self.table.locate(client)
            t = self.table._find(key, start, tag, now)
            entry = self._clients[client] = [key, start, tag, t, client, 4 * t, None, None, None, -1]
        return entry

    def client_of(self, peer: str, forwarded_for: list[str] | None) -> str:
        """The key :meth:`admit` counts a request from ``peer`` under (for messages)."""
        if forwarded_for and self._trusted:
            return self.client_key(self.client_address(peer, forwarded_for))
        return self.client_key(peer)

    def check(self, client: str, expensive: bool, now: float | None = None) -> Decision:
        """Count one request of ``client`` (a key from :meth:`client_key`) and decide on it.

        The headers show the window closest to refusing (the one with fewer requests left; the
        expensive one on a tie). Refused requests count too (a client that keeps trying does not
        get a fresh window sooner).
        """
        now = time.time() if now is None else now
        g_n, g_end, e_n, e_end = self.table.hit(client, now, expensive)
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


def open_limiter(config: Any, table_path: str | Path | None, *, column: int = 0, workers: int = 1) -> RateLimiter:
    """The limiter of ``config`` (the whole :class:`~chessstats.config.Config`): on Redis when
    ``[cache] url`` names one (:mod:`chessstats.ratelimit_redis`, imported only then: redis-py stays
    out of a server that does not use it), else :class:`RateLimiter` on ``table_path``
    (``column``/``workers``: that table's worker column and how many columns to read).

    Raises:
        ValueError: ``[cache] url`` is not a URL redis-py understands.
    """
    if config.cache.url:
        from chessstats.ratelimit_redis import RedisRateLimiter
        from chessstats.redisconn import RedisBackend

        backend = RedisBackend(config.cache.url, prefix=config.cache.redis_prefix, lease_s=config.cache.lock_lease_s)
        return RedisRateLimiter(config.ratelimit, backend)
    return RateLimiter(config.ratelimit, table_path, column=column, workers=workers)
