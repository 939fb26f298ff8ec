"""chessstats: a self-hosted chess statistics backend (Lichess, Chess.com, FIDE)."""

__version__ = "0.1.0"
