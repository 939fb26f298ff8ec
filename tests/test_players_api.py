"""Player routes end to end: the real server on a socket, a real SQLite file and cache dir, the
recorded Lichess and FIDE responses served by the replay upstream.

Cases no recording has are GENERATED here (named ``GENERATED``) and registered on the replay with
``add()``: a closed account, a ``tosViolation`` account, a perf with no games, zero-based months
with a 31 March, an empty series, a FIDE rating ``"0"``, an unknown title, a community fide-api
``/player_info/`` answer. Every other body is a recording from ``tests/fixtures/``.
"""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import Server, add_json, err
from tests.pg_store import connect_store
from tests.replay import JSON, ReplayUpstream

LICHESS = "/lichess/api"


def ok(resp: httpx.Response) -> dict:
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["success"] is True and set(body) >= {"data", "cached", "source", "stale", "fetchedAt"}
    return body


def hit(server: Server, upstream: ReplayUpstream, path: str) -> dict:
    """A second request of ``path``: a cache HIT with no upstream request."""
    upstream.reset()
    resp = server.client.get(path)
    body = ok(resp)
    assert (resp.headers["x-cache"], body["cached"], body["source"]) == ("HIT", True, "cache"), path
    assert upstream.total() == 0, upstream.counts
    return body


pytestmark = pytest.mark.usefixtures("forget_added_routes")


# --- leaderboards --------------------------------------------------------------------------------


def test_leaderboard_miss_then_hit_and_cut_to_nb(server: Server, upstream: ReplayUpstream) -> None:
    resp = server.client.get("/api/players/lichess/top/bullet?nb=5")
    body = ok(resp)
    assert resp.headers["x-cache"] == "MISS" and body["source"] == "api"
    assert upstream.counts == {f"{LICHESS}/player/top/100/bullet": 1}
    top = json.loads(upstream.files["player.json"])["bullet"]
    assert [e["username"] for e in body["data"]] == [u["username"] for u in top[:5]]
    first = body["data"][0]
    assert set(first) == {"rank", "username", "title", "rating", "progress", "fideId", "federation"}
    assert first["rank"] == 1 and first["rating"] == top[0]["perfs"]["bullet"]["rating"]
    assert len(hit(server, upstream, "/api/players/lichess/top/bullet?nb=5")["data"]) == 5
    assert len(hit(server, upstream, "/api/players/lichess/top/bullet?nb=2")["data"]) == 2  # one entry per perf
    assert len(hit(server, upstream, "/api/players/lichess/top/bullet")["data"]) == len(top)


def test_leaderboard_bad_perf_type_and_nb(server: Server, upstream: ReplayUpstream) -> None:
    body = err(server.client.get("/api/players/lichess/top/bulet"), 400, "bad_request")
    assert "bullet" in body["error"] and "threeCheck" in body["error"]
    err(server.client.get("/api/players/lichess/top/correspondence"), 400, "bad_request")
    err(server.client.get("/api/players/lichess/top/blitz?nb=0"), 400, "bad_request")
    err(server.client.get("/api/players/lichess/top/blitz?nb=201"), 400, "bad_request")
    assert upstream.total() == 0


def test_leaderboard_after_rankings_updater_needs_no_upstream(start_server, upstream: ReplayUpstream) -> None:
    from tests.test_scheduler_server import db_runs, jobs_env, wait_for

    server = start_server("--workers", "1", env=jobs_env(rankings_updater="0 0 1 1 *"))
    assert server.admin("POST", "/api/admin/jobs/rankings-updater/run").status_code == 202
    wait_for(lambda: db_runs(server.data_dir, "rankings-updater")[-1]["state"] == "completed", timeout_s=30)
    upstream.reset()
    for perf in ("bullet", "blitz", "rapid", "classical"):
        resp = server.client.get(f"/api/players/lichess/top/{perf}?nb=3")
        body = ok(resp)
        assert resp.headers["x-cache"] == "HIT" and len(body["data"]) == 3
    assert upstream.total() == 0
    # the cache went: the hourly snapshot (younger than 30 min) serves it, still without Lichess
    server.admin("POST", "/api/admin/cache/clear")
    body = ok(server.client.get("/api/players/lichess/top/rapid?nb=1"))
    assert body["source"] == "database" and body["data"][0]["username"] == "CoolChessSchool"
    assert upstream.total() == 0


def test_fide_top_list(server: Server, upstream: ReplayUpstream) -> None:
    body = ok(server.client.get("/api/players/fide/top?limit=3"))
    assert upstream.counts == {"/fide/top_players/": 1}
    carlsen = body["data"][0]
    assert carlsen["fideId"] == 1503014 and carlsen["name"] == "Carlsen, Magnus" and carlsen["rating"] == 2823
    assert carlsen["federation"] == "NOR" and carlsen["source"] == "fide" and len(body["data"]) == 3
    assert len(hit(server, upstream, "/api/players/fide/top?limit=3")["data"]) == 3
    assert len(hit(server, upstream, "/api/players/fide/top")["data"]) == 100
    err(server.client.get("/api/players/fide/top?limit=101"), 400, "bad_request")


# --- Lichess profiles ----------------------------------------------------------------------------


def test_profile_case_insensitive_one_entry_one_row(server: Server, upstream: ReplayUpstream) -> None:
    body = ok(server.client.get("/api/players/lichess/Thibault"))
    assert upstream.counts == {f"{LICHESS}/user/thibault": 1}  # asked lower-cased
    data = body["data"]
    assert data["username"] == "thibault" and data["platform"] == "lichess" and data["status"] == "active"
    assert isinstance(data["id"], int) and data["name"] == "Thibault Duplessis"
    assert data["createdAt"] == "2010-11-22T08:48:00Z" and data["seenAt"].startswith("2025-10-23T")
    assert data["url"] == "https://lichess.org/@/thibault"
    recorded = json.loads(upstream.files["user_thibault.json"])["perfs"]["classical"]
    assert data["ratings"]["classical"] == {"rating": recorded["rating"], "games": recorded["games"],
                                            "rd": recorded["rd"], "provisional": True}
    assert (recorded["rating"], recorded["games"]) == (1806, 24)
    assert data["ratings"]["blitz"]["provisional"] is False
    assert "storm" not in data["ratings"]  # runs and scores, not a rating
    for spelling in ("thibault", "THIBAULT", "Thibault"):
        assert hit(server, upstream, f"/api/players/lichess/{spelling}")["data"] == data
    db = connect_store(server.data_dir)
    assert db.execute("SELECT count(*) FROM player_accounts WHERE platform = 'lichess'").fetchone()[0] == 1


def test_profile_production_shape_of_users_by_ids(server: Server, upstream: ReplayUpstream) -> None:
    data = ok(server.client.get("/api/players/lichess/maia1"))["data"]
    assert (data["title"], data["username"], data["ratings"]["rapid"]["rating"]) == ("BOT", "maia1", 1569)
    assert upstream.total() == 1


def test_profile_generated_account_states(server: Server, upstream: ReplayUpstream) -> None:
    # GENERATED: a closed account (Lichess sends ``disabled: true`` and little else)
    add_json(upstream, f"{LICHESS}/user/gen_closed", {"id": "gen_closed", "username": "Gen_Closed", "disabled": True})
    err(server.client.get("/api/players/lichess/GEN_CLOSED"), 410, "gone")
    upstream.reset()
    err(server.client.get("/api/players/lichess/gen_closed"), 410, "gone")
    assert upstream.total() == 0  # remembered
    db = connect_store(server.data_dir)
    assert db.execute("SELECT username, status FROM player_accounts WHERE username_key = 'gen_closed'").fetchall() \
        == [("Gen_Closed", "closed")]
    # GENERATED: a flagged account, with a perf never played (Lichess's default 1500 is not a rating)
    add_json(upstream, f"{LICHESS}/user/gen_tos", {
        "id": "gen_tos", "username": "Gen_Tos", "tosViolation": True, "createdAt": 1700000000000,
        "perfs": {"blitz": {"games": 12, "rating": 1712, "rd": 80, "prog": 5},
                  "chess960": {"games": 0, "rating": 1500, "rd": 500, "prog": 0, "prov": True}}})
    data = ok(server.client.get("/api/players/lichess/gen_tos"))["data"]
    assert data["status"] == "tosViolation"
    assert data["ratings"]["chess960"] == {"rating": None, "games": 0, "rd": None, "provisional": None}
    assert data["ratings"]["blitz"] == {"rating": 1712, "games": 12, "rd": 80, "provisional": False}
    hit(server, upstream, "/api/players/lichess/Gen_Tos")


def test_profile_unknown_is_a_negative_entry(server: Server, upstream: ReplayUpstream) -> None:
    err(server.client.get("/api/players/lichess/nobody_here_zz"), 404, "not_found")
    upstream.reset()
    err(server.client.get("/api/players/lichess/Nobody_Here_ZZ"), 404, "not_found")
    assert upstream.total() == 0
    err(server.client.get("/api/players/lichess/a"), 400, "bad_request")
    assert "Chess.com" in err(server.client.get("/api/players/chesscom/bad.name"), 400, "bad_request")["error"]
    err(server.client.get("/api/players/chesscom/top/classical"), 400, "bad_request")
    err(server.client.get("/api/players/lichess/bad.name"), 400, "bad_request")


# --- rating histories ----------------------------------------------------------------------------


def test_history_recorded_zero_based_months(server: Server, upstream: ReplayUpstream) -> None:
    body = ok(server.client.get("/api/players/lichess/ediz_gurel/history"))
    assert upstream.counts == {f"{LICHESS}/user/ediz_gurel/rating-history": 1}
    series = {s["perfType"]: s["points"] for s in body["data"]}
    assert len(body["data"]) == 15 and [s["perfType"] for s in body["data"]][-1] == "ultraBullet"
    assert "puzzle" in series and series["correspondence"] == []  # empty series kept
    assert len(series["bullet"]) == 384
    assert series["bullet"][-1] == {"date": "2025-07-15", "rating": 3342}  # [2025,6,15,3342]: month 6 is July
    assert hit(server, upstream, "/api/players/lichess/EDIZ_GUREL/history")["data"] == body["data"]
    # stored: after the cache goes it comes from the database, not from Lichess
    server.admin("POST", "/api/admin/cache/clear")
    again = ok(server.client.get("/api/players/lichess/Ediz_Gurel/history"))
    assert again["source"] == "database" and again["data"] == body["data"] and upstream.total() == 0


def test_history_generated_31_march_and_empty_series(server: Server, upstream: ReplayUpstream) -> None:
    # GENERATED: zero-based months: [2024, 2, 31] is 31 March (a one-based reading would be 31 February)
    add_json(upstream, f"{LICHESS}/user/gen_march/rating-history", [
        {"name": "Blitz", "points": [[2024, 0, 1, 1500], [2024, 2, 31, 1620], [2024, 11, 31, 1700]]},
        {"name": "Bullet", "points": []}, {"name": "Some New Variant", "points": [[2025, 1, 28, 1400]]}])
    data = ok(server.client.get("/api/players/lichess/gen_march/history"))["data"]
    assert data == [
        {"perfType": "blitz", "points": [{"date": "2024-01-01", "rating": 1500}, {"date": "2024-03-31", "rating": 1620},
                                         {"date": "2024-12-31", "rating": 1700}]},
        {"perfType": "bullet", "points": []},
        {"perfType": "Some New Variant", "points": [{"date": "2025-02-28", "rating": 1400}]},
    ]
    server.admin("POST", "/api/admin/cache/clear")
    upstream.reset()
    assert ok(server.client.get("/api/players/lichess/gen_march/history"))["data"] == data  # from the database
    assert upstream.total() == 0


# --- games ---------------------------------------------------------------------------------------


def test_games_streamed_never_cached(server: Server, upstream: ReplayUpstream) -> None:
    resp = server.client.get("/api/players/lichess/Lance5500/games?max=5")
    body = ok(resp)
    assert resp.headers["x-cache"] == "MISS" and body["cached"] is False and body["source"] == "api"
    assert resp.headers["cache-control"] == "public, max-age=0"
    game = body["data"][0]
    assert (game["id"], game["result"], game["status"], game["perfType"]) == ("nfjOkkBQ", "1-0", "resign", "bullet")
    assert game["white"] == {"username": "Lance5500", "title": "LM", "rating": 2813, "ratingDiff": None}
    assert game["opening"] == {"eco": "A00", "name": "Van't Kruijs Opening"}
    path = f"{LICHESS}/games/user/lance5500"
    assert upstream.counts == {path: 1}
    assert upstream.last_headers[path]["Accept"] == "application/x-ndjson"
    ok(server.client.get("/api/players/lichess/Lance5500/games?max=5"))
    assert upstream.counts == {path: 2}  # never cached


def test_games_cut_stream_is_an_error_and_bad_params_400(server: Server, upstream: ReplayUpstream) -> None:
    upstream.set_fault(r"/games/user/", "truncate")
    err(server.client.get("/api/players/lichess/lance5500/games"), 502, "upstream_error")
    upstream.clear_faults()
    for query in ("max=0", "max=301", "perfType=bogus", "since=abc"):
        err(server.client.get(f"/api/players/lichess/lance5500/games?{query}"), 400, "bad_request")
    calls = dict(upstream.counts)
    for platform in ("lichess/lance5500", "chesscom/hikaru"):  # a window that ends before it starts
        body = err(server.client.get(f"/api/players/{platform}/games?since=5&until=1"), 400, "bad_request")
        assert "since (5) is after until (1)" in body["error"]
    assert upstream.counts == calls  # refused before any upstream call
    ok(server.client.get("/api/players/lichess/lance5500/games?since=5&until=5&max=1"))  # one instant is a window


# --- FIDE ----------------------------------------------------------------------------------------


def test_fide_profile_from_lichess_mirror(server: Server, upstream: ReplayUpstream) -> None:
    data = ok(server.client.get("/api/players/fide/35009192"))["data"]
    assert upstream.counts == {f"{LICHESS}/fide/player/35009192": 1}
    assert (data["fideId"], data["name"], data["title"], data["country"], data["birthYear"], data["source"]) == (
        35009192, "Erigaisi Arjun", "GM", "IND", 2003, "lichess")
    assert data["ratings"]["standard"]["rating"] == 2757 and data["ratings"]["blitz"]["rating"] == 2766
    assert isinstance(data["id"], int)
    hit(server, upstream, "/api/players/fide/35009192")
    null_year = ok(server.client.get("/api/players/fide/8700761"))["data"]
    assert null_year["birthYear"] is None and null_year["ratings"]["standard"]["rating"] is None
    err(server.client.get("/api/players/fide/abc"), 400, "bad_request")
    err(server.client.get("/api/players/fide/999999999"), 404, "not_found")


def test_fide_generated_values_cleaned(server: Server, upstream: ReplayUpstream) -> None:
    # GENERATED: scraped strings, a rating "0", an empty one, a title FIDE uses that we do not know
    add_json(upstream, f"{LICHESS}/fide/player/90000006", {
        "id": "90000006", "name": "Gen, Player", "federation": "FID", "year": "", "title": "WH",
        "standard": "0", "rapid": 0, "blitz": "1850", "inactive": True})
    data = ok(server.client.get("/api/players/fide/90000006"))["data"]
    assert data["fideId"] == 90000006 and data["title"] == "WH" and data["inactive"] is True
    assert {k: v["rating"] for k, v in data["ratings"].items()} == {"standard": None, "rapid": None, "blitz": 1850}
    assert data["birthYear"] is None


def test_fide_profile_falls_back_to_community_api(server: Server, upstream: ReplayUpstream) -> None:
    upstream.set_fault(r"/lichess/api/fide/player/1503014$", "500")
    # GENERATED: the community fide-api /player_info/ shape (no recording exists)
    add_json(upstream, "/fide/player_info/", {
        "fide_id": "1503014", "fide_title": "Grandmaster", "federation": "Norway", "birth_year": 1990, "sex": "Male",
        "name": "Carlsen, Magnus", "classical_rating": 2823, "rapid_rating": 0, "blitz_rating": None})
    data = ok(server.client.get("/api/players/fide/1503014"))["data"]
    assert (data["source"], data["title"], data["country"], data["birthYear"]) == (
        "fide", "Grandmaster", "Norway", 1990)
    assert data["ratings"]["standard"]["rating"] == 2823 and data["ratings"]["rapid"]["rating"] is None
    assert upstream.counts == {f"{LICHESS}/fide/player/1503014": 1, "/fide/player_info/": 1}
    hit(server, upstream, "/api/players/fide/1503014")


def test_fide_history_packed_points(server: Server, upstream: ReplayUpstream) -> None:
    # recorded body whose player id the source does not state; served here under Erigaisi's id
    upstream.add(f"{LICHESS}/fide/player/35009192/ratings", upstream.files["fide_player_unknown-id_ratings.json"], JSON)
    ok(server.client.get("/api/players/fide/35009192"))
    upstream.reset()
    body = ok(server.client.get("/api/players/fide/35009192/history"))
    assert upstream.counts == {f"{LICHESS}/fide/player/35009192/ratings": 1}
    series = {s["perfType"]: s for s in body["data"]}
    assert [s["perfType"] for s in body["data"]] == ["standard", "rapid", "blitz"]
    assert series["blitz"]["points"] == [] and series["rapid"]["source"] == "lichess"
    assert series["rapid"]["points"][0] == {"date": "2015-08-01", "rating": 1568}
    assert series["standard"]["points"][-1] == {"date": "2025-12-01", "rating": 1832}
    assert len(series["standard"]["points"]) == 18
    hit(server, upstream, "/api/players/fide/35009192/history")


def test_fide_search(server: Server, upstream: ReplayUpstream) -> None:
    body = ok(server.client.get("/api/players/fide/search?q=Erigaisi"))
    assert upstream.counts == {f"{LICHESS}/fide/player": 1}
    assert [p["fideId"] for p in body["data"]] == [35009192, 35009060]
    assert body["data"][1]["title"] is None and body["data"][0]["source"] == "lichess"
    hit(server, upstream, "/api/players/fide/search?q=Erigaisi")
    err(server.client.get("/api/players/fide/search?q=Er"), 400, "bad_request")
    err(server.client.get("/api/players/fide/search"), 400, "bad_request")


# --- one identity --------------------------------------------------------------------------------


def test_stored_player_and_links(server: Server, upstream: ReplayUpstream) -> None:
    fide_pid = ok(server.client.get("/api/players/fide/35009192"))["data"]["id"]
    lichess_pid = ok(server.client.get("/api/players/lichess/thibault"))["data"]["id"]
    assert fide_pid != lichess_pid
    player = ok(server.client.get(f"/api/players/{fide_pid}"))
    assert player["source"] == "database" and [a["platform"] for a in player["data"]["accounts"]] == ["fide"]
    hit(server, upstream, f"/api/players/{fide_pid}")
    resp = server.admin("POST", f"/api/players/{fide_pid}/links".replace("/api/", "/api/admin/"),
                        json={"platform": "lichess", "account": "Thibault"})
    linked = ok(resp)["data"]
    assert sorted(a["platform"] for a in linked["accounts"]) == ["fide", "lichess"]
    assert linked["fideId"] == 35009192 and all(a["id"] == fide_pid for a in linked["accounts"])
    assert ok(server.client.get("/api/players/lichess/thibault"))["data"]["id"] == fide_pid  # the entry went
    err(server.client.get(f"/api/players/{lichess_pid}"), 404, "not_found")  # the empty player went
    # a second Lichess account for the same player contradicts the first: 409 with both shown
    conflict = err(server.admin("POST", f"/api/admin/players/{fide_pid}/links",
                                json={"platform": "lichess", "account": "maia1"}), 409, "conflict")
    assert conflict["existing"]["account"] == "thibault" and conflict["requested"]["account"] == "maia1"
    err(server.admin("POST", "/api/admin/players/99999/links", json={"platform": "lichess", "account": "maia1"}),
        404, "not_found")
    err(server.admin("POST", f"/api/admin/players/{fide_pid}/links", json={"platform": "x", "account": "y"}),
        400, "bad_request")
    assert server.client.post(f"/api/admin/players/{fide_pid}/links", json={}).status_code == 401


def test_lichess_top_players_job_refreshes_stored_profiles(start_server, upstream: ReplayUpstream) -> None:
    from tests.test_scheduler_server import db_runs, jobs_env, wait_for

    server = start_server("--workers", "1", env=jobs_env(lichess_top_players="0 0 1 1 *"))
    for name in ("maia1", "Maia5"):
        ok(server.client.get(f"/api/players/lichess/{name}"))
    upstream.reset()
    assert server.admin("POST", "/api/admin/jobs/lichess-top-players/run").status_code == 202
    run = wait_for(lambda: [r for r in db_runs(server.data_dir, "lichess-top-players") if r["state"] == "completed"],
                   timeout_s=30)[-1]
    assert "refreshed 2 stored profiles, skipped 0" in run["summary"] and " new, " in run["summary"]
    assert upstream.counts[f"{LICHESS}/users"] == 1  # one POST /api/users for both (the recorded production shape)
    assert upstream.last_headers[f"{LICHESS}/users"]["Content-Type"] == "text/plain"
    assert hit(server, upstream, "/api/players/lichess/MAIA5")["data"]["title"] == "BOT"  # re-cached by the job


def test_fide_history_falls_back_to_community_api(server: Server, upstream: ReplayUpstream) -> None:
    ok(server.client.get("/api/players/fide/8700761"))
    upstream.set_fault(r"/lichess/api/fide/player/8700761/ratings$", "500")
    # GENERATED: the community fide-api /player_history/ shape (newest first, missing values 0; no recording exists)
    add_json(upstream, "/fide/player_history/", [
        {"period": "2025-Oct", "classical_rating": 1510, "classical_games": 4, "rapid_rating": 0, "rapid_games": 0,
         "blitz_rating": 0, "blitz_games": 0, "date": "2025-10"},
        {"period": "2025-Sep", "classical_rating": 1498, "classical_games": 0, "rapid_rating": 1450,
         "rapid_games": 3, "blitz_rating": 0, "blitz_games": 0, "date": "2025-09"}])
    upstream.reset()
    data = ok(server.client.get("/api/players/fide/8700761/history"))["data"]
    assert data == [
        {"perfType": "standard",
         "points": [{"date": "2025-09-01", "rating": 1498}, {"date": "2025-10-01", "rating": 1510}], "source": "fide"},
        {"perfType": "rapid", "points": [{"date": "2025-09-01", "rating": 1450}], "source": "fide"},
        {"perfType": "blitz", "points": [], "source": "fide"},
    ]
    assert upstream.counts == {f"{LICHESS}/fide/player/8700761/ratings": 1, "/fide/player_history/": 1}
    hit(server, upstream, "/api/players/fide/8700761/history")
    server.admin("POST", "/api/admin/cache/clear")
    assert ok(server.client.get("/api/players/fide/8700761/history"))["data"] == data  # stored, with its source
    assert upstream.total() == 0


def test_fide_top_list_served_from_stored_players_when_the_api_fails(server: Server,
                                                                      upstream: ReplayUpstream) -> None:
    ok(server.client.get("/api/players/fide/top?limit=2"))
    server.admin("POST", "/api/admin/cache/clear")
    upstream.set_fault(r"/fide/", "html500")  # the community API and the official site
    body = ok(server.client.get("/api/players/fide/top?limit=2"))
    assert (body["source"], body["stale"]) == ("database", True)
    assert [e["fideId"] for e in body["data"]] == [1503014, body["data"][1]["fideId"]] and len(body["data"]) == 2


def test_fide_top_list_from_the_official_site_when_the_community_api_fails(server: Server,
                                                                           upstream: ReplayUpstream) -> None:
    upstream.set_fault(r"/fide/top_players/", "html500")
    body = ok(server.client.get("/api/players/fide/top?limit=3"))
    assert upstream.counts == {"/fide/top_players/": 1, "/fide/site/a_top.php": 1}
    assert body["data"][0] == {"rank": 1, "username": "Carlsen, Magnus", "name": "Carlsen, Magnus", "title": None,
                               "rating": 2823, "progress": None, "fideId": 1503014, "federation": "NOR",
                               "birthYear": 1990, "source": "ratings.fide.com"}
    hit(server, upstream, "/api/players/fide/top?limit=3")


def test_concurrent_first_requests_make_one_upstream_request(server: Server, upstream: ReplayUpstream) -> None:
    from concurrent.futures import ThreadPoolExecutor

    upstream.set_fault(r"/user/maia5$", "slow", seconds=0.5)
    spellings = ["maia5", "MAIA5", "Maia5", "mAiA5", "maia5", "MAIA5"]
    with ThreadPoolExecutor(len(spellings)) as pool:
        answers = list(pool.map(lambda u: httpx.get(f"{server.url}/api/players/lichess/{u}", timeout=30), spellings))
    assert [r.status_code for r in answers] == [200] * len(spellings)
    assert upstream.counts == {f"{LICHESS}/user/maia5": 1}
    assert len({r.json()["data"]["id"] for r in answers}) == 1
