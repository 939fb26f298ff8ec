"""Upstream responses kept with their validators (``upstream_responses``, migration 5).

One row per ``(upstream, path)``: the last 200 body, its ``ETag`` and ``Last-Modified`` strings as
the upstream sent them (never parsed), and ``checked_at`` (epoch seconds of the last 200 or 304).
The Chess.com service sends the validators back as ``If-None-Match`` / ``If-Modified-Since``, so a
refresh after a cache clear or a restart is still conditional; immutable bodies (past archive
months) are served from here without any upstream request.
"""

from __future__ import annotations

from dataclasses import dataclass

from chessstats.store.db import Database


@dataclass(slots=True)
class StoredResponse:
    """A stored upstream body and its validators (``etag``/``last_modified`` verbatim, or None)."""

    body: bytes
    etag: str | None
    last_modified: str | None
    checked_at: float


async def get(db: Database, upstream: str, path: str) -> StoredResponse | None:
    """The stored response of ``path`` (relative to the upstream's base), or None."""
    row = await db.fetchone(
        "SELECT body, etag, last_modified, checked_at FROM upstream_responses WHERE upstream = ? AND path = ?",
        (upstream, path))
    if row is None:
        return None
    return StoredResponse(bytes(row["body"]), row["etag"], row["last_modified"], float(row["checked_at"]))


async def put(db: Database, upstream: str, path: str, body: bytes, etag: str | None, last_modified: str | None,
              checked_at: float) -> None:
    """Store (or replace) the 200 body of ``path`` with its validators; ``checked_at`` in epoch seconds."""
    async with db.transaction() as tx:
        await tx.execute(
            "INSERT INTO upstream_responses (upstream, path, etag, last_modified, body, checked_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (upstream, path) DO UPDATE SET etag = excluded.etag,"
            " last_modified = excluded.last_modified, body = excluded.body, checked_at = excluded.checked_at",
            (upstream, path, etag, last_modified, body, checked_at))


async def touch(db: Database, upstream: str, path: str, checked_at: float) -> None:
    """Record a 304 for ``path``: the stored body is still current as of ``checked_at`` (epoch seconds)."""
    async with db.transaction() as tx:
        await tx.execute("UPDATE upstream_responses SET checked_at = ? WHERE upstream = ? AND path = ?",
                         (checked_at, upstream, path))
