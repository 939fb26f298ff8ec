"""Our own data shapes (msgspec Structs); field names go on the wire in camelCase."""

from chessstats.models.common import Pagination, utc_iso
from chessstats.models.game import Game, GamePlayer, Opening
from chessstats.models.tournament import Clock, Standing, Tournament, TournamentPlayer

__all__ = ["Clock", "Game", "GamePlayer", "Opening", "Pagination", "Standing", "Tournament", "TournamentPlayer",
           "utc_iso"]
