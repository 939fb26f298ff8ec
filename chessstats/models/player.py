"""Player rows read from upstream lists (FIDE top list, Lichess leaderboards), before they are stored."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class FidePlayer:
    """A FIDE top-list row: ``fide_id`` (int), name ("Last, First"), federation (3 letters),
    title (None when the list does not say), ratings ``{"standard"|"rapid"|"blitz": int|None}``."""

    fide_id: int
    name: str | None
    federation: str | None
    title: str | None = None
    birth_year: int | None = None
    ratings: dict[str, int | None] = field(default_factory=dict)


@dataclass(slots=True)
class LichessAccount:
    """A Lichess account seen on a leaderboard: ratings ``{perf: {"rating", "progress"}}``."""

    username: str
    title: str | None
    ratings: dict[str, dict[str, Any]]

