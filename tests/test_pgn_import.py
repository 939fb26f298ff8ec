"""PGN exports as the import reads them: SAN and results trusted, python-chess replay only where needed.

The import does not replay most games on a board (see ``chessstats/upstream/pgn.py``). These tests
replay **every recorded game** with python-chess and check what the reader stored: the SAN move for
move (python-chess's own SAN of each move, check marks included) and the status against the final
position. A reader that garbles a move, drops one or misreads a status fails here.
"""

from __future__ import annotations

import asyncio
import codecs
import random
import re

import chess
import chess.pgn
import pytest

from chessstats.models import Tournament
from chessstats.upstream.http import TruncatedStream
from chessstats.upstream.lichess import LichessClient
from chessstats.upstream.pgn import REPLAY_STEP, PgnReader, parse_pgn_games, pgn_tags
from tests.replay import FIXTURES, ReplayUpstream

LICHESS = FIXTURES / "lichess"
RECORDED = sorted(LICHESS.glob("*.pgn"))


def _board(tags: dict[str, str]) -> chess.Board:
    headers = chess.pgn.Headers(tags)
    board_class = headers.variant()
    return board_class(tags.get("FEN", board_class.starting_fen), chess960=headers.is_chess960())


@pytest.mark.parametrize("path", RECORDED, ids=lambda p: p.name)
def test_every_recorded_game_replays_move_for_move(path) -> None:
    reader = PgnReader()
    reader.feed(path.read_text(encoding="utf-8") + "\n")
    reader.close()
    assert reader.games and reader.skipped == 0
    for parsed in reader.games:
        game, tags = parsed.game, pgn_tags(parsed.pgn)
        board = _board(tags)
        # python-chess marks a move that wins a variant game (antichess, atomic, ...) with "#"; Lichess
        # does not: there the moves are compared without check marks
        standard = tags.get("Variant") in (None, "Standard", "Chess960", "From Position")
        sans = (game.moves or "").split()
        for ply, san in enumerate(sans):
            move = board.parse_san(san)  # raises on an illegal or ambiguous move
            theirs = board.san(move) if standard else board.san(move).rstrip("+#")
            assert theirs == san, (game.id, ply, san, theirs)
            board.push(move)
        # python-chess's own tokens of the mainline (comments, variations left out): no move dropped or added
        movetext = re.sub(r"\{[^}]*\}", " ", parsed.pgn.split("\n\n", 1)[1])
        while "(" in movetext:
            movetext = re.sub(r"\([^()]*\)", " ", movetext)
        assert sum(bool(m.group(1)) for m in chess.pgn.MOVETEXT_REGEX.finditer(movetext)) == len(sans), game.id
        status, normal = game.status, tags.get("Termination") == "Normal"
        if standard:
            assert (status == "mate") == (board.is_checkmate() and normal), game.id
            assert (status == "stalemate") == (board.is_stalemate() and normal), game.id
            if status in ("resign", "draw"):
                assert not board.is_checkmate() and not board.is_stalemate(), game.id
        else:
            assert (status == "variantEnd") == (board.is_variant_end() and normal and not board.is_checkmate()), game.id


def test_most_recorded_games_are_not_replayed() -> None:
    """Only Normal draws (stalemate or not) are replayed in a standard export; every game of a
    variant whose status needs the position is; the others are read without a board."""
    text = (LICHESS / "tournament_sH24g2zH_games.pgn").read_text(encoding="utf-8")
    reader = PgnReader()
    reader.feed(text)
    reader.close()
    normal_draws = sum(g.game.status in ("draw", "stalemate") and 'Termination "Normal"' in g.pgn
                       for g in reader.games)
    assert (len(reader.games), normal_draws, reader.replayed) == (1463, 74, 74)
    variant = PgnReader()
    variant.feed((LICHESS / "swiss_a2vcYLBJ_games.pgn").read_text(encoding="utf-8"))
    variant.close()
    normal = sum('Termination "Normal"' in g.pgn for g in variant.games)
    assert variant.replayed == normal and 0 < normal < len(variant.games)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_streamed_in_any_chunks_reads_as_the_whole_text(seed: int) -> None:
    """Chunk boundaries anywhere (inside a line, inside a multi-byte UTF-8 character, between the
    tags and the movetext) give the same games as the whole text; a byte order mark is skipped."""
    text = (LICHESS / "tournament_sH24g2zH_games.pgn").read_text(encoding="utf-8")
    whole, skipped = parse_pgn_games(text)
    raw = "\ufeff".encode() + text.encode()
    rng = random.Random(seed)
    reader = PgnReader()
    decoder = codecs.getincrementaldecoder("utf-8")()
    at, parsed_early = 0, 0
    while at < len(raw):
        step = rng.choice([1, 2, 3, 17, 500, 4096, 65536])
        reader.feed(decoder.decode(raw[at:at + step]))
        at += step
        while reader.parse(0.0005):
            pass
        if at < len(raw) // 2:
            parsed_early = len(reader.games)
    reader.feed(decoder.decode(b"", final=True))
    reader.close()
    assert parsed_early > 100  # games are read while the export still streams in
    assert skipped == reader.skipped == 0
    assert [(g.game, g.pgn, g.fide_ids) for g in reader.games] == [(g.game, g.pgn, g.fide_ids) for g in whole]


def test_a_long_replayed_game_is_replayed_across_slices() -> None:
    """A Normal draw is replayed on a board for stalemate, REPLAY_STEP moves per look at the clock: with
    no time budget each parse() call advances it one step, so the caller gets control back."""
    text = (LICHESS / "tournament_sH24g2zH_games.pgn").read_text(encoding="utf-8")
    whole, _ = parse_pgn_games(text)
    draws = [g for g in whole if g.game.status in ("draw", "stalemate") and 'Termination "Normal"' in g.pgn]
    longest = max(draws, key=lambda g: len(g.game.moves.split()))
    plies = len(longest.game.moves.split())
    assert plies > 4 * REPLAY_STEP
    reader = PgnReader()
    reader.feed(longest.pgn + "\n\n")
    calls = 1
    while reader.parse(0.0):
        calls += 1
        assert not reader.games  # stored only once its final position is known
    reader.close()
    assert calls >= plies // REPLAY_STEP
    assert [(g.game, g.pgn) for g in reader.games] == [(longest.game, longest.pgn)]
    broken = longest.pgn.replace(" 2. ", " 2. Ke5 ", 1)  # an illegal move: the game is skipped
    games, skipped = parse_pgn_games(broken + "\n\n")
    assert (games, skipped) == ([], 1)


def test_streamed_export_cut_off_is_an_error() -> None:
    text = (LICHESS / "tournament_sH24g2zH_games.pgn").read_text(encoding="utf-8")
    mid_line, after_tags = len(text) // 3, text.index("]\n\n1. ", len(text) // 2) + 2
    for cut in (mid_line, after_tags, text.index("[Event", 9000) + 20):
        reader = PgnReader()
        reader.feed(text[:cut])
        reader.parse()
        with pytest.raises(TruncatedStream):
            reader.close()


def _first_game(text: str, game_id: str) -> str:
    start = text.index(f'[Site "https://lichess.org/{game_id}"]')
    start = text.rindex("[Event", 0, start)
    return text[start:text.index("\n\n\n", start) + 3]


def test_moves_a_board_would_reject() -> None:
    """A replayed game with an illegal move is skipped (logged and counted); a token that is not SAN
    sends its game to the board too; a well-formed SAN of a decisive game read without a board is
    stored as the upstream wrote it (the trust decision: Lichess wrote it from its own board)."""
    text = (LICHESS / "tournament_sH24g2zH_games.pgn").read_text(encoding="utf-8")
    draw = _first_game(text, "Xl32c0aA")  # a Normal draw: replayed for stalemate
    decisive = _first_game(text, "bW7ZRlIx")  # Normal 0-1 without mate: resign, read without a board
    ok = _first_game(text, "zIlaCu9I")
    games, skipped = parse_pgn_games(draw.replace("2. Nf3", "2. Nf6") + ok)
    assert skipped == 1 and [g.game.id for g in games] == ["zIlaCu9I"]
    games, skipped = parse_pgn_games(decisive.replace("2. c4 Nf6", "2. c4 Nf9") + ok)
    assert skipped == 1 and [g.game.id for g in games] == ["zIlaCu9I"]
    games, skipped = parse_pgn_games(decisive.replace("2. c4 Nf6", "2. c4 Nf4") + ok)
    assert skipped == 0 and games[0].game.moves.startswith("d4 e6 c4 Nf4 Nc3")
    assert games[0].game.status == "resign"


def test_irregular_movetext_is_read_by_python_chess() -> None:
    """Movetext not in Lichess's regular shape (no space after the move number, a variation, a NAG,
    clock comments) is read as python-chess reads it, with the same SAN."""
    text = (LICHESS / "tournament_sH24g2zH_games.pgn").read_text(encoding="utf-8")
    game = _first_game(text, "bW7ZRlIx")
    plain, _ = parse_pgn_games(game)
    for variant in (game.replace("1. d4 e6", "1.d4 e6"), game.replace("2. c4", "2. c4 (2. Nf3 Nf6) $1"),
                    game.replace("1. d4 e6", "1. d4 { [%clk 0:03:00] } 1... e6 { [%clk 0:03:00] }")):
        reader = PgnReader()
        reader.feed(variant)
        reader.close()
        assert reader.skipped == 0 and reader.games[0].game.moves == plain[0].game.moves
        assert reader.games[0].game.status == "resign"


def test_fetch_games_yields_to_the_event_loop_while_it_reads(upstream: ReplayUpstream) -> None:
    """The recorded 1,463-game export is read on the event loop in slices: a concurrent task gets
    many turns while it streams and is read (a parse in one block would give it a handful)."""
    tournament = Tournament(id="sH24g2zH", platform="lichess", system="arena", name="x", status="finished",
                            perf_type="blitz", rated=True)

    async def run() -> tuple[int, int, int]:
        client = LichessClient(upstream.lichess_url, max_requests_per_s=1000)
        turns = 0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal turns
            while not done.is_set():
                turns += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        try:
            export = await client.fetch_games(tournament)
        finally:
            done.set()
            await task
            await client.aclose()
        return turns, len(export.games), export.skipped

    turns, games, skipped = asyncio.run(run())
    assert (games, skipped) == (1463, 0)
    assert turns >= 100, turns

