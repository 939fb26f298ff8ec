"""Query-parameter parsing: every malformed value becomes a :class:`~chessstats.errors.BadRequest`."""

from __future__ import annotations

import re
from collections.abc import Iterable

from sanic import Request

from chessstats.errors import BadRequest

#: A Lichess tournament id: 8 letters or digits.
LICHESS_ID = re.compile(r"^[A-Za-z0-9]{8}$")


def int_param(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    """The integer query parameter ``name`` in ``lo..hi`` (``default`` when absent)."""
    if not request.query_string:
        return default
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= len(str(hi))):
        raise BadRequest(f"{name} must be a whole number from {lo} to {hi}, got {raw[:40]!r}")
    value = int(raw)
    if not lo <= value <= hi:
        raise BadRequest(f"{name} must be from {lo} to {hi}, got {value}")
    return value


def choice_param(request: Request, name: str, choices: Iterable[str], default: str | None = None) -> str | None:
    """The query parameter ``name`` if it is one of ``choices`` (``default`` when absent)."""
    if not request.query_string:
        return default
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    allowed = tuple(choices)
    if raw not in allowed:
        raise BadRequest(f"{name} must be one of {', '.join(allowed)}, got {raw[:40]!r}")
    return raw


def tournament_id(value: str, platform: str) -> str:
    """Validate a tournament id of ``platform`` (Lichess: 8 letters or digits)."""
    if platform == "lichess" and not LICHESS_ID.match(value):
        raise BadRequest(f"malformed Lichess tournament id {value[:40]!r}: expected 8 letters or digits")
    return value
