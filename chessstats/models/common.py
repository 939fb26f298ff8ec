"""Shared vocabulary: platforms, perf types, time helpers and the pagination shape."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

import msgspec

PLATFORMS: Final = ("lichess", "chesscom", "fide")

#: Lichess perf types (rating pools), as Lichess spells them.
PERF_TYPES: Final = (
    "ultraBullet", "bullet", "blitz", "rapid", "classical", "correspondence", "chess960",
    "crazyhouse", "antichess", "atomic", "horde", "kingOfTheHill", "racingKings", "threeCheck",
)

#: Tournament status values served by the API.
TOURNAMENT_STATUSES: Final = ("upcoming", "ongoing", "finished", "cancelled")


class Model(msgspec.Struct, rename="camel", kw_only=True):
    """Base of every wire model: camelCase names on the wire, keyword-only construction."""


class Pagination(Model, kw_only=True):
    """``{page, limit, total, totalPages}`` of a list response; ``page`` counts from 1."""

    page: int
    limit: int
    total: int
    total_pages: int

    @classmethod
    def of(cls, page: int, limit: int, total: int) -> Pagination:
        """Pagination for ``total`` items cut in pages of ``limit``."""
        return cls(page=page, limit=limit, total=total, total_pages=(total + limit - 1) // limit)


def utc_iso(value: int | float | str | datetime | None, *, ms: bool = True) -> str | None:
    """Normalise an upstream time to ISO 8601 UTC (``2026-11-29T10:00:00Z``).

    Args:
        value: epoch milliseconds (Lichess lists, games), epoch seconds (``ms=False``:
            Chess.com), an ISO 8601 string (Lichess tournament detail), a datetime, or None.
        ms: whether numbers are epoch milliseconds (True) or seconds (False).

    Returns:
        The ISO string with a ``Z`` suffix (seconds precision), or None when ``value`` is None
        or cannot be read as a time.
    """
    if value is None:
        return None
    try:
        if isinstance(value, datetime):
            dt = value if value.tzinfo else value.replace(tzinfo=UTC)
        elif isinstance(value, bool):
            return None
        elif isinstance(value, int | float):
            dt = datetime.fromtimestamp(value / 1000 if ms else value, tz=UTC)
        else:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_iso() -> str:
    """The current time as ISO 8601 UTC."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
