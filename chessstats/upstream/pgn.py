"""PGN game exports (Lichess's default export format): read fast, replayed with python-chess only where needed.

Lichess game exports come as PGN unless NDJSON is asked for. :class:`PgnReader` reads an export
game by game as it streams in (:func:`parse_pgn_games` reads a whole text): each game's tags, its
SAN moves and its status.

**What is trusted and what is replayed.** Lichess writes every game's SAN from its own board (the
moves were validated by lila when they were played), with ``+`` and ``#`` as the standard wants,
and a ``Result`` and ``Termination`` tag. So a game whose movetext has the regular Lichess shape
(move numbers, SAN tokens, optional ``{...}`` comments, the result token) and whose status needs
no position is taken as written: its SAN is the upstream's, move for move, and it is not replayed
(about 50 µs a game instead of about 1.2 ms). A game is replayed on a python-chess board of its
variant (``Variant`` and ``FEN`` tags), as every game was before, when:

* its status needs the final position: a ``Normal`` draw (stalemate or not) and a ``Normal`` game
  of a variant other than standard, Chess960 and From Position (``variantEnd`` and the variant's
  own check rules);
* its movetext has any other shape (variations, NAGs, ``1.e4`` without a space, a token that is
  not SAN, no result token, ...).

A regular standard draw is replayed move by move on its board (:data:`REPLAY_STEP` moves between two
looks at the clock, so a long game does not hold the event loop) and keeps its SAN as written; the
other replayed games are read whole by python-chess's PGN reader and get python-chess's check marks.
A move python-chess rejects skips the game (logged and counted, as before). A well-formed but
illegal SAN in a game that is not replayed is stored as Lichess wrote it. The tests replay every
recorded game with python-chess and check the stored SAN move for move and the status against the
final position.

A game's ``status`` is derived from its ``Termination`` and ``Result`` tags as Lichess writes
them (lila ``PgnDump``): ``Time forfeit`` → ``outoftime``, ``Abandoned`` → ``noStart``
(decisive) or ``aborted`` (``*``), ``Rules infraction`` → ``cheat``, ``Unterminated`` →
``started``, ``Normal`` → ``mate`` (the last move ends with ``#``, or the final position is mate),
``stalemate`` / ``variantEnd`` (read off the final position), else ``draw`` or ``resign``. A
termination we do not know is kept verbatim.
"""

from __future__ import annotations

import functools
import io
import logging
import re
import time
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


_CLOCK = re.compile(r"(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d")


@functools.lru_cache(maxsize=64)
def _valid_date(date: str) -> bool:
    return utc_iso(f"{date.replace('.', '-')}T00:00:00Z") is not None


def _started_at(tags: dict[str, str]) -> str | None:
    date, clock = tags.get("UTCDate"), tags.get("UTCTime")
    if not date or not clock or "?" in date:
        return None
    if len(date) == 10 and _CLOCK.fullmatch(clock) and _valid_date(date):  # the usual shape, without datetime
        return f"{date[:4]}-{date[5:7]}-{date[8:]}T{clock}Z"
    return utc_iso(f"{date.replace('.', '-')}T{clock}Z")


def _game_id(tags: dict[str, str]) -> str | None:
    if tags.get("GameId"):
        return tags["GameId"]
    site = tags.get("Site", "")
    tail = site.rstrip("/").rsplit("/", 1)[-1]
    return tail if len(tail) == 8 and tail.isalnum() else None


def game_from_tags(
    tags: dict[str, str], sans: list[str], board: chess.Board | None = None, *, tournament_id: str | None = None,
    perf_type: str | None = None, rated: bool | None = None, site_url: str | None = None,
    status: str | None = None,
) -> Game | None:
    """Build a :class:`Game` from PGN tags and SAN moves; None when the game has no id.

    ``status``: the game's status when the caller knows it; otherwise it is derived from the tags
    and ``board`` (the final position, when the game was replayed)."""
    game_id = _game_id(tags)
    if game_id is None:
        return None
    result = _result(tags)
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
        status=status if status is not None else _status(tags, board, result),
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


#: Variants (``Variant`` tag) played on a standard board with standard check and mate.
_STANDARD_VARIANTS = frozenset({None, "", "Standard", "Chess960", "From Position"})
_SAN = r"(?:[NBKRQ]?[a-h]?[1-8]?x?[a-h][1-8](?:=[NBRQK])?|O-O(?:-O)?)[+#]?"
#: The regular Lichess movetext: ``1. e4 c5 2. Nf3 ... 1-0`` (move numbers followed by a space).
_REGULAR_MOVETEXT = re.compile(rf"\s*(?:(?:\d+\.(?:\.\.)?\s+)?{_SAN}\s+)*(?:1-0|0-1|1/2-1/2|\*)\s*")
_COMMENT = re.compile(r"\{[^}]*\}")
_TAG = chess.pgn.TAG_REGEX


#: ``_fast_game``'s answer for a regular standard game whose status needs the final position.
_DRAW_ON_BOARD = "?"


def _fast_game(tags: dict[str, str], movetext: str) -> tuple[list[str], str | None] | None:
    """The SAN moves and status of a game in Lichess's regular shape, or None when python-chess
    must read it (see the module docstring). The status is :data:`_DRAW_ON_BOARD` for a ``Normal``
    draw of a standard game: stalemate or not, the final position says."""
    if "{" in movetext:
        movetext = _COMMENT.sub(" ", movetext)
    if _REGULAR_MOVETEXT.fullmatch(movetext) is None:
        return None
    tokens = movetext.split()
    sans = [t for t in tokens[:-1] if not t[0].isdigit()]  # SAN never starts with a digit
    termination = tags.get("Termination")
    if termination != "Normal":
        return sans, _status(tags, None, _result(tags))
    if tags.get("Variant") not in _STANDARD_VARIANTS:
        return None
    result = _result(tags)
    if result in ("1-0", "0-1"):
        return sans, "mate" if sans and sans[-1].endswith("#") else "resign"
    if result == "1/2-1/2":
        return sans, _DRAW_ON_BOARD
    return sans, None


@dataclass(slots=True)
class _Replay:
    """A regular standard game being replayed move by move (a long game is replayed across slices)."""

    text: str
    tags: dict[str, str]
    sans: list[str]
    board: chess.Board
    ply: int = 0


def _result(tags: dict[str, str]) -> str:
    result = tags.get("Result", "*")
    return result if result in ("1-0", "0-1", "1/2-1/2") else "*"


#: Moves replayed between two looks at the clock (about 10-20 µs each).
REPLAY_STEP = 16


class PgnReader:
    """Reads a PGN export incrementally: :meth:`feed` text as it arrives, :meth:`parse` the games
    that are complete, :meth:`close` at the end; :attr:`games` and :attr:`skipped` are the result.

    Games are split as python-chess splits them (tag lines, at most one blank line between tags,
    then movetext lines up to a blank line). Each game is read as the module docstring says.

    Args:
        tournament_id, perf_type, rated: context the tournament gives every game.
    """

    def __init__(self, *, tournament_id: str | None = None, perf_type: str | None = None,
                 rated: bool | None = None) -> None:
        self.tournament_id, self.perf_type, self.rated = tournament_id, perf_type, rated
        self.games: list[ParsedGame] = []
        self.skipped = 0
        self.replayed = 0  # games replayed on a python-chess board
        self._pending: list[tuple[list[str], int]] = []  # complete games: (lines, index of the first movetext line)
        self._next = 0  # first pending game not parsed yet
        self._partial = ""  # text after the last newline fed
        self._lines: list[str] = []  # the game being split
        self._moves_at = -1  # index of its first movetext line; -1 while in its tags
        self._blanks = 0  # blank lines in its tags
        self._unterminated: int | None = None  # number of the last game read when it had no result token
        self._replay: _Replay | None = None  # the game being replayed on a board
        self._fed = False  # whether any text was fed

    def feed(self, text: str) -> None:
        """Add text of the export (any split: a line may straddle two calls)."""
        if not self._fed:
            text = text.lstrip("\ufeff")  # a byte order mark, as python-chess skips it
            self._fed = bool(text)
        if "\n" not in text:
            self._partial += text
            return
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self._line(line)

    def _line(self, line: str) -> None:
        lines = self._lines
        blank = not line or line.isspace()
        if self._moves_at >= 0:  # in the movetext: a blank line ends the game
            if blank:
                self._end()
            else:
                lines.append(line)
            return
        if not lines:  # between games: skip blank and comment lines
            if not blank and not line.startswith(("%", ";")):
                lines.append(line)
                if not line.startswith("["):
                    self._moves_at = 0
            return
        if line.startswith(("%", ";")) or (blank and self._blanks < 1):  # at most one blank line in the tags
            self._blanks += blank
            lines.append(line)
            return
        if line.startswith("["):
            self._blanks = 0
            lines.append(line)
            return
        self._moves_at = len(lines)
        if blank:  # a second blank line after the tags: a game without movetext
            self._end()
        else:
            lines.append(line)

    def _end(self) -> None:
        if self._lines:
            moves_at = self._moves_at if self._moves_at >= 0 else len(self._lines)
            self._pending.append((self._lines, moves_at))
        self._lines, self._moves_at, self._blanks = [], -1, 0

    def parse(self, budget_s: float | None = None) -> bool:
        """Read the complete games fed so far, for about ``budget_s`` seconds at most (None: all of
        them); returns whether work is left for another call. A game replayed on a board is replayed
        :data:`REPLAY_STEP` moves at a time, so a long game does not hold the caller for long either."""
        deadline = None if budget_s is None else time.perf_counter() + budget_s
        pending = self._pending
        while True:
            if self._replay is not None and not self._advance(deadline):
                return True
            if self._next >= len(pending):
                break
            lines, moves_at = pending[self._next]
            pending[self._next] = ([], 0)  # its text goes once read
            self._next += 1
            self._read(lines, moves_at)
            if deadline is not None and time.perf_counter() >= deadline:
                break
        if self._replay is not None or self._next < len(pending):
            return True
        pending.clear()
        self._next = 0
        return False

    def _advance(self, deadline: float | None) -> bool:
        """Replay the game under way up to ``deadline``; returns whether it is done (and stored or skipped)."""
        job = self._replay
        assert job is not None
        board, sans = job.board, job.sans
        try:
            while job.ply < len(sans):
                for san in sans[job.ply:job.ply + REPLAY_STEP]:
                    board.push(board.parse_san(san))
                job.ply += REPLAY_STEP
                if deadline is not None and job.ply < len(sans) and time.perf_counter() >= deadline:
                    return False
        except ValueError as exc:  # illegal, ambiguous or malformed: as python-chess's reader would
            self._replay = None
            log.warning("PGN game skipped (%s)", exc)
            self.skipped += 1
            return True
        self._replay = None
        self._store(job.text, job.tags, sans, "stalemate" if board.is_stalemate() else "draw")
        return True

    def close(self) -> None:
        """End of the export: read what is left.

        Raises:
            TruncatedStream: the last game's movetext does not end with a result token: the export
                was cut off (a short result is never returned).
        """
        if self._partial:
            self._line(self._partial)
            self._partial = ""
        self._end()
        self.parse()
        if self._unterminated is not None:
            raise TruncatedStream(f"PGN export cut off in game {self._unterminated}: no result token")

    def _read(self, lines: list[str], moves_at: int) -> None:
        number = len(self.games) + self.skipped + 1
        self._unterminated = None  # only the export's last game may lack its result token
        tags: dict[str, str] = {}
        for line in lines[:moves_at]:
            match = _TAG.match(line)
            if match:
                tags[match.group(1)] = match.group(2)
        text = "\n".join(lines)
        fast = _fast_game(tags, " ".join(lines[moves_at:])) if moves_at < len(lines) else None
        board = None
        if fast is not None:
            sans, status = fast
            if status == _DRAW_ON_BOARD:
                self.replayed += 1
                try:
                    board = chess.Board(tags.get("FEN", chess.STARTING_FEN),
                                        chess960=chess.pgn.Headers(tags).is_chess960())
                except ValueError as exc:
                    log.warning("PGN game skipped (%s)", exc)
                    self.skipped += 1
                    return
                board.chess960 = board.chess960 or board.has_chess960_castling_rights()
                self._replay = _Replay(text, tags, sans, board)
                return
        else:
            self.replayed += 1
            parsed = chess.pgn.read_game(io.StringIO(text + "\n"), Visitor=_TagsAndSan)
            if parsed is None:
                return
            if not parsed.terminated:
                self._unterminated = number
            if parsed.errors:
                log.warning("PGN game skipped (%s)", parsed.errors[0])
                self.skipped += 1
                return
            tags, sans, board, status = parsed.tags, parsed.sans, parsed.board, None
        self._store(text, tags, sans, status, board)

    def _store(self, text: str, tags: dict[str, str], sans: list[str], status: str | None,
               board: chess.Board | None = None) -> None:
        game = game_from_tags(tags, sans, board, tournament_id=self.tournament_id, perf_type=self.perf_type,
                              rated=self.rated, status=status)
        if game is None:
            log.warning("PGN game without an id skipped")
            self.skipped += 1
            return
        self.games.append(ParsedGame(game, text.strip() + "\n", stated_fide_ids(tags)))


def parse_pgn_games(
    text: str, *, tournament_id: str | None = None, perf_type: str | None = None, rated: bool | None = None
) -> tuple[list[ParsedGame], int]:
    """Read every game of a PGN export (see :class:`PgnReader`).

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
    reader = PgnReader(tournament_id=tournament_id, perf_type=perf_type, rated=rated)
    reader.feed(text)
    reader.close()
    return reader.games, reader.skipped


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
