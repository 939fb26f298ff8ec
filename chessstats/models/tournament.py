"""Tournament and standing shapes (API.md "Tournament", "Standing")."""

from __future__ import annotations

from chessstats.models.common import Model


class Clock(Model, kw_only=True):
    """Time control: ``limit`` and ``increment`` in seconds."""

    limit: int | None = None
    increment: int | None = None


class TournamentPlayer(Model, kw_only=True):
    """A player named by a tournament (its winner)."""

    username: str
    title: str | None = None


class Standing(Model, kw_only=True):
    """One row of a tournament's standings.

    Arena rows have an integer ``score``; swiss rows have ``points`` (float, half points) and
    ``tie_break``; the field that does not apply is None. ``rating`` and ``performance`` are Elo.
    """

    rank: int
    username: str
    title: str | None = None
    rating: int | None = None
    score: int | None = None
    points: float | None = None
    tie_break: float | None = None
    performance: int | None = None
    team: str | None = None


class Tournament(Model, kw_only=True):
    """A tournament as served by ``/api/tournaments``.

    ``id`` is the upstream's id (Lichess 8-character id). ``status`` is one of
    ``upcoming ongoing finished cancelled``. Times are ISO 8601 UTC; ``clock`` in seconds.
    ``standings`` (first page) is present on detail responses only, when known.
    ``import_state`` (``queued importing complete failed``) is set on detail responses of a
    finished tournament: its import runs in the background.
    """

    id: str
    platform: str
    system: str | None = None
    name: str | None = None
    status: str
    perf_type: str | None = None
    time_class: str | None = None
    variant: str | None = None
    clock: Clock | None = None
    rated: bool | None = None
    starts_at: str | None = None
    finishes_at: str | None = None
    nb_players: int | None = None
    winner: TournamentPlayer | None = None
    url: str | None = None
    standings: list[Standing] | None = None
    import_state: str | None = None
