"""Players: rows read from upstreams before they are stored, and the Player shape of the API."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chessstats.models.common import Model


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
    sex: str | None = None
    #: FIDE's inactive flag, kept as a field (None: the upstream does not say)
    inactive: bool | None = None
    #: which upstream the values came from: ``lichess`` (its FIDE mirror) or ``fide`` (community API)
    source: str = "fide"


@dataclass(slots=True)
class LichessAccount:
    """A Lichess account seen on a leaderboard: ratings ``{perf: {"rating", "progress"}}``."""

    username: str
    title: str | None
    ratings: dict[str, dict[str, Any]]



@dataclass(slots=True)
class LichessUser:
    """A Lichess account as ``/user/{username}`` describes it.

    ``ratings``: ``{perf: {"rating": int|None, "games": int|None, "rd": int|None, "provisional": bool}}``,
    with ``rating`` None for a perf with no games (Lichess sends its default 1500 for those);
    ``status``: ``active``, ``closed`` (``disabled``) or ``tosViolation``; times ISO 8601 UTC.
    """

    id: str
    username: str
    title: str | None
    name: str | None
    country: str | None
    status: str
    ratings: dict[str, dict[str, Any]]
    created_at: str | None
    seen_at: str | None
    url: str
    raw: bytes = b""


class Rating(Model, kw_only=True):
    """One perf's rating: ``rating`` (Elo; None for a perf with no games), ``games``, ``rd`` (Glicko
    deviation), ``provisional``; what the upstream does not say is None."""

    rating: int | None = None
    games: int | None = None
    rd: int | None = None
    provisional: bool | None = None


class Player(Model, kw_only=True):
    """A player on one platform (API.md "Player"). ``id`` is our integer id when stored; ``status``
    ``active``, ``closed`` or ``tosViolation``; times ISO 8601 UTC. FIDE profiles add ``birthYear``,
    ``sex``, ``inactive`` and ``source`` (the upstream the values came from)."""

    id: int | None = None
    platform: str
    username: str
    name: str | None = None
    title: str | None = None
    country: str | None = None
    status: str = "active"
    ratings: dict[str, Rating] = {}
    fide_id: int | None = None
    created_at: str | None = None
    seen_at: str | None = None
    url: str | None = None
    birth_year: int | None = None
    sex: str | None = None
    inactive: bool | None = None
    source: str | None = None
