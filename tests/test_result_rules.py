"""A game's result comes from ``winner`` and ``status``; times are ISO 8601 UTC whatever the upstream used."""

from __future__ import annotations

import pytest

from chessstats.models.common import utc_iso
from chessstats.upstream.lichess import decode_game, game_result
from chessstats.upstream.pgn import parse_pgn_games
from tests.replay import FIXTURES

LICHESS = FIXTURES / "lichess"


@pytest.mark.parametrize("winner, status, result", [
    ("white", "mate", "1-0"),
    ("black", "resign", "0-1"),
    ("white", "outoftime", "1-0"),
    (None, "draw", "1/2-1/2"),
    (None, "stalemate", "1/2-1/2"),
    (None, "outoftime", "1/2-1/2"),  # flag against insufficient material: nobody wins
    (None, "insufficientMaterialClaim", "1/2-1/2"),
    (None, "aborted", "*"),
    (None, "noStart", "*"),
    (None, "created", "*"),
    (None, "started", "*"),
    (None, "unknownFinish", "*"),
    (None, "someStatusFrom2030", "*"),  # unknown: never guessed to be a draw
    (None, None, "*"),
])
def test_result_from_winner_and_status(winner: str | None, status: str | None, result: str) -> None:
    assert game_result(winner, status) == result


def test_recorded_draw_without_winner() -> None:
    game = decode_game((LICHESS / "game_export_q7ZvsdUF.json").read_bytes())
    assert (game.status, game.winner, game.result) == ("draw", None, "1/2-1/2")


def test_recorded_unfinished_game_is_not_a_draw() -> None:
    game = decode_game((LICHESS / "game_export_4pSpQGR7.json").read_bytes())
    assert (game.status, game.winner, game.result) == ("started", None, "*")
    assert game.white.username == "White"  # imported game: players have only a name
    assert game.started_at == "2018-01-13T02:52:48Z"  # createdAt epoch ms → ISO UTC
    assert game.initial_fen == "rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1"


def test_unknown_status_and_title_kept_verbatim() -> None:
    raw = (LICHESS / "game_export_q7ZvsdUF.json").read_bytes()
    raw = raw.replace(b'"status":"draw"', b'"status":"timeTravel"')
    game = decode_game(raw)
    assert (game.status, game.result) == ("timeTravel", "*")


def test_pgn_export_results_and_statuses() -> None:
    text = (LICHESS / "tournament_sH24g2zH_games.pgn").read_text(encoding="utf-8")
    games, skipped = parse_pgn_games(text, tournament_id="sH24g2zH", perf_type="blitz", rated=True)
    assert (len(games), skipped) == (1463, 0)
    by_id = {g.game.id: g.game for g in games}
    assert len(by_id) == 1463
    for g in games:
        game = g.game
        if game.status == "mate":
            assert game.moves and game.moves.endswith("#")
        assert game.winner == {"1-0": "white", "0-1": "black"}.get(game.result)
        assert g.pgn.startswith("[Event ") and g.pgn.rstrip().endswith(game.result)
    abandoned = [g.game for g in games if g.game.status == "noStart"]
    assert len(abandoned) == 24 and all(g.result in ("1-0", "0-1") for g in abandoned)


def test_pgn_variant_games_use_their_variant_board() -> None:
    games, skipped = parse_pgn_games((LICHESS / "swiss_a2vcYLBJ_games.pgn").read_text(encoding="utf-8"))
    assert skipped == 0 and len(games) == 45
    assert {g.game.variant for g in games} == {"antichess"}
    assert sum(g.game.status == "variantEnd" for g in games) == 17


def test_pgn_tags_of_newer_exports() -> None:
    games, _ = parse_pgn_games((LICHESS / "tournament_may25bta_games_first.pgn").read_text(encoding="utf-8") + "\n\n")
    game = games[0].game
    assert (game.id, game.white.title, game.black.title, game.result) == ("9qJGj3E6", "FM", "GM", "0-1")
    assert game.moves == "e4 d5 exd5 Bg4 Nc3 Bxd1"


def test_pgn_illegal_move_skips_that_game_only() -> None:
    text = (LICHESS / "tournament_sH24g2zH_games.pgn").read_text(encoding="utf-8")
    first_end = text.index("\n\n\n") + 3
    broken = text[:first_end].replace("1. e4 c5 2. Nf3", "1. e4 c5 2. Nf6")
    games, skipped = parse_pgn_games(broken + text[first_end:first_end + 2000].rsplit("[Event", 1)[0])
    assert skipped == 1 and all(g.game.id != "Xl32c0aA" for g in games)


@pytest.mark.parametrize("value, ms, expected", [
    (1515811968418, True, "2018-01-13T02:52:48Z"),
    (1700000000, False, "2023-11-14T22:13:20Z"),
    ("2024-05-25T18:00:00Z", True, "2024-05-25T18:00:00Z"),
    ("2024-05-25T20:00:00+02:00", True, "2024-05-25T18:00:00Z"),
    ("2024-05-25T18:00:00", True, "2024-05-25T18:00:00Z"),
    (None, True, None),
    ("not a date", True, None),
    (True, True, None),
])
def test_times_normalised_to_iso_utc(value: object, ms: bool, expected: str | None) -> None:
    assert utc_iso(value, ms=ms) == expected  # type: ignore[arg-type]
