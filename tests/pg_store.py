"""The store engine of a test run: SQLite (default) or PostgreSQL (``TEST_STORE=postgresql``).

With PostgreSQL every test gets a fresh, empty database on a throwaway server (tests/pg_server.py,
one per session) and ``DATABASE_URL`` set to it, so servers started by ``start_server``, CLI
subprocesses and :func:`store_db` all use it. Tests about SQLite itself carry
``@pytest.mark.sqlite_only`` and are skipped there, saying why. When PostgreSQL is asked for but
not installed, the tests that need it skip with that reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.pg_server import PgServer, engine, find_bin_dir, run_in_thread

SQLITE_ONLY_REASON = "about SQLite itself (its file, WAL, pragmas or disk faults): not run on PostgreSQL"
_server: PgServer | None = None
_server_error: str | None = None


def pg_server() -> PgServer:
    """The session's PostgreSQL server (started on first use; stopped at exit). Skips the test
    when PostgreSQL is not installed; fails it when the server cannot start."""
    global _server, _server_error
    if _server is None:
        if find_bin_dir() is None:
            pytest.skip("PostgreSQL is not installed (apt-get install postgresql): no initdb/pg_ctl found")
        if _server_error is not None:
            pytest.fail(_server_error)
        try:
            _server = PgServer.start()
        except RuntimeError as exc:
            _server_error = f"the test PostgreSQL server did not start: {exc}"
            pytest.fail(_server_error)
    return _server


def stop_pg_server() -> None:
    """Stop the session's server if one was started."""
    global _server
    if _server is not None:
        _server.stop()
        _server = None


def integrity_errors() -> tuple[type[BaseException], ...]:
    """The exceptions a constraint violation raises on either engine."""
    import sqlite3

    import asyncpg

    return (sqlite3.IntegrityError, asyncpg.exceptions.IntegrityConstraintViolationError)


def store_db(tmp_path: Path, name: str = "x.db", **kwargs: Any) -> Any:
    """A Database (not opened) of the run's engine: SQLite ``tmp_path/name`` or the test's PostgreSQL
    database (``$DATABASE_URL``, set by :func:`store_engine_env`)."""
    if engine() == "postgresql":
        from chessstats.store.postgres import PostgresDatabase

        return PostgresDatabase(os.environ["DATABASE_URL"], **kwargs)
    from chessstats.store import Database

    return Database(tmp_path / name, **kwargs)


@pytest.fixture(autouse=True)
def store_engine_env(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """On PostgreSQL: a fresh database for this test, named by ``DATABASE_URL``."""
    if engine() == "postgresql" and request.node.get_closest_marker("sqlite_only") is None:
        monkeypatch.setenv("DATABASE_URL", pg_server().new_database())
    else:  # a DATABASE_URL of the developer's shell must not send the SQLite run elsewhere
        monkeypatch.delenv("DATABASE_URL", raising=False)
    yield


def configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"sqlite_only: {SQLITE_ONLY_REASON}")


def modify_items(items: list[pytest.Item]) -> None:
    if engine() != "postgresql":
        return
    skip = pytest.mark.skip(reason=SQLITE_ONLY_REASON)
    for item in items:
        if item.get_closest_marker("sqlite_only") is not None:
            item.add_marker(skip)


class _Row(tuple):
    """A result row: a tuple (equal to one) that also answers by column name and to ``dict(row)``."""

    _names: tuple[str, ...] = ()

    def keys(self) -> tuple[str, ...]:
        return self._names

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        if isinstance(key, str):
            return tuple.__getitem__(self, self._names.index(key))
        return tuple.__getitem__(self, key)


class _Result(list):
    def fetchone(self) -> Any:
        return self[0] if self else None

    def fetchall(self) -> list[Any]:
        return list(self)


class PgSyncConnection:
    """A small synchronous stand-in for ``sqlite3.connect(<data dir>/chessstats.db)`` on the test's
    PostgreSQL database: ``execute(sql, params)`` (SQLite's SQL, translated) → rows with
    ``fetchone``/``fetchall``; ``close``; a context manager. Each call runs on its own connection."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.row_factory: Any = None

    def execute(self, sql: str, params: Any = ()) -> _Result:

        import asyncpg

        from chessstats.store.dialect import translate

        out: list[Any] = []

        async def run() -> None:
            conn = await asyncpg.connect(self.url)
            try:
                await conn.set_type_codec("numeric", schema="pg_catalog", encoder=str,
                                          decoder=lambda t: int(float(t)) if float(t).is_integer() else float(t),
                                          format="text")
                out.extend(await conn.fetch(translate(sql, want_id=False).sql, *tuple(params)))
            finally:
                await conn.close()

        run_in_thread(run)
        rows = _Result()
        for record in out:
            row = _Row(tuple(record))
            row._names = tuple(record.keys())
            rows.append(row)
        return rows

    def close(self) -> None:
        pass

    def __enter__(self) -> PgSyncConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def connect_store(data_dir: Path, **kwargs: Any) -> Any:
    """The store of a test server for direct checks: ``sqlite3.connect(<data dir>/chessstats.db)``, or
    on PostgreSQL a :class:`PgSyncConnection` to the test's database."""
    if engine() == "postgresql":
        return PgSyncConnection(os.environ["DATABASE_URL"])
    import sqlite3

    return sqlite3.connect(Path(data_dir) / "chessstats.db", **kwargs)
