"""The replay upstream's GENERATED player routes: FIDE top list and leaderboards of any ``nb``."""
from __future__ import annotations

import json

import httpx

from tests.replay import ReplayUpstream, fide_top_players


def test_fide_top_players_generated_from_recorded_page(upstream: ReplayUpstream) -> None:
    rows = httpx.get(upstream.url + "/fide/top_players/", params={"limit": 3, "history": "false"}).json()
    assert rows[0] == {"rank": "1", "name": "Carlsen, Magnus", "fide_id": "1503014", "country": "NOR",
                       "rating": "2823"}
    assert len(rows) == 3 and all(isinstance(v, str) for r in rows for v in r.values())
    assert len(httpx.get(upstream.url + "/fide/top_players/").json()) == 100
    assert len(httpx.get(upstream.url + "/fide/top_players/", params={"limit": "x"}).json()) == 100
    assert httpx.get(upstream.url + "/fide/player_info/").status_code == 404
    assert fide_top_players(b"<table></table>") == []


def test_leaderboard_generated_from_top10(upstream: ReplayUpstream) -> None:
    recorded = httpx.get(upstream.lichess_url + "/player/top/1/bullet").json()
    assert recorded["users"][0]["perfs"]["bullet"]["rating"] == 3342  # the recorded file wins
    generated = httpx.get(upstream.lichess_url + "/player/top/100/classical").json()
    assert 1 <= len(generated["users"]) <= 10 and "classical" in generated["users"][0]["perfs"]
    assert len(httpx.get(upstream.lichess_url + "/player/top/2/blitz").json()["users"]) == 2
    unknown = httpx.get(upstream.lichess_url + "/player/top/100/correspondence")
    assert (unknown.status_code, json.loads(unknown.content)) == (404, {"error": "Not found"})
    assert httpx.get(upstream.lichess_url + "/player/top/x/blitz").status_code == 404
