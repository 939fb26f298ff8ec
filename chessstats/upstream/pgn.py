"""PGN game exports (Lichess's default export format) read with python-chess.

Lichess game exports come as PGN unless NDJSON is asked for. :func:`parse_pgn_games` reads a
whole export with python-chess's forgiving parser, collecting each game's tags and SAN moves
validating every move on the board of the game's variant (so SAN carries ``+`` and ``#``
as the standard wants, and the final position tells mate and stalemate apart).

A game's ``status`` is derived from its ``Termination`` and ``Result`` tags as Lichess writes
them (lila ``PgnDump``): ``Time forfeit`` → ``outoftime``, ``Abandoned`` → ``noStart``
(decisive) or ``aborted`` (``*``), ``Rules infraction`` → ``cheat``, ``Unterminated`` →
``started``, ``Normal`` → ``mate`` / ``stalemate`` / ``variantEnd`` (read off the final
position), else ``draw`` or ``resign``. A termination we do not know is kept verbatim.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass

import chess
import chess.pgn

from chessstats.models import Game, GamePlayer, Opening
from chessstats.models.common import utc_iso
from chessstats.models.game import ParsedGame
from chessstats.upstream.http import TruncatedStream

log = logging.getLogger(__name__)


class _TagsAndSan(chess.pgn.BaseVisitor["_Parsed"]):
    """A python-chess visitor that keeps tags, SAN moves (with ``+``/``#``) and the final board.

    Moves are validated by python-chess on the board of the game's variant (``Variant`` and
    ``FEN`` tags); variations are skipped; no game tree is built.
    """

    def begin_game(self) -> None:
        self.headers = chess.pgn.Headers()
        self.sans: list[str] = []
        self.errors: list[Exception] = []
        self.board: chess.Board | None = None
        self.token = ""
        self.terminated = False

    def begin_headers(self) -> chess.pgn.Headers:
        return self.headers

    def visit_header(self, tagname: str, tagvalue: str) -> None:
        self.headers[tagname] = tagvalue

    def begin_variation(self) -> chess.pgn.SkipType:
        return chess.pgn.SKIP

    def parse_san(self, board: chess.Board, san: str) -> chess.Move:
        self.token = san
        return board.parse_san(san)

    def visit_move(self, board: chess.Board, move: chess.Move) -> None:
        # ``board`` is the live board, before ``move`` is pushed: whether it is in check tells
        # whether the previous move gave check (cheaper than ``gives_check`` for this move).
        if self.sans and board.is_check():
            self.sans[-1] += "+"
        self.sans.append(self.token)
        self.board = board

    def visit_result(self, result: str) -> None:
        self.terminated = True

    def handle_error(self, error: Exception) -> None:
        self.errors.append(error)

    def result(self) -> _Parsed:
        board = self.board  # the last move has been pushed by now
        if board is not None and self.sans and board.is_check():
            self.sans[-1] += "#" if board.is_checkmate() else "+"
        return _Parsed(dict(self.headers), self.sans, self.errors, board, self.terminated)


@dataclass(slots=True)
class _Parsed:
    tags: dict[str, str]
    sans: list[str]
    errors: list[Exception]
    board: chess.Board | None
    terminated: bool  # the movetext ended with its result token (1-0, 0-1, 1/2-1/2, *)


_TERMINATIONS = {"Time forfeit": "outoftime", "Rules infraction": "cheat", "Unterminated": "started"}


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.replace("+", ""))
    except ValueError:
        return None


def _status(tags: dict[str, str], board: chess.Board | None, result: str) -> str | None:
    termination = tags.get("Termination")
    if termination is None:
        return None
    if termination in _TERMINATIONS:
        return _TERMINATIONS[termination]
    if termination == "Abandoned":
        return "aborted" if result == "*" else "noStart"
    if termination != "Normal":
        return termination
    if result in ("1-0", "0-1"):
        if board is not None and board.is_checkmate():
            return "mate"
        if board is not None and board.is_variant_end():
            return "variantEnd"
        return "resign"
    if result == "1/2-1/2":
        return "stalemate" if board is not None and board.is_stalemate() else "draw"
    return None


def _started_at(tags: dict[str, str]) -> str | None:
    date, clock = tags.get("UTCDate"), tags.get("UTCTime")
    if not date or not clock or "?" in date:
        return None
    return utc_iso(f"{date.replace('.', '-')}T{clock}Z")


def _game_id(tags: dict[str, str]) -> str | None:
    if tags.get("GameId"):
        return tags["GameId"]
    site = tags.get("Site", "")
    tail = site.rstrip("/").rsplit("/", 1)[-1]
    return tail if len(tail) == 8 and tail.isalnum() else None


def game_from_tags(
    tags: dict[str, str], sans: list[str], board: chess.Board | None = None, *, tournament_id: str | None = None, perf_type: str | None = None,
    rated: bool | None = None, site_url: str | None = None,
) -> Game | None:
    """Build a :class:`Game` from PGN tags and SAN moves; None when the game has no id."""
    game_id = _game_id(tags)
    if game_id is None:
        return None
    result = tags.get("Result", "*")
    if result not in ("1-0", "0-1", "1/2-1/2"):
        result = "*"
    eco = tags.get("ECO")
    opening = tags.get("Opening")
    variant = tags.get("Variant")
    return Game(
        id=game_id,
        platform="lichess",
        url=tags.get("Site") or site_url,
        white=GamePlayer(
            username=tags.get("White"), title=tags.get("WhiteTitle"), rating=_int(tags.get("WhiteElo")),
            rating_diff=_int(tags.get("WhiteRatingDiff")),
        ),
        black=GamePlayer(
            username=tags.get("Black"), title=tags.get("BlackTitle"), rating=_int(tags.get("BlackElo")),
            rating_diff=_int(tags.get("BlackRatingDiff")),
        ),
        result=result,
        status=_status(tags, board, result),
        winner={"1-0": "white", "0-1": "black"}.get(result),
        variant=_variant_key(variant),
        perf_type=perf_type,
        rated=rated,
        initial_fen=tags.get("FEN"),
        opening=Opening(eco=eco if eco and eco != "?" else None, name=opening) if (eco or opening) else None,
        moves=" ".join(sans),
        started_at=_started_at(tags),
        ended_at=None,
        tournament_id=tournament_id,
    )


def _variant_key(name: str | None) -> str | None:
    """Lichess PGN variant names ("Standard", "King of the Hill") to keys ("standard", "kingOfTheHill")."""
    if not name:
        return None
    words = name.replace("-", " ").split()
    return words[0].lower() + "".join(w.capitalize() for w in words[1:])


def parse_pgn_games(
    text: str, *, tournament_id: str | None = None, perf_type: str | None = None, rated: bool | None = None
) -> tuple[list[ParsedGame], int]:
    """Read every game of a PGN export.

    Args:
        text: the whole export (games separated by blank lines).
        tournament_id, perf_type, rated: context the tournament gives every game.

    Returns:
        ``(games, skipped)``: the games in export order, and how many were skipped because they
        had parse errors or no game id (each is logged).

    Raises:
        TruncatedStream: the last game's movetext does not end with a result token: the export
            was cut off (a short result is never returned).
    """
    handle = io.StringIO(text)
    games: list[ParsedGame] = []
    skipped = 0
    while True:
        start = handle.tell()
        parsed = chess.pgn.read_game(handle, Visitor=_TagsAndSan)
        if parsed is None:
            break
        end = handle.tell()
        if not parsed.terminated and not text[end:].strip():
            raise TruncatedStream(f"PGN export cut off in game {len(games) + skipped + 1}: no result token")
        if parsed.errors:
            log.warning("PGN game skipped (%s)", parsed.errors[0])
            skipped += 1
            continue
        game = game_from_tags(parsed.tags, parsed.sans, parsed.board, tournament_id=tournament_id,
                              perf_type=perf_type, rated=rated)
        if game is None:
            log.warning("PGN game without an id skipped")
            skipped += 1
            continue
        games.append(ParsedGame(game, text[start:end].strip() + "\n", stated_fide_ids(parsed.tags)))
    return games, skipped


def stated_fide_ids(tags: Mapping[str, str]) -> dict[str, int] | None:
    """``{username: FIDE ID}`` from a game's ``White``/``WhiteFideId`` and ``Black``/``BlackFideId`` tags
    (Lichess states them for players who linked their FIDE id); None when the game states none. A FIDE
    ID that is not a positive number is ignored."""
    out: dict[str, int] = {}
    for side in ("White", "Black"):
        username, fide_id = tags.get(side), (tags.get(f"{side}FideId") or "").strip()
        if username and fide_id.isdigit() and int(fide_id) > 0:
            out[username] = int(fide_id)
    return out or None


_TAG_LINE = re.compile(r'^\[(\w+) "((?:[^"\\]|\\.)*)"\]\s*$', re.MULTILINE)


def pgn_tags(pgn: str) -> dict[str, str]:
    """The tag pairs of one game's PGN text (the tag section only; values unescaped)."""
    head = pgn.split("\n\n", 1)[0]
    return {m.group(1): m.group(2).replace('\\"', '"').replace("\\\\", "\\") for m in _TAG_LINE.finditer(head)}
