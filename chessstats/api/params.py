"""Query-parameter parsing: every malformed value becomes a :class:`~chessstats.errors.BadRequest`.

Routes read their parameters from :func:`parse_query` (a query string parsed once and memoised:
Sanic's ``request.args`` parses on every request, about 15 µs of a cache hit's ~50 µs), and a
route's whole argument validation is itself memoised per ``(path parameters, query string)``,
so a hot URL is validated once.
"""

from __future__ import annotations

import functools
import re
import urllib.parse
from collections.abc import Iterable, Mapping

from chessstats.errors import BadRequest

#: A Lichess tournament id: 8 letters or digits.
LICHESS_ID = re.compile(r"^[A-Za-z0-9]{8}$")

Query = Mapping[str, list[str]]


@functools.lru_cache(maxsize=4096)
def parse_query(query_string: str) -> Query:
    """A query string as ``{name: [values]}``, memoised. The result is shared: never modify it."""
    return urllib.parse.parse_qs(query_string, keep_blank_values=True)


def _first(query: Query, name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def int_param(query: Query, name: str, default: int, lo: int, hi: int) -> int:
    """The integer parameter ``name`` in ``lo..hi`` (``default`` when absent or empty).

    Only ASCII digits count (``²`` or ``٣`` are digits to ``str.isdigit`` but not numbers here).
    """
    raw = _first(query, name)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= len(str(hi))):
        raise BadRequest(f"{name} must be a whole number from {lo} to {hi}, got {raw[:40]!r}")
    value = int(raw)
    if not lo <= value <= hi:
        raise BadRequest(f"{name} must be from {lo} to {hi}, got {value}")
    return value


def choice_param(query: Query, name: str, choices: Iterable[str], default: str | None = None) -> str | None:
    """The parameter ``name`` if it is one of ``choices`` (``default`` when absent or empty)."""
    raw = _first(query, name)
    if raw is None or raw == "":
        return default
    allowed = tuple(choices)
    if raw not in allowed:
        raise BadRequest(f"{name} must be one of {', '.join(allowed)}, got {raw[:40]!r}")
    return raw


def list_param(query: Query, name: str) -> list[str]:
    """Every comma-separated value of ``name`` over all its occurrences (``?ids=a,b&ids=c``)."""
    return [part.strip() for value in query.get(name, ()) for part in value.split(",") if part.strip()]


#: A Chess.com tournament url-id (``titled-tuesday-blitz-june-04-2024-4887777``, ``-33rd-chesscom-…``).
CHESSCOM_TOURNAMENT_ID = re.compile(r"^[A-Za-z0-9_-]+$")
#: The longest Chess.com tournament url-id accepted (characters).
CHESSCOM_ID_MAX_CHARS = 200


def tournament_id(value: str, platform: str) -> str:
    """Validate a tournament id of ``platform`` (Lichess: 8 letters or digits; Chess.com: a url-id)."""
    if platform == "lichess" and not LICHESS_ID.match(value):
        raise BadRequest(f"malformed Lichess tournament id {value[:40]!r}: expected 8 letters or digits")
    if platform == "chesscom" and len(value) > CHESSCOM_ID_MAX_CHARS:
        raise BadRequest(f"Chess.com tournament id {value[:40]!r}… is too long: {len(value)} characters, "
                         f"at most {CHESSCOM_ID_MAX_CHARS}")
    if platform == "chesscom" and not CHESSCOM_TOURNAMENT_ID.match(value):
        raise BadRequest(f"malformed Chess.com tournament id {value[:40]!r}: letters, digits, - and _ only")
    return value
