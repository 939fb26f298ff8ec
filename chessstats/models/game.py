"""Game shape (API.md "Game")."""

from __future__ import annotations

from dataclasses import dataclass

from chessstats.models.common import Model


class GamePlayer(Model, kw_only=True):
    """One side of a game. ``rating`` is Elo before the game, ``rating_diff`` its change."""

    username: str | None = None
    title: str | None = None
    rating: int | None = None
    rating_diff: int | None = None


class Opening(Model, kw_only=True):
    """``eco`` is the ECO code (A00–E99); ``name`` the opening's name."""

    eco: str | None = None
    name: str | None = None


class Game(Model, kw_only=True):
    """A game. ``moves`` are SAN separated by spaces; ``result`` is ``1-0 0-1 1/2-1/2 *``.

    ``status`` is the upstream's status name (``mate``, ``resign``, ``outoftime``, ``draw`` …),
    kept verbatim; ``winner`` is ``white``, ``black`` or None. Times are ISO 8601 UTC.
    """

    id: str
    platform: str
    url: str | None = None
    white: GamePlayer
    black: GamePlayer
    result: str
    status: str | None = None
    winner: str | None = None
    variant: str | None = None
    perf_type: str | None = None
    time_class: str | None = None
    rated: bool | None = None
    initial_fen: str | None = None
    opening: Opening | None = None
    moves: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    tournament_id: str | None = None


@dataclass(slots=True)
class ParsedGame:
    """One game of an upstream export: our :class:`Game`, its PGN text ("" when the upstream sent none),
    and the FIDE ids the export states for its players (``WhiteFideId``/``BlackFideId`` tags), as
    ``{username: FIDE ID}``."""

    game: Game
    pgn: str
    fide_ids: dict[str, int] | None = None
