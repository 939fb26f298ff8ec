"""What each CLI verb does (kept apart from argument parsing in :mod:`chessstats.cli`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sqlite3
import sys
import threading
import time
from functools import partial
from typing import Any

import msgspec

from chessstats.config import Config
from chessstats.errors import StorageUnavailable
from chessstats.log import setup_logging

log = logging.getLogger("chessstats")


class StartupError(Exception):
    """Raised when the server cannot start (port taken, data dir unusable); the CLI prints one line."""


def _check_port(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


#: Seconds to wait for aiosqlite's connection threads to end after a failed open.
SQLITE_THREADS_WAIT_S = 2.0


async def _sqlite_threads_ended(timeout_s: float = SQLITE_THREADS_WAIT_S) -> None:
    """Keep the event loop running until aiosqlite's connection threads have ended (at most
    ``timeout_s`` seconds).

    When ``aiosqlite.connect`` fails (a data dir that cannot be written, a folder named
    ``chessstats.db``), aiosqlite stops the connection's thread with a future nobody awaits; if the
    loop closes first, the thread ends on "RuntimeError: Event loop is closed" and prints its
    traceback after our one-line message.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(
            "_connection_worker_thread" in t.name and t.is_alive() for t in threading.enumerate()):
        await asyncio.sleep(0.01)


def _check_data_dir(config: Config) -> None:
    """Open the database once (applying migrations) before any worker starts.

    Raises:
        StartupError: the data dir or the database file cannot be used.
    """
    from chessstats.resources import DataDir

    async def check() -> None:
        db = DataDir(config.data_dir).database(config)
        try:
            await db.open()
        except BaseException:
            await _sqlite_threads_ended()
            raise
        await db.close()

    new = not (DataDir(config.data_dir).db_path if config.store.engine == "sqlite" else config.data_dir).exists()
    try:
        config.data_dir.mkdir(parents=True, exist_ok=True)
        asyncio.run(check())
    except sqlite3.DatabaseError as exc:
        raise StartupError(f"the database in {config.data_dir} cannot be used: {exc}") from exc
    except StorageUnavailable as exc:  # PostgreSQL cannot be reached
        raise StartupError(f"the database cannot be used: {exc.message}") from exc
    except OSError as exc:
        raise StartupError(f"the data dir {config.data_dir} cannot be used: {exc.strerror or exc}") from exc
    except Exception as exc:
        if type(exc).__module__.startswith("asyncpg"):  # no such database, authentication failed
            raise StartupError(f"the PostgreSQL database cannot be used: {exc}") from exc
        raise
    if new:
        what = "database" if config.store.engine == "sqlite" else "data dir (the store is on PostgreSQL)"
        log.warning("there was no %s in %s: started a new, empty data dir there", what, config.data_dir)


#: glibc ``mallopt`` parameter: the most malloc arenas the process may create (``M_ARENA_MAX``).
M_ARENA_MAX = -8
#: Arenas a serving process keeps (the main thread's and one for every other thread).
MALLOC_ARENAS = 2


def _limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas of this process at ``arenas`` before it starts any thread.

    glibc gives each new thread that allocates its own arena (up to 8 per core); a serving process
    has three or four threads (aiosqlite's connection threads, the executor of ``to_thread``), and
    each arena keeps its own free pages: 0.3–0.5 MiB of idle RSS per process (``scripts/bench``,
    idle RSS rows). The other threads allocate little (aiosqlite's SQLite calls, an import's PGN
    parsing), so they seldom wait for the shared arena. Returns True when the cap was set; False
    off glibc, or when ``MALLOC_ARENA_MAX`` is in the environment (the operator's value is kept).
    """
    if not sys.platform.startswith("linux") or "MALLOC_ARENA_MAX" in os.environ:
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt to call)
        return False
    return bool(mallopt(M_ARENA_MAX, arenas))


#: Logged once at start (by ``serve``, not by each worker) when ``[upstream] contact`` is empty.
NO_CONTACT_WARNING = (
    "no contact configured: Lichess and Chess.com ask API clients to put a contact (e-mail or URL) in "
    "the User-Agent, and Chess.com may answer 403 without one; set [upstream] contact or CHESSSTATS_CONTACT"
)

#: Environment variable through which worker processes learn the pid of their manager (main) process.
MANAGER_PID_ENV = "CHESSSTATS_MANAGER_PID"


def _worker_serve(*args: Any, **kwargs: Any) -> None:
    """The target of each worker process (``--workers N``): Sanic's ``worker_serve``, tied to the manager.

    * The worker dies (SIGKILL) with the manager process (``PR_SET_PDEATHSIG``), and exits at once
      if the manager is already gone: a ``kill -9`` of the manager never leaves a worker on the port.
    * When the server loop is over, the process ends with ``os._exit``: a thread left running
      (an ``aiosqlite`` connection that a cut-short shutdown did not close) can no longer keep
      the worker, and so the manager waiting for it, alive.
    """
    from sanic.worker.serve import worker_serve

    from chessstats._frozen import die_with_parent

    _limit_malloc_arenas()
    manager = int(os.environ.get(MANAGER_PID_ENV) or 0)
    parent = os.getppid()
    if manager and not _alive(manager):
        os._exit(1)
    die_with_parent(signal.SIGKILL, parent)
    code = 1
    try:
        worker_serve(*args, **kwargs)
        code = 0
    except KeyboardInterrupt:  # a shutdown signal before the worker's loop took over its signals
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        _exit_now(code)


def _exit_now(code: int) -> None:
    """Flush the logs and end the process with ``code`` (threads left running cannot hold it)."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    os._exit(code)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0] != b"Z"
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def _start_sync_manager() -> Any:
    """``multiprocessing.Manager()`` whose server process dies with the main process (Sanic's shared state)."""
    from multiprocessing import get_context
    from multiprocessing.managers import SyncManager

    from chessstats._frozen import die_with_parent

    manager = SyncManager(ctx=get_context())
    manager.start(initializer=partial(die_with_parent, signal.SIGKILL))
    return manager


def _patch_sanic_manager(kill_after_s: float) -> None:
    """Make Sanic's multi-process mode stop promptly and never leave processes behind.

    * A SIGTERM that arrives before every worker acknowledged its start used to leave the
      manager waiting for acknowledgements that never come (30 s, then exit status 1): the wait
      now ends as soon as the manager is shutting down.
    * Workers are stopped with SIGTERM, not Sanic's SIGINT: a worker still importing (it has no
      handler yet) then ends silently instead of printing a ``KeyboardInterrupt`` traceback, and
      a running worker's loop handles both signals alike (graceful stop).
    * While the manager waits for a worker that was still starting when asked to stop, it repeats
      the SIGTERM every 0.5 s (a signal that came between start-up stages can be lost; a running
      worker is not nudged: a second signal would cut its graceful shutdown short). It sends
      SIGKILL after ``kill_after_s`` seconds (Sanic waited 10 s per worker, one after the other).
    * Workers run :func:`_worker_serve` (tied to the manager, exit when their loop ends).
    * Sanic's shared-state process (a ``multiprocessing`` manager) dies with the main process.
    * The shutdown signal handler only sets a flag that the monitor loop acts on within 0.1 s:
      Sanic's own handler worked inside the handler, on the same shared-state proxy connection the
      interrupted main thread might be using (about one SIGTERM in 25 under load exited with 1).
    """
    import contextlib

    import sanic.mixins.startup as startup
    from sanic.exceptions import ServerKilled
    from sanic.log import logger as logger_root
    from sanic.worker.constants import ProcessState
    from sanic.worker.manager import MonitorCycle, WorkerManager
    from sanic.worker.process import WorkerProcess

    if getattr(WorkerManager, "_chessstats_patched", False):
        return
    all_acked = WorkerManager._all_workers_ack

    def _all_workers_ack(self: WorkerManager) -> bool:
        return bool(self._shutting_down or getattr(self, "_chessstats_stop", None)) or all_acked(self)

    def terminate(self: WorkerProcess) -> None:
        if self.state is not ProcessState.TERMINATED:
            self._chessstats_starting = self.state < ProcessState.ACKED  # type: ignore[attr-defined]
            with contextlib.suppress(BrokenPipeError, ConnectionResetError, EOFError):
                self.set_state(ProcessState.TERMINATED, force=True)
            with contextlib.suppress(KeyError, AttributeError, ProcessLookupError, TypeError):
                os.kill(self.pid, signal.SIGTERM)

    sanic_exit = WorkerProcess.exit

    def exit_(self: WorkerProcess) -> None:
        import time

        started = time.monotonic()
        nudged = started
        while self.is_alive():
            now = time.monotonic()
            with contextlib.suppress(ProcessLookupError, TypeError):
                if now - started > kill_after_s:
                    log.warning("worker %s did not stop in %.1f s; killing it", self.pid, kill_after_s)
                    os.kill(self.pid, signal.SIGKILL)
                    self._current_process.join(2)
                    break
                if now - nudged >= 0.5 and getattr(self, "_chessstats_starting", False):
                    os.kill(self.pid, signal.SIGTERM)
                    nudged = now
            time.sleep(0.02)
        sanic_exit(self)

    poll_monitor = WorkerManager._poll_monitor

    def shutdown_signal(self: WorkerManager, signum: int, frame: object) -> None:
        # Only a flag: Sanic's handler did the shutdown inside the signal handler, which could
        # interrupt the main thread in the middle of a call on the shared-state proxy (worker
        # states) and corrupt it ("'NoneType' object is not a mapping", exit status 1).
        if self._shutting_down or getattr(self, "_chessstats_stop", None):
            logger_root.info("Shutdown interrupted. Killing.")
            with contextlib.suppress(ServerKilled):
                self.kill()
            return
        self._chessstats_stop = signal.Signals(signum).name  # type: ignore[attr-defined]

    def _poll_monitor(self: WorkerManager) -> Any:
        stop = getattr(self, "_chessstats_stop", None)
        if stop and not self._shutting_down:
            logger_root.info("Received signal %s. Shutting down.", stop)
            self.shutdown()
            return MonitorCycle.BREAK
        return poll_monitor(self)

    WorkerManager.shutdown_signal = shutdown_signal  # type: ignore[method-assign]
    WorkerManager._poll_monitor = _poll_monitor  # type: ignore[method-assign]
    WorkerManager._all_workers_ack = _all_workers_ack  # type: ignore[method-assign]
    WorkerProcess.terminate = terminate  # type: ignore[method-assign]
    WorkerProcess.exit = exit_  # type: ignore[method-assign]
    WorkerManager._chessstats_patched = True  # type: ignore[attr-defined]
    startup.worker_serve = _worker_serve  # type: ignore[assignment]
    startup.Manager = _start_sync_manager  # type: ignore[attr-defined]


def serve(config: Config, args: argparse.Namespace) -> int:
    """Run the HTTP server: one process by default, ``--workers N`` for N worker processes.

    Raises:
        StartupError: the port is taken or the data dir is unusable (checked before serving).
    """
    from sanic import Sanic
    from sanic.worker.loader import AppLoader

    from chessstats.app import create_app
    from chessstats.scheduler.registry import check_jobs_config

    _limit_malloc_arenas()  # before the first thread (the data dir check below starts aiosqlite's)
    check_jobs_config(config)
    setup_logging(config.log.level)
    server = config.server
    _check_port(server.host, server.port)
    _check_data_dir(config)
    if not config.upstream.contact.strip():
        log.warning(NO_CONTACT_WARNING)
    log.info(
        "chessstats serving on http://%s:%s (data dir %s, %d worker%s, jobs %s)", server.host, server.port,
        config.data_dir, server.workers, "" if server.workers == 1 else "s",
        "on" if config.scheduler.enabled else "off",
    )
    loader = AppLoader(factory=partial(create_app, config))
    app = loader.load()
    app.prepare(
        host=server.host, port=server.port, access_log=server.access_log, motd=False,
        single_process=server.workers == 1, workers=server.workers,
    )
    if server.workers == 1:
        Sanic.serve_single(primary=app)
        # The server closed its resources; end now, as each worker of --workers N does: a thread
        # still busy (an import's PGN parse, cancelled but not interruptible) must not hold the exit.
        _exit_now(0)
    else:
        os.environ[MANAGER_PID_ENV] = str(os.getpid())
        jobs_s = config.scheduler.stop_timeout_s if config.scheduler.enabled else 0.0
        _patch_sanic_manager(kill_after_s=server.shutdown_timeout_s + jobs_s + 2.0)
        Sanic.serve(primary=app, app_loader=loader)
    return 0


def migrate(config: Config, args: argparse.Namespace) -> int:
    """Apply pending migrations and print every migration's state."""
    from chessstats.resources import DataDir

    async def run() -> None:
        if config.store.engine == "postgresql":  # the data dir (cache, locks) as SQLite's open() makes it
            config.data_dir.mkdir(parents=True, exist_ok=True)
        db = DataDir(config.data_dir).database(config)
        await db.open(migrate=False)
        try:
            applied = await db.migrate()
            for version, name, at in await db.migration_status():
                print(f"{version:04d}_{name}: {'applied ' + at if at else 'pending'}")
            print(f"applied now: {len(applied)}")
        finally:
            await db.close()

    asyncio.run(run())
    return 0


def config_check(config: Config, args: argparse.Namespace) -> int:
    """Print the effective configuration (secrets masked) as JSON."""
    from chessstats.scheduler.registry import check_jobs_config

    check_jobs_config(config)
    raw = msgspec.to_builtins(config)
    for table, key in (("admin", "token"), ("lichess", "token")):
        if raw[table][key]:
            raw[table][key] = "********"
    if raw["store"]["url"] or raw["cache"]["url"]:  # the password of a postgresql:// or redis:// URL
        from chessstats.store.postgres import redact

        raw["store"]["url"], raw["cache"]["url"] = redact(raw["store"]["url"]), redact(raw["cache"]["url"])
    print(msgspec.json.format(msgspec.json.encode(raw)).decode())
    print("configuration is valid", file=sys.stderr)
    return 0


def cache(config: Config, args: argparse.Namespace) -> int:
    """``cache clear`` / ``cache stats``."""
    from chessstats.resources import DataDir, redis_backend

    backend = redis_backend(config)  # [cache] url: the cache every host shares
    ttl_cache = DataDir(config.data_dir).cache(config, memory_entries=0, backend=backend)
    try:
        if args.cache_command == "clear":
            print(f"cleared {ttl_cache.clear()} cache entries")
        else:
            stats = ttl_cache.stats()
            print(f"entries: {stats['entries']}\nsize: {stats['sizeBytes']} bytes")
    finally:
        ttl_cache.close()
        if backend is not None:
            backend.close()
    return 0


def jobs(config: Config, args: argparse.Namespace) -> int:
    """``jobs list`` / ``jobs run NAME``."""
    from chessstats.scheduler.cli import jobs_command

    setup_logging(config.log.level)
    return jobs_command(config, args)


def backup(config: Config, args: argparse.Namespace) -> int:
    """``backup FILE``: a consistent copy of the database (SQLite online backup), while the service runs.

    Raises:
        StartupError: no database in the data dir, or the copy failed.
    """
    from chessstats.backup import BackupError
    from chessstats.backup import backup as run_backup

    try:
        return run_backup(config, args.file)
    except BackupError as exc:
        raise StartupError(f"backup failed: {exc}") from exc


def restore(config: Config, args: argparse.Namespace) -> int:
    """``restore FILE``: replace the database with a backup (refused while the service runs).

    Raises:
        StartupError: the service runs, or FILE failed its integrity check.
    """
    from chessstats.backup import BackupError
    from chessstats.backup import restore as run_restore

    try:
        return run_restore(config, args.file)
    except BackupError as exc:
        raise StartupError(f"restore refused: {exc}") from exc
