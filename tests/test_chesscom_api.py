"""Chess.com routes end to end: the real server on a socket, the recorded Chess.com responses (with
their weak ETags and non-HTTP-date Last-Modified) served by the replay, which answers 304 to matching
validators and counts requests, 304s and concurrent requests.

Cases no recording has are GENERATED here and registered with ``add()`` (see fixtures/MANIFEST.md):
archive lists, a bughouse game without PGN, an internal-error month, a closed account.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server, add_json, err, ok
from tests.replay import JSON, ReplayUpstream

CC = "/chesscom/pub"
FIXTURES = Path(__file__).parent / "fixtures" / "chesscom"
#: bytes of the recorded profile and stats of fabianocaruana (what a 304 does not re-download)
PROFILE_BYTES = (FIXTURES / "player_fabianocaruana.json").stat().st_size + \
    (FIXTURES / "player_fabianocaruana_stats.json").stat().st_size
SAVED: dict[str, int] = {"requests": 0, "not_modified": 0, "bytes": 0}


def hit(server: Server, upstream: ReplayUpstream, path: str) -> dict:
    upstream.reset()
    resp = server.client.get(path)
    body = ok(resp)
    assert (resp.headers["x-cache"], body["cached"]) == ("HIT", True), path
    assert upstream.total() == 0, upstream.counts
    return body


def tally(upstream: ReplayUpstream) -> None:
    SAVED["requests"] += upstream.total()
    SAVED["not_modified"] += upstream.not_modified
    SAVED["bytes"] += upstream.bytes_saved


pytestmark = pytest.mark.usefixtures("forget_added_routes")


def archives(upstream: ReplayUpstream, user: str, *months: str) -> None:
    """GENERATED: an archive list (the recorded afgano29 list's shape) naming ``months`` (``YYYY/MM``)."""
    add_json(upstream, f"{CC}/player/{user}/games/archives",
             {"archives": [f"https://api.chess.com/pub/player/{user}/games/{m}" for m in months]})


def recorded_games() -> list[dict]:
    return json.loads((FIXTURES / "player_fabianocaruana_games_2020_05.json").read_bytes())["games"]


# --- the polite client ------------------------------------------------------------------------


def test_profile_merges_stats_and_a_second_request_is_a_hit(server: Server, upstream: ReplayUpstream) -> None:
    body = ok(server.client.get("/api/players/chesscom/FabianoCaruana"))
    p = body["data"]
    assert (p["platform"], p["username"], p["title"], p["country"], p["status"]) == \
        ("chesscom", "FabianoCaruana", "GM", "US", "premium")
    stats = json.loads((FIXTURES / "player_fabianocaruana_stats.json").read_bytes())
    for key, tc in (("chess_blitz", "blitz"), ("chess_rapid", "rapid"), ("chess_bullet", "bullet")):
        if key in stats:
            assert p["ratings"][tc]["rating"] == stats[key]["last"]["rating"]
            assert p["ratings"][tc]["rd"] == stats[key]["last"]["rd"]
            assert p["ratings"][tc]["record"]["win"] == stats[key]["record"]["win"]
    assert p["fideSelfReported"] == (stats.get("fide") or None)
    assert p["fideId"] is None
    assert p["createdAt"].endswith("Z") and p["createdAt"].startswith("20")  # Unix seconds, not ms
    assert upstream.counts == {f"{CC}/player/fabianocaruana": 1, f"{CC}/player/fabianocaruana/stats": 1}
    ua = upstream.last_headers[f"{CC}/player/fabianocaruana"].get("User-Agent")
    assert ua.startswith("chessstats/")
    tally(upstream)
    hit(server, upstream, "/api/players/chesscom/fabianocaruana")  # case-insensitive: one entry
    check = server.client.get("/health").json()["checks"]["chesscom"]
    assert check["status"] == "ok" and check["notModified"] == 0


def test_a_refresh_after_a_cache_clear_is_conditional_and_answered_304(
        server: Server, upstream: ReplayUpstream) -> None:
    ok(server.client.get("/api/players/chesscom/fabianocaruana"))
    tally(upstream)
    assert server.admin("POST", "/api/admin/cache/clear").status_code == 200
    upstream.reset()
    body = ok(server.client.get("/api/players/chesscom/fabianocaruana"))
    assert body["data"]["username"] == "FabianoCaruana"
    assert upstream.total() == 2 and upstream.not_modified == 2
    assert upstream.bytes_saved == PROFILE_BYTES
    sent = upstream.last_headers[f"{CC}/player/fabianocaruana"]
    meta = json.loads((FIXTURES / "player_fabianocaruana.json.meta.json").read_bytes())["headers"]
    assert sent.get("If-None-Match") == meta["etag"][0]
    assert sent.get("If-Modified-Since") == meta["last-modified"][0]  # echoed verbatim, never parsed
    tally(upstream)


def test_validators_survive_a_restart(start_server: object, upstream: ReplayUpstream, tmp_path: Path) -> None:
    first = start_server()  # type: ignore[operator]
    ok(first.client.get("/api/players/chesscom/fabianocaruana"))
    first.stop()
    import shutil

    from tests.redis_server import ON_REDIS, redis_server
    if ON_REDIS:  # the cache is in Redis (TEST_CACHE=redis): empty it there
        redis_server().flush()
    else:
        shutil.rmtree(tmp_path / "data" / "cache")
    upstream.reset()
    second = start_server()  # type: ignore[operator]
    ok(second.client.get("/api/players/chesscom/fabianocaruana"))
    assert upstream.total() == 2 and upstream.not_modified == 2
    tally(upstream)


def test_user_agent_names_the_configured_contact(start_server: object, upstream: ReplayUpstream) -> None:
    srv = start_server(env={"CHESSSTATS_CONTACT": "ops@example.org"})  # type: ignore[operator]
    ok(srv.client.get("/api/players/chesscom/fabianocaruana"))
    ua = upstream.last_headers[f"{CC}/player/fabianocaruana"].get("User-Agent")
    assert ua.startswith("chessstats/") and "contact: ops@example.org" in ua


def test_unknown_user_is_404_remembered(server: Server, upstream: ReplayUpstream) -> None:
    err(server.client.get("/api/players/chesscom/nonexistent_user_xyz_123"), 404, "not_found")
    assert upstream.total() == 1
    upstream.reset()
    err(server.client.get("/api/players/chesscom/nonexistent_user_xyz_123"), 404, "not_found")
    assert upstream.total() == 0


def test_malformed_username_is_400_without_an_upstream_call(server: Server, upstream: ReplayUpstream) -> None:
    for bad in ("bad.name", "x%20y", "a%27b"):
        err(server.client.get(f"/api/players/chesscom/{bad}"), 400, "bad_request")
        err(server.client.get(f"/api/players/chesscom/{bad}/games"), 400, "bad_request")
    assert upstream.total() == 0


def test_html_403_is_upstream_blocked(server: Server, upstream: ReplayUpstream) -> None:
    upstream.set_fault(r"^/chesscom/", "html403")
    body = err(server.client.get("/api/players/chesscom/fabianocaruana"), 502, "upstream_blocked")
    assert "contact" in body["error"]


def test_429_is_upstream_rate_limited_and_pauses(server: Server, upstream: ReplayUpstream) -> None:
    upstream.set_fault(r"^/chesscom/", "429-retry", seconds=30)
    resp = server.client.get("/api/players/chesscom/fabianocaruana")
    err(resp, 503, "upstream_rate_limited")
    assert int(resp.headers["retry-after"]) > 0
    upstream.clear_faults()
    upstream.reset()
    err(server.client.get("/api/players/chesscom/hikaru"), 503, "upstream_rate_limited")  # paused: no call
    assert upstream.total() == 0


def test_closed_account_is_410(server: Server, upstream: ReplayUpstream) -> None:
    profile = json.loads((FIXTURES / "player_fabianocaruana.json").read_bytes())
    profile.update(username="closedguy", url="https://www.chess.com/member/ClosedGuy",
                   status="closed:fair_play_violations")  # GENERATED: no closed account is recorded
    add_json(upstream, f"{CC}/player/closedguy", profile)
    add_json(upstream, f"{CC}/player/closedguy/stats", {})
    err(server.client.get("/api/players/chesscom/ClosedGuy"), 410, "gone")


def test_a_chesscom_account_links_to_a_stored_player(server: Server, upstream: ReplayUpstream) -> None:
    lichess = ok(server.client.get("/api/players/lichess/thibault"))["data"]
    resp = server.admin("POST", f"/api/admin/players/{lichess['id']}/links",
                        json={"platform": "chesscom", "account": "FabianoCaruana"})
    player = ok(resp)["data"]
    accounts = {a["platform"]: a for a in player["accounts"]}
    assert set(accounts) == {"lichess", "chesscom"}
    cc = accounts["chesscom"]
    assert cc["username"] == "FabianoCaruana" and cc["id"] == lichess["id"]
    assert cc["ratings"]["blitz"]["rating"] is not None
    profile = ok(server.client.get("/api/players/chesscom/fabianocaruana"))["data"]
    assert profile["id"] == lichess["id"]  # the cached profile was dropped with the link
    bad = server.admin("POST", f"/api/admin/players/{lichess['id']}/links",
                       json={"platform": "chesscom", "account": "bad.name"})
    assert bad.status_code == 400


# --- leaderboards and titled lists --------------------------------------------------------------


def test_one_leaderboards_request_serves_every_time_class(server: Server, upstream: ReplayUpstream) -> None:
    recorded = json.loads((FIXTURES / "leaderboards.json").read_bytes())
    for tc, board in (("blitz", "live_blitz"), ("bullet", "live_bullet"), ("rapid", "live_rapid"),
                      ("daily", "daily"), ("daily960", "daily960")):
        data = ok(server.client.get(f"/api/players/chesscom/top/{tc}?nb=10"))["data"]
        assert len(data) == min(10, len(recorded[board]))
        first = recorded[board][0]
        assert (data[0]["rank"], data[0]["username"], data[0]["rating"]) == (1, first["username"], first["score"])
        assert data[0]["federation"] == first["country"].rsplit("/", 1)[-1]
    assert upstream.counts == {f"{CC}/leaderboards": 1}
    tally(upstream)
    hit(server, upstream, "/api/players/chesscom/top/blitz?nb=5")
    err(server.client.get("/api/players/chesscom/top/classical"), 400, "bad_request")


def test_titled_list(server: Server, upstream: ReplayUpstream) -> None:
    body = ok(server.client.get("/api/players/chesscom/titled/GM"))
    data = body["data"]
    assert data["title"] == "GM" and data["count"] == body["pagination"]["total"] > 1000
    assert len(data["players"]) == body["pagination"]["limit"] == 100  # the first page
    tally(upstream)
    hit(server, upstream, "/api/players/chesscom/titled/gm")
    err(server.client.get("/api/players/chesscom/titled/XX"), 400, "bad_request")


# --- games ------------------------------------------------------------------------------------


def test_games_from_a_past_month_are_fetched_once(server: Server, upstream: ReplayUpstream) -> None:
    archives(upstream, "fabianocaruana", "2020/05")
    data = ok(server.client.get("/api/players/chesscom/fabianocaruana/games?max=300"))["data"]
    games = recorded_games()
    assert len(data) == len(games)
    assert [g["endedAt"] for g in data] == sorted((g["endedAt"] for g in data), reverse=True)
    first = next(g for g in data if g["id"] == "4814018950")
    assert (first["result"], first["status"], first["winner"], first["timeClass"]) == ("1-0", "mate", "white", "rapid")
    assert first["endedAt"] == "2020-05-05T14:30:59Z" and first["startedAt"] == "2020-05-05T13:07:02Z"
    assert first["moves"].startswith("e4 e5 ") and "{" not in first["moves"]
    assert first["white"] == {"username": "FabianoCaruana", "title": None, "rating": 2773, "ratingDiff": None}
    assert upstream.counts[f"{CC}/player/fabianocaruana/games/2020/05"] == 1
    tally(upstream)
    upstream.reset()
    again = ok(server.client.get("/api/players/chesscom/fabianocaruana/games?max=5&timeClass=rapid"))["data"]
    assert len(again) <= 5 and all(g["timeClass"] == "rapid" for g in again)
    assert upstream.total() == 0  # the archive list is checked at most every 5 min; a past month never again


def test_empty_month_bughouse_and_failed_month(server: Server, upstream: ReplayUpstream) -> None:
    archives(upstream, "anomen_s", "2025/05")
    assert ok(server.client.get("/api/players/chesscom/anomen_s/games"))["data"] == []
    bug = dict(recorded_games()[0])
    bug.pop("pgn")
    bug.update(rules="bughouse", url="https://www.chess.com/game/live/999", uuid="GENERATED-bughouse")
    bug["white"] = {**bug["white"], "result": "win"}
    bug["black"] = {**bug["black"], "result": "bughousepartnerlose"}
    archives(upstream, "bugplayer", "2020/04", "2020/05")
    add_json(upstream, f"{CC}/player/bugplayer/games/2020/05", {"games": [bug]})  # GENERATED
    add_json(upstream, f"{CC}/player/bugplayer/games/2020/04",  # GENERATED: the internal-error envelope
             {"code": 0, "message": "An internal error has occurred. Please contact Chess.com Support."})
    resp = server.client.get("/api/players/chesscom/bugplayer/games")
    body = ok(resp)
    assert [(g["id"], g["moves"], g["variant"], g["result"]) for g in body["data"]] == \
        [("999", None, "bughouse", "1-0")]
    assert body["failedMonths"] == ["2020-04"]


def test_current_month_is_refreshed_at_most_every_5_minutes(server: Server, upstream: ReplayUpstream) -> None:
    now = datetime.now(UTC)
    month = f"{now.year:04d}/{now.month:02d}"
    archives(upstream, "livenow", month)
    add_json(upstream, f"{CC}/player/livenow/games/{month}", {"games": recorded_games()[:2]})
    assert len(ok(server.client.get("/api/players/chesscom/livenow/games"))["data"]) == 2
    upstream.reset()
    assert len(ok(server.client.get("/api/players/chesscom/livenow/games"))["data"]) == 2
    assert upstream.total() == 0


def test_unknown_user_games_is_404(server: Server, upstream: ReplayUpstream) -> None:
    err(server.client.get("/api/players/chesscom/nonexistent_user_xyz_123/games"), 404, "not_found")


# --- tournaments ------------------------------------------------------------------------------

KNOCKOUT = "tournament_-33rd-chesscom-quick-knockouts-1401-1600"


def generated_tournament(upstream: ReplayUpstream, tid: str, name: str) -> None:
    """GENERATED: a finished tournament ``tid`` with the recorded knockout's shape: its detail, round 1
    and group 1/1, with the round and group lists cut to those (the only ones recorded)."""
    base = f"https://api.chess.com/pub/tournament/{tid}"
    detail = json.loads((FIXTURES / f"{KNOCKOUT}.json").read_bytes())
    detail.update(name=name, url=f"https://www.chess.com/tournament/{tid}", rounds=[f"{base}/1"])
    rnd = json.loads((FIXTURES / f"{KNOCKOUT}_1.json").read_bytes())
    rnd["groups"] = [f"{base}/1/1"]
    add_json(upstream, f"{CC}/tournament/{tid}", detail)
    add_json(upstream, f"{CC}/tournament/{tid}/1", rnd)
    upstream.add(f"{CC}/tournament/{tid}/1/1", (FIXTURES / f"{KNOCKOUT}_1_1.json").read_bytes(), JSON)


def test_recorded_tournament_detail(server: Server, upstream: ReplayUpstream) -> None:
    tid = KNOCKOUT.removeprefix("tournament_")
    t = ok(server.client.get(f"/api/tournaments/{tid}?platform=chesscom"))["data"]
    assert (t["id"], t["platform"], t["system"], t["status"], t["timeClass"], t["rated"]) == \
        (tid, "chesscom", "round_robin", "finished", "daily", True)
    assert t["finishesAt"] == "2017-01-04T06:24:03Z" and t["startsAt"] is None and t["winner"] is None
    assert t["nbPlayers"] == 399 and t["clock"] is None
    hit(server, upstream, f"/api/tournaments/{tid}?platform=chesscom")
    # results: rounds 2-4 are not recorded, so they are left out and the page is not kept forever
    rows = ok(server.client.get(f"/api/tournaments/{tid}/results?platform=chesscom"))["data"]
    assert rows and rows[0]["round"] == 1


def test_generated_tournament_results_games_and_list(server: Server, upstream: ReplayUpstream) -> None:
    generated_tournament(upstream, "generated-knockout", "GENERATED knockout (recorded shape)")
    rows = ok(server.client.get("/api/tournaments/generated-knockout/results?platform=chesscom"))["data"]
    assert [(r["rank"], r["username"], r["points"], r["tieBreak"]) for r in rows[:2]] == \
        [(1, "telo21", 5.5, 20.0), (2, "mrtn", 4.5, 17.25)]
    games = ok(server.client.get("/api/tournaments/generated-knockout/games?platform=chesscom&limit=200"))
    group = json.loads((FIXTURES / f"{KNOCKOUT}_1_1.json").read_bytes())
    assert games["pagination"]["total"] == len(group["games"])
    assert all(g["tournamentId"] == "generated-knockout" and g["platform"] == "chesscom" for g in games["data"])
    pgn = server.client.get("/api/tournaments/generated-knockout/games?platform=chesscom&limit=200&format=pgn")
    assert pgn.status_code == 200 and pgn.headers["content-type"].startswith("application/x-chess-pgn")
    assert pgn.text.count("[Event ") == len(group["games"])  # every game, those without a pgn built from tags
    hit(server, upstream, "/api/tournaments/generated-knockout/results?platform=chesscom")
    listed = ok(server.client.get("/api/tournaments?platform=chesscom"))["data"]
    assert "generated-knockout" in [t["id"] for t in listed]


def test_titled_tuesday_job_discovers_and_imports_the_latest(start_server: object, upstream: ReplayUpstream,
                                                              tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.conftest import ROOT
    listed = json.loads((FIXTURES / "player_fabianocaruana_tournaments.json").read_bytes())["finished"]
    ids = [e["@id"].rsplit("/", 1)[-1] for e in listed if "titled-tuesday" in e["@id"]]
    latest = max(ids, key=lambda i: int(i.rsplit("-", 1)[-1]))
    generated_tournament(upstream, latest, f"GENERATED Titled Tuesday {latest} (recorded knockout shape)")
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("CHESSSTATS_", "LICHESS_"))}
    env.update(PYTHONPATH=str(ROOT), CHESSSTATS_DATA_DIR=str(tmp_path / "data"),
               CHESS_COM_API_URL=upstream.url + CC, LICHESS_API_URL=upstream.lichess_url,
               FIDE_API_URL=upstream.url + "/fide", CHESSSTATS_CHESSCOM_TITLED_TUESDAY_PLAYERS="hikaru,fabianocaruana")
    run = subprocess.run([sys.executable, "-m", "chessstats", "jobs", "run", "titled-tuesday", "--init"], env=env,
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"imported {latest}" in run.stdout, run.stdout
    assert upstream.counts[f"{CC}/player/fabianocaruana/tournaments"] == 1
    assert upstream.counts[f"{CC}/player/hikaru/tournaments"] == 1  # not recorded: skipped
    srv = start_server(data_dir=tmp_path / "data")  # type: ignore[operator]
    upstream.reset()
    listed_now = ok(srv.client.get("/api/tournaments?platform=chesscom&status=finished"))["data"]
    assert latest in [t["id"] for t in listed_now]
    rows = ok(srv.client.get(f"/api/tournaments/{latest}/results?platform=chesscom"))["data"]
    assert rows[0]["username"] == "telo21"
    assert not [p for p in upstream.counts if p.startswith(CC)]  # stored once: no Chess.com request again


# --- one request in flight across workers --------------------------------------------------------


def test_two_workers_never_put_two_chesscom_requests_in_flight(start_server: object,
                                                               upstream: ReplayUpstream) -> None:
    srv = start_server("--no-jobs", "--workers", "2")  # type: ignore[operator]
    upstream.reset()
    upstream.set_fault(r"^/chesscom/", "slow", seconds=0.3)
    users = ["fabianocaruana", "hikaru", "magnuscarlsen", "erik", "anna", "danya"]
    results: list[int] = []

    def get(u: str) -> None:
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            results.append(c.get(f"/api/players/chesscom/{u}").status_code)

    threads = [threading.Thread(target=get, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert upstream.total() >= 2
    assert upstream.max_in_flight == 1, upstream.max_in_flight
    assert all(s in (200, 404, 503) for s in results), results


def test_zz_report_conditional_savings() -> None:
    """Prints what conditional requests saved in this module (for the closing note)."""
    print(f"\nchesscom: {SAVED['requests']} upstream requests, {SAVED['not_modified']} answered 304, "
          f"{SAVED['bytes']} bytes not re-downloaded")
