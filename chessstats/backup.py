"""``chessstats backup FILE`` and ``chessstats restore FILE``.

**Backup** copies the database with SQLite's online backup API (``sqlite3.Connection.backup``)
while the service runs, also during an import. The source connection holds one read transaction
for the whole copy: in WAL mode that never blocks the service's writers, and the copy is the
snapshot of its first step (without it, every write by another connection restarts the copy from
page 1: 351 restarts for one 30 MB copy under a steady writer). The copy is written beside
``FILE`` under a temporary name, switched to a single file (``journal_mode=DELETE``), checked
(``PRAGMA quick_check``), synced and renamed into place: ``FILE`` is never half-written.

**Restore** refuses while a process uses the data dir (a server worker or a CLI command holds
``server.lock`` shared, the scheduler holds ``scheduler.lock``), checks ``PRAGMA integrity_check``
of ``FILE`` first, then, holding ``server.lock`` exclusively so that no server starts meanwhile:
copies ``FILE`` into the data dir under a temporary name, checkpoints the current database's WAL
and keeps it as ``chessstats.db.pre-restore``, removes the old ``-wal``/``-shm`` (frames of the old
database must never be applied to the new one), renames the copy into place and empties the cache
(its entries were built from the old database).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path

from chessstats.config import Config
from chessstats.locks import FileLock, SharedLock
from chessstats.resources import DataDir

#: Pages copied per backup step (a progress line after each step of a large database).
STEP_PAGES = 4096
#: Databases with more pages than this get progress lines (4096-byte pages: 64 MiB).
PROGRESS_MIN_PAGES = 16_384
#: The copy of the previous database a restore keeps in the data dir.
PRE_RESTORE_SUFFIX = ".pre-restore"


class BackupError(Exception):
    """A backup or restore that cannot be done; the message says why (the CLI prints it, exit 1)."""


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _sidecars(db: Path) -> tuple[Path, Path, Path]:
    return Path(f"{db}-wal"), Path(f"{db}-shm"), Path(f"{db}-journal")


def copy_database(source: Path, dest: Path, *, step_pages: int = STEP_PAGES, busy_timeout_ms: int = 5000,
                  progress: Callable[[int, int], None] | None = None) -> int:
    """Copy the SQLite database ``source`` to ``dest`` (created or replaced atomically) with the online
    backup API, as one consistent snapshot; returns the number of pages copied.

    Args:
        source: the database file (may be in use by other processes, in WAL mode).
        dest: the file to write; a temporary ``<dest>.tmp-<pid>`` is renamed onto it when complete.
        step_pages: pages per backup step.
        busy_timeout_ms: how long to wait for a lock held by another connection.
        progress: called ``(pages copied, total pages)`` after each step.

    Raises:
        BackupError: the source is missing or not a database, the copy cannot be created, or it failed its
            check.
        OSError: ``dest`` cannot be written.
    """
    if not source.is_file():
        raise BackupError(f"no database at {source}")
    tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")
    for path in (tmp, *_sidecars(tmp)):
        _remove(path)
    try:
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot open {source}: {exc}") from exc
    try:
        src.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        src.execute("BEGIN")  # one read transaction for the whole copy: one snapshot, no restarts
        src.execute("SELECT count(*) FROM sqlite_master").fetchone()
        try:
            dst = sqlite3.connect(tmp, isolation_level=None)
        except sqlite3.Error as exc:  # the destination's fault, not the source's
            raise BackupError(f"cannot write the copy {dest}: {exc}") from exc
        try:
            def step(status: int, remaining: int, total: int) -> None:
                if progress is not None:
                    progress(total - remaining, total)

            src.backup(dst, pages=step_pages, progress=step, sleep=0)
            pages = int(dst.execute("PRAGMA page_count").fetchone()[0])
            dst.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
            check = [row[0] for row in dst.execute("PRAGMA quick_check").fetchall()]
            if check != ["ok"]:
                raise BackupError(f"the copy failed its check: {'; '.join(map(str, check[:5]))}")
        finally:
            dst.close()
    except sqlite3.DatabaseError as exc:
        for path in (tmp, *_sidecars(tmp)):
            _remove(path)
        raise BackupError(f"cannot back up {source}: {exc}") from exc
    except BaseException:
        for path in (tmp, *_sidecars(tmp)):
            _remove(path)
        raise
    finally:
        src.close()
    _fsync_file(tmp)
    os.replace(tmp, dest)
    _fsync_dir(dest.parent)
    return pages


def integrity_problems(path: Path) -> list[str]:
    """``PRAGMA integrity_check`` of the database file ``path`` (opened read-only): [] when intact.

    Raises:
        BackupError: the file is missing or is not an SQLite database.
    """
    if not path.is_file():
        raise BackupError(f"no such file: {path}")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{path} is not a usable SQLite database: {exc}") from exc
    try:
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as exc:
            raise BackupError(f"{path} is not a usable SQLite database: {exc}") from exc
        try:
            rows = [str(r[0]) for r in conn.execute("PRAGMA integrity_check").fetchall()]
        except sqlite3.DatabaseError as exc:  # damaged beyond what the check can list
            rows = [str(exc)]
    finally:
        conn.close()
    if rows != ["ok"]:
        return rows
    if "schema_migrations" not in tables:
        return [f"{path} is an SQLite database but not a chessstats database (no schema_migrations table)"]
    return []


def service_holder(paths: DataDir) -> str | None:
    """Why the data dir is in use (a running server or command), or None when it is free."""
    lock = SharedLock(paths.server_lock)
    try:
        if not lock.acquire(exclusive=True):
            return f"a chessstats process is using {paths.root} (it holds {paths.server_lock.name})"
    finally:
        lock.release()
    return scheduler_holder(paths)


def _progress_printer(label: str) -> Callable[[int, int], None]:
    shown = {"at": 0.0}

    def show(done: int, total: int) -> None:
        if total < PROGRESS_MIN_PAGES:
            return
        now = time.monotonic()
        if done < total and now - shown["at"] < 1.0:
            return
        shown["at"] = now
        print(f"{label}: {done * 100 // total}% ({done}/{total} pages)", file=sys.stderr, flush=True)

    return show


def backup(config: Config, dest: str | Path, *, step_pages: int = STEP_PAGES) -> int:
    """``chessstats backup FILE``: a consistent copy of the data dir's database to ``FILE``
    (works while the service runs). Prints a summary line; returns the exit status.

    Raises:
        BackupError: there is no database in the data dir, the folder of ``dest`` does not exist, or
            the copy failed.
    """
    paths = DataDir(config.data_dir)
    target = Path(dest).expanduser().resolve()
    if target == paths.db_path or target.name.startswith(paths.db_path.name) and target.parent == paths.root:
        raise BackupError(f"{target} is the database itself (or one of its files); back up to another file")
    if target.is_dir():
        raise BackupError(f"{target} is a folder; give a file name")
    if not target.parent.is_dir():
        raise BackupError(f"cannot back up to {target}: the folder {target.parent} does not exist")
    started = time.monotonic()
    pages = copy_database(paths.db_path, target, step_pages=step_pages,
                          busy_timeout_ms=config.storage.busy_timeout_ms, progress=_progress_printer("backup"))
    size = target.stat().st_size
    print(f"backed up {paths.db_path} to {target}: {size} bytes, {pages} pages, "
          f"{time.monotonic() - started:.1f} s")
    return 0


def restore(config: Config, source: str | Path) -> int:
    """``chessstats restore FILE``: replace the data dir's database with ``FILE`` (the service must be
    stopped). Prints what it did; returns the exit status.

    Raises:
        BackupError: the service runs, or ``FILE`` is missing, damaged or not a chessstats database.
    """
    paths = DataDir(config.data_dir)
    src = Path(source).expanduser().resolve()
    if src == paths.db_path:
        raise BackupError(f"{src} is the database itself")
    problems = integrity_problems(src)
    if problems:
        raise BackupError(f"{src} failed the integrity check; nothing was changed: {'; '.join(problems[:5])}")
    paths.root.mkdir(parents=True, exist_ok=True)
    lock = SharedLock(paths.server_lock)
    if not lock.acquire(exclusive=True):
        raise BackupError(f"the service is running ({paths.root} is in use): stop it first "
                          "(e.g. systemctl stop chessstats), then restore")
    try:
        why = scheduler_holder(paths)
        if why is not None:
            raise BackupError(f"{why}: stop the service first, then restore")
        db = paths.db_path
        tmp = db.with_name(f"{db.name}.restore-tmp")
        copy_database(src, tmp, busy_timeout_ms=config.storage.busy_timeout_ms, progress=_progress_printer("restore"))
        kept = None
        if db.exists():
            kept = db.with_name(db.name + PRE_RESTORE_SUFFIX)
            with contextlib.suppress(sqlite3.DatabaseError):  # a damaged old database is kept as it is
                conn = sqlite3.connect(db, isolation_level=None)
                try:
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # its committed WAL frames into the file
                finally:
                    conn.close()
            os.replace(db, kept)
        for path in _sidecars(db):  # never let the old WAL be applied to the new database
            _remove(path)
        os.replace(tmp, db)
        _fsync_dir(paths.root)
        cleared = _clear_cache(config, paths)
    finally:
        lock.release()
    print(f"restored {src} into {db}" + (f"; the previous database is kept as {kept}" if kept else "")
          + f"; {cleared} cache entries dropped")
    return 0


def scheduler_holder(paths: DataDir) -> str | None:
    """Why the scheduler lock of the data dir is held (a server's scheduler runs), or None."""
    if not paths.scheduler_lock.exists():
        return None
    sched = FileLock(paths.scheduler_lock)
    try:
        if not sched.acquire():
            return f"the scheduler of {paths.root} is running (it holds {paths.scheduler_lock.name})"
    finally:
        sched.release()
    return None


def _clear_cache(config: Config, paths: DataDir) -> int:
    from chessstats.resources import redis_backend

    backend = redis_backend(config)  # [cache] url: the restored database invalidates the shared cache
    if backend is None and not paths.cache_dir.exists():
        return 0
    cache = paths.cache(config, memory_entries=0, backend=backend)
    try:
        return cache.clear()
    finally:
        cache.close()
        if backend is not None:
            backend.close()
