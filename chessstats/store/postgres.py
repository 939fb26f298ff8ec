"""The store on PostgreSQL (asyncpg): the same interface as :class:`chessstats.store.db.Database`.

Selected by ``[store] url = "postgresql://…"`` (or ``DATABASE_URL``). The store's SQL and the
numbered migrations stay SQLite's; each statement is translated once by
:mod:`chessstats.store.dialect`. Rows are ``asyncpg.Record`` (by name and by position, ``dict(row)``,
``tuple(row)``, like ``sqlite3.Row``); ``numeric`` values come back as int or float (SQLite's
``sum()`` of integers is an integer) and ``jsonb`` values decoded (``json_extract``).

Writers are serialised like SQLite's single writer: every write transaction first takes one
transaction-level advisory lock (``pg_advisory_xact_lock``), waiting at most ``busy_timeout_ms``
(``lock_timeout``), so the store's read-then-write transactions (ensure an account, then link it)
keep their meaning across workers and processes. Reads run concurrently on the pool.

Storage faults: a full disk (``53100``), insufficient resources (class 53), a read-only server
(``25006``), data corruption (class XX) or a server that cannot be reached / went away (class 08,
57P01-57P03, a refused or broken socket) roll the transaction back and raise
:class:`~chessstats.errors.StorageUnavailable` (503 ``storage_unavailable``), recorded in
:attr:`PostgresDatabase.storage_error` until the next successful write.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgspec

from chessstats.errors import StorageUnavailable
from chessstats.store.dialect import translate
from chessstats.store.migrations import migrate_db, migration_status_of

log = logging.getLogger(__name__)

#: Seconds a client is told to wait (``Retry-After``) after a storage failure.
STORAGE_RETRY_AFTER_S = 30
#: The advisory lock key every write transaction holds (``"chessstats"`` as an int64).
WRITE_LOCK_KEY = 0x63686573_73737461

def redact(url: str) -> str:
    """``url`` without its password (for logs and ``/health``)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def storage_reason(exc: BaseException) -> str | None:
    """``"disk full"``, ``"read-only"``, ``"I/O error"`` or ``"unreachable"`` when ``exc`` is a storage
    failure of PostgreSQL (see the module docstring); None for any other error (a constraint, bad SQL)."""
    import asyncpg

    if isinstance(exc, asyncpg.exceptions.DiskFullError):
        return "disk full"
    if isinstance(exc, asyncpg.exceptions.InsufficientResourcesError):
        return "insufficient resources"
    if isinstance(exc, asyncpg.exceptions.ReadOnlySQLTransactionError):
        return "read-only"
    if isinstance(exc, asyncpg.exceptions.InternalServerError) and getattr(exc, "sqlstate", "").startswith("XX"):
        return "I/O error"
    if isinstance(exc, asyncpg.exceptions.PostgresSystemError):  # class 58: I/O error, undefined file
        return "I/O error"
    if isinstance(exc, asyncpg.exceptions.PostgresConnectionError | asyncpg.exceptions.CannotConnectNowError
                  | asyncpg.exceptions.AdminShutdownError | asyncpg.exceptions.CrashShutdownError
                  | asyncpg.exceptions.TooManyConnectionsError | asyncpg.exceptions.ConnectionDoesNotExistError):
        return "unreachable"
    if isinstance(exc, asyncpg.exceptions.InternalClientError):  # a connection cut mid-operation
        return "unreachable"
    if isinstance(exc, asyncpg.exceptions.InterfaceError) and "closed" in str(exc).lower():
        return "unreachable"
    if isinstance(exc, OSError | asyncio.TimeoutError):  # refused, reset, no such socket, connect timeout
        return "unreachable"
    return None


def _decode_numeric(text: str) -> int | float:
    value = Decimal(text)
    return int(value) if value == value.to_integral_value() else float(value)


async def _init_connection(conn: Any) -> None:
    """Codecs of every pooled connection: ``numeric`` → int/float, ``json``/``jsonb`` → decoded."""
    await conn.set_type_codec("numeric", schema="pg_catalog", encoder=str, decoder=_decode_numeric, format="text")
    for name in ("json", "jsonb"):
        await conn.set_type_codec(name, schema="pg_catalog", encoder=lambda v: msgspec.json.encode(v).decode(),
                                  decoder=msgspec.json.decode, format="text")


def _args(params: Sequence[Any] | dict[str, Any]) -> tuple[Any, ...]:
    if isinstance(params, dict):
        raise TypeError("named parameters are not supported on PostgreSQL: use ? placeholders")
    return tuple(params)


def _rowcount(status: str) -> int:
    """The row count of a command tag (``INSERT 0 3`` → 3, ``UPDATE 2`` → 2); -1 when it has none."""
    last = status.rsplit(" ", 1)[-1] if status else ""
    return int(last) if last.isdigit() else -1


@dataclass(slots=True)
class PgCursor:
    """What :meth:`PgConnection.execute` returns: ``rowcount`` (rows written), ``lastrowid`` (the
    identity ``id`` of the first row an INSERT wrote, else None) and the returned ``rows``."""

    rowcount: int
    lastrowid: int | None
    rows: list[Any]

    async def fetchall(self) -> list[Any]:
        return self.rows

    async def fetchone(self) -> Any:
        return self.rows[0] if self.rows else None


class PgConnection:
    """A pooled asyncpg connection inside a write transaction, with aiosqlite's methods the store
    uses: ``execute`` (→ :class:`PgCursor`), ``execute_fetchall``, ``executemany``; SQL in SQLite's dialect."""

    def __init__(self, conn: Any) -> None:
        self.raw = conn

    async def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> PgCursor:
        t = translate(sql)
        args = _args(params)
        if t.returns_id or t.returns_rows:
            rows = await self.raw.fetch(t.sql, *args)
            lastrowid = int(rows[0][0]) if t.returns_id and rows else None
            return PgCursor(len(rows), lastrowid, rows)
        status = await self.raw.execute(t.sql, *args) if args else await self.raw.execute(t.sql)
        return PgCursor(_rowcount(status), None, [])

    async def execute_fetchall(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[Any]:
        return list(await self.raw.fetch(translate(sql).sql, *_args(params)))

    async def executemany(self, sql: str, seq: Iterable[Sequence[Any]]) -> None:
        rows = [tuple(p) for p in seq]
        if rows:
            await self.raw.executemany(translate(sql, want_id=False).sql, rows)


class PostgresDatabase:
    """The store on a PostgreSQL database (see the module docstring).

    **Parameters:**
    * **url** - ``postgresql://user:password@host:port/dbname`` (``?host=/socket/dir`` for a unix socket).
    * **pool_size** - *(optional)* most connections this process opens. Defaults to 10.
    * **busy_timeout_ms** - *(optional)* how long a write waits for another writer, in milliseconds.
    * **connect_timeout_s** - *(optional)* seconds to wait for a connection. Defaults to 10.
    """

    engine = "postgresql"

    def __init__(self, url: str, *, pool_size: int = 10, busy_timeout_ms: int = 5000,
                 connect_timeout_s: float = 10.0) -> None:
        self.url = url
        self.pool_size = pool_size
        self.busy_timeout_ms = busy_timeout_ms
        self.connect_timeout_s = connect_timeout_s
        self._pool: Any = None
        self._write_lock = asyncio.Lock()
        self.storage_error: str | None = None
        self.storage_error_at: float | None = None

    @property
    def path(self) -> str:
        """The database's URL without its password (where SQLite has its file)."""
        return redact(self.url)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path}>"

    async def open(self, *, migrate: bool = True) -> PostgresDatabase:
        """Open the connection pool and (by default) apply pending migrations.

        Raises:
            StorageUnavailable: the server cannot be reached.
            asyncpg.PostgresError: any other failure (authentication, no such database).
        """
        import asyncpg

        try:
            self._pool = await asyncpg.create_pool(
                self.url, min_size=1, max_size=self.pool_size, init=_init_connection,
                timeout=self.connect_timeout_s, command_timeout=None)
        except Exception as exc:
            self._raise_storage(exc)
            raise
        try:
            if migrate:
                await self.migrate()
        except BaseException:
            await self.close()
            raise
        return self

    async def close(self) -> None:
        """Close the pool (idempotent); waits at most 10 s for connections in use, then terminates them."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), 10)
        except Exception as exc:
            log.warning("closing the PostgreSQL pool failed (%s): terminated", exc)
            pool.terminate()

    async def __aenter__(self) -> PostgresDatabase:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _pool_or_raise(self) -> Any:
        if self._pool is None:
            raise RuntimeError("database is not open")
        return self._pool

    async def fetchall(self, sql: str, params: Sequence[Any] | dict[str, Any] = (), *,
                       quick: bool = False) -> list[Any]:
        """Run a read query and return every row (``asyncpg.Record``). ``quick`` (SQLite's read on the event
        loop) is accepted for the common interface and ignored: every read goes through the pool."""
        pool = self._pool_or_raise()
        try:
            return list(await pool.fetch(translate(sql).sql, *_args(params)))
        except Exception as exc:
            self._raise_storage(exc)
            raise

    async def fetchone(self, sql: str, params: Sequence[Any] | dict[str, Any] = (), *, quick: bool = False) -> Any:
        """Run a read query and return its first row, or None."""
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run a read query and return the first column of its first row, or None."""
        row = await self.fetchone(sql, params)
        return None if row is None else row[0]

    @asynccontextmanager
    async def transaction(self, *, busy_timeout_ms: int | None = None) -> AsyncIterator[PgConnection]:
        """Yield a connection inside a transaction that holds the write lock; commit on success,
        roll back on error.

        Raises:
            StorageUnavailable: a storage failure (see the module docstring); rolled back and recorded.
            asyncpg.LockNotAvailableError: another writer held the lock for ``busy_timeout_ms``.
            RuntimeError: the database is not open.
        Any other error of the block is re-raised unchanged after the rollback.
        """
        pool = self._pool_or_raise()
        timeout_ms = int(self.busy_timeout_ms if busy_timeout_ms is None else busy_timeout_ms)
        async with self._write_lock:
            try:
                conn = await pool.acquire(timeout=self.connect_timeout_s)
            except Exception as exc:
                self._raise_storage(exc)
                raise
            try:
                tx = conn.transaction()
                try:
                    await tx.start()
                    await conn.execute(f"SET LOCAL lock_timeout = {timeout_ms}")
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", WRITE_LOCK_KEY)
                except BaseException as exc:
                    await self._rollback(tx)
                    self._drop_if_broken(conn, exc)
                    self._raise_storage(exc)
                    raise
                try:
                    yield PgConnection(conn)
                    await tx.commit()
                except BaseException as exc:
                    await self._rollback(tx)
                    self._drop_if_broken(conn, exc)
                    self._raise_storage(exc)
                    raise
                if self.storage_error is not None:
                    log.warning("database %s is writable again (after: %s)", self.path, self.storage_error)
                    self.storage_error = self.storage_error_at = None
            finally:
                try:
                    await pool.release(conn)
                except Exception as exc:  # a broken connection: the pool replaces it
                    log.debug("releasing a PostgreSQL connection failed: %s", exc)

    @staticmethod
    def _drop_if_broken(conn: Any, exc: BaseException) -> None:
        """Terminate a connection that was cut or left mid-operation, so that the pool opens a new one
        instead of handing it out again."""
        import asyncpg

        try:
            if conn.is_closed() or storage_reason(exc) == "unreachable" \
                    or isinstance(exc, asyncpg.exceptions.InternalClientError):
                conn.terminate()
        except asyncpg.exceptions.InterfaceError:  # the pool already took it back (connection lost)
            pass

    @staticmethod
    async def _rollback(tx: Any) -> None:
        try:
            await tx.rollback()
        except Exception as exc:  # not started, already rolled back or the connection is gone
            log.debug("rollback: %s", exc)

    def _raise_storage(self, exc: BaseException) -> None:
        """Record and raise :class:`StorageUnavailable` (from ``exc``) when it is a storage failure;
        otherwise return and let the caller re-raise ``exc``."""
        reason = storage_reason(exc)
        if reason is None:
            return
        if self.storage_error != reason:
            log.error("database %s failed (%s): %s; answering 503 until a write succeeds", self.path, reason, exc)
        self.storage_error, self.storage_error_at = reason, time.time()
        raise StorageUnavailable(f"storage is unavailable ({reason}); try again later",
                                 retry_after_s=STORAGE_RETRY_AFTER_S) from exc

    async def probe_write(self, *, busy_timeout_ms: int = 200) -> bool | None:
        """One tiny real write: ``schema_migrations``' newest row is updated to itself (a new row version
        and a commit in the WAL; refused by a read-only server or database). True when it succeeded
        (clears :attr:`storage_error`), False on a storage failure (recorded), None when not tried or
        inconclusive (another write of this process is in progress, or another process held the write
        lock). Never raises."""
        if self._pool is None or self._write_lock.locked():
            return None
        try:
            async with self.transaction(busy_timeout_ms=busy_timeout_ms) as conn:
                await conn.raw.execute("UPDATE schema_migrations SET name = name "
                                       "WHERE version = (SELECT max(version) FROM schema_migrations)")
        except StorageUnavailable:
            return False
        except Exception as exc:
            log.debug("health probe write inconclusive: %r", exc)
            return None
        return True

    async def execute_write(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one write statement in its own transaction; returns ``lastrowid`` (0 when none)."""
        async with self.transaction() as conn:
            cursor = await conn.execute(sql, params)
            return cursor.lastrowid or 0

    async def migrate(self) -> list[int]:
        """Apply pending migrations in order (translated; one transaction); returns the versions applied now."""
        return await migrate_db(self)

    async def migration_status(self) -> list[tuple[int, str, str | None]]:
        """Every known migration as ``(version, name, applied_at or None)``."""
        return await migration_status_of(self)

    async def size_bytes(self) -> int:
        """Size of the database (``pg_database_size``), in bytes."""
        return int(await self.fetchval("SELECT pg_database_size(current_database())") or 0)
