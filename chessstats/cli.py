"""The ``chessstats`` command.

Verbs: ``serve``, ``migrate``, ``config check``, ``cache clear|stats``,
``jobs list|run NAME``, ``backup FILE``, ``restore FILE``, ``version``. ``--help`` and ``version``
never open the database. A bad configuration stops with a one-line message naming the key and exit
status 2.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from collections.abc import Sequence
from typing import Any

from chessstats import __version__
from chessstats.errors import ConfigError, StorageUnavailable


def _parser() -> argparse.ArgumentParser:
    files = argparse.ArgumentParser(add_help=False)
    files.add_argument("--config", metavar="FILE", help="TOML configuration file (default: $CHESSSTATS_CONFIG)")
    files.add_argument("--data-dir", metavar="DIR", help="data dir: SQLite file and cache (default ./data)")
    common = argparse.ArgumentParser(add_help=False, parents=[files])
    common.add_argument("--init", action="store_true",
                        help="create the data dir when it holds no database yet (commands other than serve refuse to)")

    parser = argparse.ArgumentParser(prog="chessstats", description="Self-hosted chess statistics backend.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", parents=[files], help="run the HTTP server (and the scheduler)")
    serve.add_argument("--init", action="store_true", help=argparse.SUPPRESS)  # refused in main(), with a reason
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 4000, or $PORT)")
    serve.add_argument("--workers", type=int, help="worker processes (default 1: a single process)")
    serve.add_argument("--no-jobs", action="store_true", help="do not run background jobs")
    serve.add_argument("--access-log", action="store_true", default=None, help="log every request")

    sub.add_parser("migrate", parents=[common], help="apply pending database migrations")
    config = sub.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    config_sub.add_parser("check", parents=[common], help="validate the configuration and print it as JSON")
    cache = sub.add_parser("cache", help="cache tools")
    cache_sub = cache.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    cache_sub.add_parser("clear", parents=[common], help="empty the cache (the database is untouched)")
    cache_sub.add_parser("stats", parents=[common], help="print cache entries and size")
    jobs = sub.add_parser("jobs", help="background jobs")
    jobs_sub = jobs.add_subparsers(dest="jobs_command", metavar="ACTION", required=True)
    jobs_sub.add_parser("list", parents=[common], help="jobs with schedule, next run, last run")
    run = jobs_sub.add_parser("run", parents=[common], help="run one job now in the foreground")
    run.add_argument("name", help="job name, e.g. tournament-monitor")
    backup = sub.add_parser("backup", parents=[common],
                            help="copy the database to FILE while the service runs (SQLite online backup)")
    backup.add_argument("file", metavar="FILE", help="the backup file to write (replaced atomically)")
    restore = sub.add_parser("restore", parents=[common],
                             help="replace the database with FILE (the service must be stopped)")
    restore.add_argument("file", metavar="FILE", help="a backup file written by chessstats backup")
    sub.add_parser("version", help="print the version")
    sub.add_parser("selfcheck")  # hidden (no help): checks a frozen build, see chessstats._frozen
    return parser


def _flags(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    flags: dict[str, dict[str, Any]] = {}
    if getattr(args, "data_dir", None):
        flags.setdefault("storage", {})["data_dir"] = args.data_dir
    for name in ("host", "port", "workers", "access_log"):
        value = getattr(args, name, None)
        if value is not None:
            flags.setdefault("server", {})[name] = value
    if getattr(args, "no_jobs", False):
        flags.setdefault("scheduler", {})["enabled"] = False
    return flags


#: Commands that work on an existing data dir: without ``--init`` they never create one.
NEEDS_DATA_DIR = ("migrate", "cache", "jobs", "backup", "restore")


#: ``serve --init``: serve needs no ``--init`` (it starts a new data dir itself, with a warning).
SERVE_INIT_MESSAGE = ("chessstats serve: --init is not needed: serve creates a new data dir itself (and logs a warning "
                      "when it does); --init is for migrate, cache, jobs, backup and restore")


#: ``backup`` / ``restore`` with the store on PostgreSQL: the engine has its own tools.
PG_BACKUP_MESSAGE = (
    "chessstats {command}: the store is on PostgreSQL ([store] url / DATABASE_URL): use PostgreSQL's own tools, "
    "e.g. `pg_dump --format=custom --file=FILE DBURL` to back up and `pg_restore --clean --dbname=DBURL FILE` "
    "to restore (with the service stopped). chessstats backup/restore copy the SQLite database only.")


def _new_data_dir(data_dir: Any, command: str, engine: str = "sqlite") -> str | None:
    """The message when ``data_dir`` holds no database (the command would start a new, empty data
    dir), else None. With the store on PostgreSQL the data dir (cache, locks) only has to exist."""
    from chessstats.store.db import DB_FILENAME

    if (data_dir / DB_FILENAME).exists() or (engine == "postgresql" and data_dir.is_dir()):
        return None
    where = "does not exist" if not data_dir.exists() else f"holds no {DB_FILENAME}"
    return (f"chessstats {command}: the data dir {data_dir} {where}: this would start a new, empty one. "
            "Give the service's data dir with --data-dir DIR (or CHESSSTATS_DATA_DIR, or [storage] data_dir "
            "in --config FILE / $CHESSSTATS_CONFIG), or add --init to create it here.")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:  # as argparse does for a command without its action (`chessstats jobs`)
        parser.print_usage(sys.stderr)
        print("chessstats: error: a command is required (chessstats --help lists them)", file=sys.stderr)
        return 2
    if args.command == "version":
        print(f"chessstats {__version__}")
        return 0
    if args.command == "serve" and args.init:
        print(SERVE_INIT_MESSAGE, file=sys.stderr)
        return 2
    if args.command == "selfcheck":
        from chessstats._frozen import selfcheck

        return selfcheck()
    from chessstats.config import load_config

    try:
        config = load_config(args.config, flags=_flags(args))
    except ConfigError as exc:
        print(f"chessstats: configuration error: {exc.message}", file=sys.stderr)
        return 2
    from chessstats import commands
    from chessstats.commands import StartupError

    if args.command in NEEDS_DATA_DIR and not args.init:
        missing = _new_data_dir(config.data_dir, args.command, config.store.engine)
        if missing is not None:
            print(missing, file=sys.stderr)
            return 2
    if args.command in ("backup", "restore") and config.store.engine == "postgresql":
        print(PG_BACKUP_MESSAGE.format(command=args.command), file=sys.stderr)
        return 2

    handler = {
        "serve": commands.serve, "migrate": commands.migrate, "config": commands.config_check,
        "cache": commands.cache, "jobs": commands.jobs, "backup": commands.backup, "restore": commands.restore,
    }[args.command]
    try:
        return handler(config, args)
    except ConfigError as exc:
        print(f"chessstats: configuration error: {exc.message}", file=sys.stderr)
        return 2
    except StartupError as exc:
        print(f"chessstats: {exc}", file=sys.stderr)
        return 1
    except sqlite3.DatabaseError as exc:
        print(f"chessstats: the database in {config.data_dir} cannot be used: {exc}", file=sys.stderr)
        return 1
    except StorageUnavailable as exc:  # the PostgreSQL server cannot be reached
        print(f"chessstats: the database cannot be used: {exc.message}", file=sys.stderr)
        return 1
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"chessstats: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if type(exc).__module__.startswith("asyncpg"):  # PostgreSQL refused: no such database, authentication
            print(f"chessstats: the database cannot be used: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    raise SystemExit(main())


