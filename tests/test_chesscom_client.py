"""The Chess.com client and shapes in process, against the replay: conditional requests (ETag and the
opaque Last-Modified string), the duplicated charset of the PGN Content-Type, result codes, Unix seconds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chessstats.errors import NotFound
from chessstats.upstream import chesscom as cc
from chessstats.upstream.chesscom import ChesscomClient
from tests.replay import ReplayUpstream

FIXTURES = Path(__file__).parent / "fixtures" / "chesscom"


def meta(name: str) -> dict[str, str]:
    headers = json.loads((FIXTURES / f"{name}.meta.json").read_bytes())["headers"]
    return {k.lower(): v[0] for k, v in headers.items()}


@pytest.fixture
async def client(upstream: ReplayUpstream):
    c = ChesscomClient(upstream.url + "/chesscom/pub", contact="ops@example.org")
    yield c
    await c.aclose()


async def test_conditional_requests_send_the_validators_verbatim(client: ChesscomClient,
                                                                 upstream: ReplayUpstream) -> None:
    first = await client.get("/player/fabianocaruana")
    recorded = meta("player_fabianocaruana.json")
    assert (first.status, first.etag, first.last_modified) == (200, recorded["etag"], recorded["last-modified"])
    assert first.etag.startswith('W/"') and "GMT+0000" in first.last_modified  # weak; not an HTTP date
    again = await client.get("/player/fabianocaruana", etag=first.etag, last_modified=first.last_modified,
                             stored_size=len(first.body))
    assert (again.status, again.body, again.etag) == (304, b"", first.etag)
    only_date = await client.get("/player/fabianocaruana", last_modified=first.last_modified)
    assert only_date.status == 304  # the Last-Modified string alone, echoed as it came
    assert upstream.last_headers["/chesscom/pub/player/fabianocaruana"].get("If-Modified-Since") == first.last_modified
    assert (client.not_modified, client.bytes_saved) == (2, len(first.body))
    assert "contact: ops@example.org" in upstream.last_headers["/chesscom/pub/player/fabianocaruana"]["User-Agent"]


async def test_pgn_with_a_duplicated_charset_is_accepted(client: ChesscomClient) -> None:
    answer = await client.get("/player/fabianocaruana/games/2020/05/pgn")
    assert answer.status == 200 and answer.body.startswith(b'[Event "Live Chess"]')
    assert meta("player_fabianocaruana_games_2020_05.pgn")["content-type"].count("charset") == 2


async def test_unknown_user_envelope_is_not_found(client: ChesscomClient) -> None:
    with pytest.raises(NotFound):
        await client.get("/player/nonexistent_user_xyz_123/games/2026/09")


@pytest.mark.parametrize(("white", "black", "expected"), [
    ("win", "checkmated", ("1-0", "mate", "white")),
    ("resigned", "win", ("0-1", "resign", "black")),
    ("win", "timeout", ("1-0", "outoftime", "white")),
    ("abandoned", "win", ("0-1", "abandoned", "black")),
    ("win", "bughousepartnerlose", ("1-0", "bughousepartnerlose", "white")),
    ("agreed", "agreed", ("1/2-1/2", "draw", None)),
    ("stalemate", "stalemate", ("1/2-1/2", "stalemate", None)),
    ("timevsinsufficient", "timevsinsufficient", ("1/2-1/2", "draw", None)),
    ("50move", "50move", ("1/2-1/2", "draw", None)),
    ("win", "somethingnew", ("*", "somethingnew", None)),
])
def test_result_codes(white: str, black: str, expected: tuple) -> None:
    assert cc.result_of(white, black) == expected


def test_shapes() -> None:
    assert cc.country_code("https://api.chess.com/pub/country/CA") == "CA"
    assert cc.time_class_of("chess960_daily") == "daily960" and cc.time_class_of("chess_blitz") == "blitz"
    assert cc.time_class_of("fide") is None and cc.time_class_of("tactics") is None
    games = json.loads((FIXTURES / "player_fabianocaruana_games_2020_05.json").read_bytes())["games"]
    g = cc.game_to_model(games[0])
    assert (g.id, g.ended_at) == ("4814018950", "2020-05-05T14:30:59Z")  # Unix seconds, not ms
    assert cc.display_name({"username": "farzyplayschess",
                            "url": "https://www.chess.com/member/FarzyPlaysChess"}) == "FarzyPlaysChess"
    assert cc.san_moves(None) is None
