"""A throwaway PostgreSQL server for the tests, from the system packages (``postgresql``).

``initdb`` + ``pg_ctl`` in a temporary dir, listening on a unix socket only (no TCP port), with
``fsync=off`` and no WAL-sync waits (throwaway data). Run as root (CI), the server runs as the
``postgres`` system user (or ``nobody``) through ``runuser``: PostgreSQL refuses to run as root.
Each test gets its own empty database (``CREATE DATABASE``), so tests stay independent.

Usage: ``server = PgServer.start()`` … ``server.new_database()`` → a ``postgresql://`` URL …
``server.stop()``. :func:`find_bin_dir` returns None when PostgreSQL is not installed (the tests
that need it then skip, saying so).
"""

from __future__ import annotations

import asyncio
import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

ENV_VAR = "TEST_STORE"  # not CHESSSTATS_*: the config would call it an unknown key


def engine() -> str:
    """The store engine the suite runs on: ``sqlite`` (default) or ``postgresql`` (``$TEST_STORE``)."""
    value = os.environ.get(ENV_VAR, "sqlite").strip().lower()
    return "postgresql" if value in ("postgresql", "postgres", "pg") else "sqlite"


def find_bin_dir() -> Path | None:
    """The directory of ``initdb`` and ``pg_ctl`` (the newest ``/usr/lib/postgresql/*/bin``, else $PATH)."""
    def version(path: str) -> tuple[int, ...]:
        part = Path(path).parent.parent.name
        return tuple(int(x) for x in part.split(".") if x.isdigit())
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version, reverse=True)
    if candidates:
        return Path(candidates[0]).parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _run_as() -> str | None:
    """The user to run PostgreSQL as when we are root: ``postgres`` if it exists, else ``nobody``."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' user exists")


def run_in_thread(make: Any) -> None:
    """``asyncio.run(make())`` in a thread of its own (callable from a running event loop, as async
    tests are); an exception is re-raised in the caller's thread."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(make())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


class PgServer:
    """A running throwaway server: ``socket_dir``, ``url(dbname)``, :meth:`new_database`, :meth:`stop`."""

    def __init__(self, bin_dir: Path, root: Path, user: str | None) -> None:
        self.bin_dir = bin_dir
        self.root = root
        self.data = root / "data"
        self.socket_dir = root / "sock"
        self.user = user
        self._names = itertools.count(1)
        self._lock = threading.Lock()

    def _cmd(self, *args: str) -> list[str]:
        return ["runuser", "-u", self.user, "--", *args] if self.user else list(args)

    @classmethod
    def start(cls, parent: Path | None = None) -> PgServer:
        """Initialise and start a server in a new temporary dir (under ``parent`` if given, e.g. the
        bench's run dir; else the system's temp dir).

        Raises:
            RuntimeError: PostgreSQL is not installed, or initdb / pg_ctl failed (with their output).
        """
        bin_dir = find_bin_dir()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL is not installed (no initdb under /usr/lib/postgresql/*/bin or on PATH)")
        root = Path(tempfile.mkdtemp(prefix="chessstats-pg-", dir=parent))
        user = _run_as()
        server = cls(bin_dir, root, user)
        server.socket_dir.mkdir()
        if user:
            entry = pwd.getpwnam(user)
            os.chmod(root, 0o755)
            for path in (root, server.socket_dir):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        server._check(server._cmd(str(bin_dir / "initdb"), "-D", str(server.data), "-U", "postgres", "-A", "trust",
                                  "-E", "UTF8", "--locale=C", "--no-sync"), "initdb")
        options = (f"-k {server.socket_dir} -c listen_addresses='' -c fsync=off -c synchronous_commit=off "
                   "-c full_page_writes=off -c max_connections=300 -c shared_buffers=32MB")
        server._check(server._cmd(str(bin_dir / "pg_ctl"), "-D", str(server.data), "-l", str(root / "server.log"),
                                  "-o", options, "-w", "-t", "60", "start"), "pg_ctl start")
        return server

    def _check(self, cmd: list[str], what: str) -> None:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(self.root))
        if proc.returncode != 0:
            log = (self.root / "server.log").read_text(errors="replace") if (self.root / "server.log").exists() else ""
            raise RuntimeError(f"{what} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}\n{log}")

    def url(self, dbname: str) -> str:
        """A ``postgresql://`` URL of database ``dbname`` over the unix socket (user ``postgres``)."""
        return f"postgresql://postgres@/{dbname}?host={self.socket_dir}"

    def new_database(self) -> str:
        """Create a new, empty database; returns its URL."""
        with self._lock:
            name = f"t{os.getpid()}_{next(self._names)}"
        self.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def execute(self, sql: str, dbname: str = "postgres") -> None:
        """Run one statement as the superuser (in a thread of its own: callable from async tests)."""
        import asyncpg

        async def run() -> None:
            conn = await asyncpg.connect(self.url(dbname))
            try:
                await conn.execute(sql)
            finally:
                await conn.close()

        run_in_thread(run)

    def postmaster_pid(self) -> int | None:
        """The postmaster's pid (first line of ``postmaster.pid``; its backends are its children), or None."""
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        """Stop the server (immediate mode) and remove its directory."""
        subprocess.run(self._cmd(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w",
                                 "stop"), capture_output=True, cwd=str(self.root))
        shutil.rmtree(self.root, ignore_errors=True)
