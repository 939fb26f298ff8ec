"""The SQLite database: one serialised writer connection and two reader connections.

Readers: aiosqlite's reader thread for every read, and a plain ``sqlite3`` connection used on the
event loop itself for reads marked ``quick=True`` (a few rows found through an index: a primary
key, a unique key). A quick read costs no hop to a thread and back (≈200 µs of latency per
aiosqlite call on this project's machines); in WAL mode a reader never waits for the writer. It is
opened ``query_only`` with no busy timeout: when SQLite answers "busy" at once (WAL recovery after
a crash, a truncating checkpoint of another process) the read is retried on aiosqlite's thread,
which waits the full busy timeout without blocking the event loop.

Quick reads are batched per event-loop iteration: a request's read is queued, and the queue is run
in one go at the loop's next turn (one ``call_soon``), so SQLite's statements run back to back
instead of between the requests' Python code, inside one read transaction (one WAL read lock and
one file-size check per batch, not per read; every read of a batch sees one snapshot, taken after
all of them were asked for). Interleaved, SQLite's code and pages and the interpreter's working set
evict each other from the CPU's caches at every request: a detail's indexed SELECT costs ≈6 µs in
a loop of SELECTs but ≈39 µs of server time between requests. Measured on ``scripts/bench``'s
database-served rows (1 worker, cache disabled, old and new server in 5 interleaved rounds of
4 s): detail 13.0k → 23.0k req/s, 100-row standings page 10.6k → 18.9k (batching alone: 20.6k
and 17.8k). A lone request waits one loop turn (microseconds) more. A caller that caches what a
quick read returned does so one loop turn after the read's snapshot: a write committed in between
and its cache drop may both come first, so a write that replaces what quick reads serve drops the
cache again a little later (``chessstats.services.imports.invalidate_tournament``'s ``again_after_s``).

Pragmas are set on every connection: ``busy_timeout`` first, then WAL, ``synchronous=NORMAL``
and ``foreign_keys=ON``. Several processes may open the same file (``--workers N``): SQLite's
locks plus the busy timeout serialise their writers; inside one process an asyncio lock does.

Storage faults: a write that fails because the disk is full, the file system is read-only or
the disk answers with an I/O error is rolled back and raised as
:class:`~chessstats.errors.StorageUnavailable` (503 ``storage_unavailable`` with ``Retry-After``);
the failure is recorded in :attr:`Database.storage_error` until the next successful write. Nothing
needs a restart: the next write after space comes back simply succeeds.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import shutil
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from chessstats.errors import StorageUnavailable
from chessstats.store.migrations import migrate_db, migration_status_of

log = logging.getLogger(__name__)

#: A quick read waiting for its batch: ``(sql, params, future of its rows)`` (None: busy, read it elsewhere).
_QueuedRead = tuple[str, Sequence[Any] | dict[str, Any], "asyncio.Future[list[Any] | None]"]

DB_FILENAME = "chessstats.db"
#: Seconds a client is told to wait (``Retry-After``) after a storage failure.
STORAGE_RETRY_AFTER_S = 30

# SQLite primary result codes (the low byte of an extended code).
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_FULL = 5, 6, 8, 10, 13
_SQLITE_REASONS = {_SQLITE_FULL: "disk full", _SQLITE_READONLY: "read-only", _SQLITE_IOERR: "I/O error"}
_OS_REASONS = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk full (quota)", errno.EROFS: "read-only",
               errno.EIO: "I/O error"}
_MESSAGE_REASONS = (("database or disk is full", "disk full"), ("readonly database", "read-only"),
                    ("disk i/o error", "I/O error"))


def _nearly_full(directory: Path) -> bool:
    """Whether the file system of ``directory`` has less than 1 MiB free (False when unknown)."""
    try:
        return shutil.disk_usage(directory).free < 2**20
    except OSError:
        return False


def storage_reason(exc: BaseException) -> str | None:
    """``"disk full"``, ``"read-only"`` or ``"I/O error"`` when ``exc`` is a storage failure of SQLite
    or the OS (``sqlite3.OperationalError`` "database or disk is full" / "attempt to write a readonly
    database" / "disk I/O error", ``OSError`` ENOSPC / EDQUOT / EROFS / EIO); None for any other error."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if isinstance(code, int) and (code & 0xFF) in _SQLITE_REASONS:
            return _SQLITE_REASONS[code & 0xFF]
        text = str(exc).lower()
        for needle, reason in _MESSAGE_REASONS:
            if needle in text:
                return reason
        return None
    if isinstance(exc, OSError):
        return _OS_REASONS.get(exc.errno) if exc.errno is not None else None
    return None


class Database:
    """Async access to ``<data dir>/chessstats.db``.

    **Parameters:**
    * **path** - the SQLite file.
    * **busy_timeout_ms** - *(optional)* how long a statement waits for a lock held by another
      connection or process, in milliseconds. Defaults to 5000.

    Use ``await db.open()`` / ``await db.close()`` (or ``async with``). Reads go through
    :meth:`fetchall` / :meth:`fetchone`; writes through :meth:`transaction`, which yields the
    writer connection inside ``BEGIN IMMEDIATE`` and commits, or rolls back on any error.

    ``storage_error`` (``"disk full"``, ``"read-only"``, ``"I/O error"`` or None) and
    ``storage_error_at`` (epoch seconds) describe the last failed write, until a write succeeds.
    """

    def __init__(self, path: str | Path, busy_timeout_ms: int = 5000) -> None:
        self.path = Path(path)
        self.busy_timeout_ms = busy_timeout_ms
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._quick: sqlite3.Connection | None = None  # quick reads, on the event loop
        #: quick reads queued for the next loop turn: ``(sql, params, future)``, and that loop
        self._batch: list[_QueuedRead] = []
        self._batch_loop: asyncio.AbstractEventLoop | None = None
        #: batches run and quick reads run in them (for tests and the curious)
        self.quick_batches = self.quick_reads = 0
        self._write_lock = asyncio.Lock()
        self._reconnect = False  # the writer was left unusable (a rollback failed): replace it first
        self.storage_error: str | None = None
        self.storage_error_at: float | None = None

    async def _connect(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            await conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            await conn.execute("PRAGMA journal_mode = WAL")
            await conn.execute("PRAGMA synchronous = NORMAL")
            await conn.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            await conn.close()
            raise
        return conn

    def _connect_quick(self) -> sqlite3.Connection:
        """The event loop's own read connection (after the writer set WAL mode): read-only, no busy wait."""
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout = 0")
            conn.execute("PRAGMA query_only = ON")
        except BaseException:
            conn.close()
            raise
        return conn

    async def open(self, *, migrate: bool = True) -> Database:
        """Open both connections and (by default) apply pending migrations.

        Raises:
            sqlite3.Error: the file cannot be opened or is not a database.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._writer = await self._connect()
            self._reader = await self._connect()
            if migrate:
                await self.migrate()
            self._quick = self._connect_quick()
        except BaseException:
            await self.close()  # never leave a connection thread behind (it would keep the process alive)
            raise
        return self

    async def close(self) -> None:
        """Close every connection (idempotent)."""
        if self._quick is not None:
            try:
                self._quick.close()
            except Exception as exc:  # already broken: nothing more to release
                log.warning("closing the quick read connection failed: %s", exc)
            self._quick = None
        for conn in (self._reader, self._writer):
            if conn is not None:
                try:
                    await conn.close()
                except Exception as exc:  # a connection already broken: nothing more to release
                    log.warning("closing a database connection failed: %s", exc)
        self._reader = self._writer = None
        self._reconnect = False

    async def __aenter__(self) -> Database:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def reader(self) -> aiosqlite.Connection:
        if self._reader is None:
            raise RuntimeError("database is not open")
        return self._reader

    async def fetchall(self, sql: str, params: Sequence[Any] | dict[str, Any] = (), *,
                       quick: bool = False) -> list[sqlite3.Row]:
        """Run a read query and return every row.

        ``quick``: the query reads a few rows through an index (a key lookup, a short range): SQLite
        runs it on the event loop's own read connection (no hop to a thread), batched with the other
        quick reads of this loop turn at the next turn (see the module), and returns plain tuples;
        another backend may ignore the hint. Without it, one hop to the reader's thread
        (rows are ``sqlite3.Row``: by name or index). Never use it for a scan or a large result
        (an export): it blocks the event loop for its whole duration.
        """
        if quick:
            rows = await self._queue_quick(sql, params)
            if rows is not None:
                return rows
        return list(await self.reader.execute_fetchall(sql, params))

    def _queue_quick(self, sql: str, params: Sequence[Any] | dict[str, Any]) -> asyncio.Future[list[Any] | None]:
        """Queue a quick read for this loop's next batch (:meth:`_run_quick_batch`); the future's result
        is :meth:`_read_quick`'s (None: read it on aiosqlite's thread), or its exception.

        Raises:
            RuntimeError: the database is not open.
        """
        if self._quick is None and self._reader is None:
            raise RuntimeError("database is not open")
        batch, loop = self._batch, self._batch_loop
        # joining a queued batch skips asyncio.get_running_loop() (a getpid system call each); one left
        # by a loop that stopped (asyncio.run over) is dropped (its callers were cancelled with it)
        if not batch or loop is None or not loop.is_running():
            loop = self._batch_loop = asyncio.get_running_loop()
            batch = self._batch = []
            loop.call_soon(self._run_quick_batch, batch)
        future: asyncio.Future[list[Any] | None] = loop.create_future()
        batch.append((sql, params, future))
        return future

    def _run_quick_batch(self, batch: list[_QueuedRead]) -> None:
        """Run the quick reads queued since the last batch, in order; a read whose caller went away
        (cancelled) is skipped; an error fails only its own read."""
        if batch is self._batch:
            self._batch = []
        self.quick_batches += 1
        snapshot = len(batch) > 1 and self._begin_quick()
        try:
            for sql, params, future in batch:
                if future.done():
                    continue
                self.quick_reads += 1
                try:
                    rows = self._read_quick(sql, params)
                except Exception as exc:
                    future.set_exception(exc)
                else:
                    future.set_result(rows)
        finally:
            if snapshot:
                self._end_quick()

    def _begin_quick(self) -> bool:
        """Open one read transaction for a batch of quick reads (its first read takes WAL's read lock,
        and every read of the batch sees that snapshot: saves two ``fcntl`` and an ``fstat`` per read).
        False when it cannot (closed): each read then runs on its own."""
        conn = self._quick
        if conn is None:
            return False
        try:
            if conn.in_transaction:  # never read on from a snapshot a failed batch left open
                conn.execute("ROLLBACK")
            conn.execute("BEGIN")
        except sqlite3.Error as exc:
            log.warning("quick reads: could not begin a read transaction: %s", exc)
            return False
        return True

    def _end_quick(self) -> None:
        """End a batch's read transaction (releases WAL's read lock; nothing was written)."""
        conn = self._quick
        if conn is None or not conn.in_transaction:
            return
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error as exc:  # the next batch tries again before reading
            log.warning("quick reads: could not end a read transaction: %s", exc)

    def _read_quick(self, sql: str, params: Sequence[Any] | dict[str, Any]) -> list[Any] | None:
        """Rows of ``sql`` on the quick connection, or None when SQLite is busy (then the caller reads
        on aiosqlite's thread, which waits for the lock)."""
        conn = self._quick
        if conn is None:  # closed since the read was queued, or not opened for quick reads
            return None
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED):
                return None
            raise

    async def fetchone(self, sql: str, params: Sequence[Any] | dict[str, Any] = (), *,
                       quick: bool = False) -> sqlite3.Row | None:
        """Run a read query and return its first row, or None (``quick``: see :meth:`fetchall`)."""
        rows = await self.fetchall(sql, params, quick=quick)
        for row in rows:
            return row
        return None

    async def fetchval(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run a read query and return the first column of its first row, or None."""
        row = await self.fetchone(sql, params)
        return None if row is None else row[0]

    @asynccontextmanager
    async def transaction(self, *, busy_timeout_ms: int | None = None) -> AsyncIterator[aiosqlite.Connection]:
        """Yield the writer connection inside ``BEGIN IMMEDIATE``; commit on success, roll back on error.

        Only one transaction runs at a time in a process; other processes wait on SQLite's lock
        for up to ``busy_timeout_ms`` (default: the database's).

        Raises:
            StorageUnavailable: the disk is full, the file system read-only or the disk failed
                (at ``BEGIN``, in the block or at ``COMMIT``); the transaction was rolled back and
                the failure is recorded in :attr:`storage_error`.
            RuntimeError: the database is not open.
        Any other error of the block is re-raised unchanged after the rollback.
        """
        if self._writer is None:
            raise RuntimeError("database is not open")
        async with self._write_lock:
            writer = await self._writable()
            timeout_set = False
            try:
                if busy_timeout_ms is not None:
                    await writer.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
                    timeout_set = True
                try:
                    await writer.execute("BEGIN IMMEDIATE")
                except Exception as exc:
                    await self._rollback(writer)  # normally not inside a transaction here; make sure
                    self._raise_storage(exc)
                    raise
                try:
                    yield writer
                    await writer.execute("COMMIT")
                except BaseException as exc:
                    await self._rollback(writer)
                    self._raise_storage(exc)
                    raise
                if self.storage_error is not None:
                    log.warning("database %s is writable again (after: %s)", self.path, self.storage_error)
                    self.storage_error = self.storage_error_at = None
            finally:
                if timeout_set and not self._reconnect:
                    try:
                        await writer.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
                    except Exception:  # a connection that cannot set a pragma is replaced
                        self._reconnect = True

    async def _writable(self) -> aiosqlite.Connection:
        """The writer connection; a new one when the previous one was left unusable."""
        assert self._writer is not None
        if self._reconnect:
            try:
                conn = await self._connect()
            except Exception as exc:
                self._raise_storage(exc, always=True)
                raise
            old, self._writer, self._reconnect = self._writer, conn, False
            try:
                await old.close()
            except Exception:  # already broken; its thread is gone or going
                pass
        return self._writer

    async def _rollback(self, writer: aiosqlite.Connection) -> None:
        """Roll back; if that fails and the connection is still inside a transaction (or unusable),
        close it (SQLite then drops its write lock) and open a new writer before the next write."""
        try:
            await writer.execute("ROLLBACK")
            return
        except Exception as exc:
            error: Exception = exc
        try:
            still_open = writer.in_transaction
        except Exception:  # the connection itself is gone
            still_open = True
        if not still_open:  # SQLite had already rolled back (it does on SQLITE_FULL / IOERR)
            return
        log.error("rollback failed (%s): the writer connection is closed and replaced", error)
        self._reconnect = True
        try:
            await writer.close()
        except Exception as exc:
            log.warning("closing the writer after a failed rollback failed: %s", exc)

    def _raise_storage(self, exc: BaseException, *, always: bool = False) -> None:
        """Record and raise :class:`StorageUnavailable` (from ``exc``) when ``exc`` is a storage failure
        (or, with ``always``, any error); otherwise return and let the caller re-raise ``exc``."""
        reason = storage_reason(exc)
        if reason is None:
            if not always or not isinstance(exc, Exception):
                return
            reason = f"cannot open the database: {exc}"
        if reason == "I/O error" and _nearly_full(self.path.parent):  # e.g. the WAL index could not grow
            reason = "disk full"
        if self.storage_error != reason:
            log.error("database write failed (%s): %s; answering 503 until a write succeeds", reason, exc)
        self.storage_error, self.storage_error_at = reason, time.time()
        raise StorageUnavailable(f"storage is unavailable ({reason}); try again later",
                                 retry_after_s=STORAGE_RETRY_AFTER_S) from exc

    async def probe_write(self, *, busy_timeout_ms: int = 200) -> bool | None:
        """One tiny real write to check that the database can be written: ``user_version`` is read and
        written back unchanged in a transaction (one page appended to the WAL; no schema needed).

        Returns True when it succeeded (which clears :attr:`storage_error`), False on a storage
        failure (recorded), None when it was not tried or inconclusive: another write of this process
        is in progress, or another process held the write lock for ``busy_timeout_ms`` milliseconds.
        Never raises.
        """
        if self._writer is None or self._write_lock.locked():
            return None
        try:
            async with self.transaction(busy_timeout_ms=busy_timeout_ms) as conn:
                rows = await conn.execute_fetchall("PRAGMA user_version")
                version = int(next(iter(rows))[0])
                await conn.execute(f"PRAGMA user_version = {version}")
        except StorageUnavailable:
            return False
        except Exception as exc:  # locked by another process
            log.debug("health probe write inconclusive: %s", exc)
            return None
        return True

    async def execute_write(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one write statement in its own transaction; returns ``lastrowid``."""
        async with self.transaction() as conn:
            cursor = await conn.execute(sql, params)
            return cursor.lastrowid or 0

    async def migrate(self) -> list[int]:
        """Apply pending migrations in order; returns the versions applied now."""
        return await migrate_db(self)

    async def migration_status(self) -> list[tuple[int, str, str | None]]:
        """Every known migration as ``(version, name, applied_at or None)``."""
        return await migration_status_of(self)

    async def size_bytes(self) -> int:
        """Size of the database file plus its WAL, in bytes."""
        total = 0
        for suffix in ("", "-wal"):
            p = Path(str(self.path) + suffix)
            if p.exists():
                total += p.stat().st_size
        return total


def rows_to_dicts(rows: Iterable[sqlite3.Row]) -> list[dict[str, Any]]:
    """Rows as plain dicts (column name → value)."""
    return [dict(row) for row in rows]
