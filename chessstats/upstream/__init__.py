"""Upstream clients (Lichess, Chess.com, FIDE): HTTP, wire Structs private to each module, our models out."""
