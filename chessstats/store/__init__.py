"""Durable data in SQLite (through aiosqlite): one writer, numbered migrations, one module per resource."""

from chessstats.store.db import Database

__all__ = ["Database"]
