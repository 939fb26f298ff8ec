"""What each CLI verb does (kept apart from argument parsing in :mod:`chessstats.cli`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import sqlite3
import sys
from functools import partial

import msgspec

from chessstats.config import Config
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


def _check_data_dir(config: Config) -> None:
    """Open the database once (applying migrations) before any worker starts.

    Raises:
        StartupError: the data dir or the database file cannot be used.
    """
    from chessstats.store import Database
    from chessstats.store.db import DB_FILENAME

    async def check() -> None:
        db = Database(config.data_dir / DB_FILENAME, config.storage.busy_timeout_ms)
        await db.open()
        await db.close()

    try:
        config.data_dir.mkdir(parents=True, exist_ok=True)
        asyncio.run(check())
    except sqlite3.DatabaseError as exc:
        raise StartupError(f"the database in {config.data_dir} cannot be used: {exc}") from exc
    except OSError as exc:
        raise StartupError(f"the data dir {config.data_dir} cannot be used: {exc.strerror or exc}") from exc


def serve(config: Config, args: argparse.Namespace) -> int:
    """Run the HTTP server: one process by default, ``--workers N`` for N worker processes.

    Raises:
        StartupError: the port is taken or the data dir is unusable (checked before serving).
    """
    from sanic import Sanic
    from sanic.worker.loader import AppLoader

    from chessstats.app import create_app
    from chessstats.scheduler.registry import check_jobs_config

    check_jobs_config(config)
    setup_logging(config.log.level)
    server = config.server
    _check_port(server.host, server.port)
    _check_data_dir(config)
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
    else:
        Sanic.serve(primary=app, app_loader=loader)
    return 0


def migrate(config: Config, args: argparse.Namespace) -> int:
    """Apply pending migrations and print every migration's state."""
    from chessstats.store import Database
    from chessstats.store.db import DB_FILENAME

    async def run() -> None:
        db = Database(config.data_dir / DB_FILENAME, config.storage.busy_timeout_ms)
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
    print(msgspec.json.format(msgspec.json.encode(raw)).decode())
    print("configuration is valid", file=sys.stderr)
    return 0


def cache(config: Config, args: argparse.Namespace) -> int:
    """``cache clear`` / ``cache stats``."""
    from chessstats.cache import TTLCache

    ttl_cache = TTLCache(config.data_dir / "cache", memory_entries=0)
    try:
        if args.cache_command == "clear":
            print(f"cleared {ttl_cache.clear()} cache entries")
        else:
            stats = ttl_cache.stats()
            print(f"entries: {stats['entries']}\nsize: {stats['sizeBytes']} bytes")
    finally:
        ttl_cache.close()
    return 0


def jobs(config: Config, args: argparse.Namespace) -> int:
    """``jobs list`` / ``jobs run NAME``."""
    from chessstats.scheduler.cli import jobs_command

    setup_logging(config.log.level)
    return jobs_command(config, args)
