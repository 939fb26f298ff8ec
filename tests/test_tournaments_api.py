"""Tournament routes end to end: the real server on a socket, a real SQLite file and cache dir,
the recorded Lichess responses served by the replay upstream."""

from __future__ import annotations

import gzip
import json
import os
import time

import httpx

from tests.conftest import Server, imported
from tests.pg_store import connect_store
from tests.replay import FIXTURES, ReplayUpstream

TEAM_BATTLE = "sH24g2zH"  # finished arena: 193 players, 191 standings rows, 1463 PGN games
SWISS = "YxwjQGYu"  # finished swiss: only GET /api/swiss/{id} knows it


def envelope_ok(resp: httpx.Response) -> dict:
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert body["success"] is True
    assert set(body) >= {"data", "cached", "source", "stale", "fetchedAt"}
    assert body["fetchedAt"].endswith("Z")
    return body


def test_cache_miss_then_hit_without_upstream_traffic(server: Server, upstream: ReplayUpstream) -> None:
    first = server.client.get(f"/api/tournaments/{TEAM_BATTLE}")
    body = envelope_ok(first)
    assert (body["cached"], first.headers["x-cache"]) == (False, "MISS")
    assert body["data"]["importState"] in ("queued", "importing", "complete")
    imported(server, TEAM_BATTLE)  # the import runs in the background
    calls = upstream.total()
    assert calls == 3  # info, results, games: the import
    for _ in range(5):
        again = server.client.get(f"/api/tournaments/{TEAM_BATTLE}")
        body = envelope_ok(again)
        assert (body["cached"], body["source"], again.headers["x-cache"]) == (True, "cache", "HIT")
        assert body["stale"] is False
    assert upstream.total() == calls


def test_finished_tournament_imported_once_then_served_from_database(
    server: Server, upstream: ReplayUpstream
) -> None:
    envelope_ok(server.client.get(f"/api/tournaments/{TEAM_BATTLE}"))
    imported(server, TEAM_BATTLE)
    assert upstream.counts == {
        f"/lichess/api/tournament/{TEAM_BATTLE}": 1,
        f"/lichess/api/tournament/{TEAM_BATTLE}/results": 1,
        f"/lichess/api/tournament/{TEAM_BATTLE}/games": 1,
    }
    assert server.admin("POST", "/api/admin/cache/clear").json()["data"]["cleared"] >= 1
    upstream.reset()
    detail = envelope_ok(server.client.get(f"/api/tournaments/{TEAM_BATTLE}"))
    assert (detail["source"], detail["cached"]) == ("database", False)
    results = envelope_ok(server.client.get(f"/api/tournaments/{TEAM_BATTLE}/results?limit=500"))
    games = envelope_ok(server.client.get(f"/api/tournaments/{TEAM_BATTLE}/games?limit=200"))
    assert results["source"] == games["source"] == "database"
    assert upstream.total() == 0

    # completely and correctly imported: every row of the recordings
    assert results["pagination"] == {"page": 1, "limit": 500, "total": 191, "totalPages": 1}
    assert [r["rank"] for r in results["data"]] == list(range(1, 192))
    top = results["data"][0]
    assert top == {"rank": 1, "username": "Poblesk", "title": None, "rating": 2482, "score": 63, "points": None,
                   "tieBreak": None, "performance": 2684, "team": "6s03nPhu"}
    assert results["data"][189]["performance"] is None  # rank 190 played no game: no performance upstream
    assert games["pagination"]["total"] == 1463
    data = detail["data"]
    assert data["status"] == "finished" and data["system"] == "arena" and data["perfType"] == "blitz"
    assert data["nbPlayers"] == 193 and data["clock"] == {"limit": 180, "increment": 0}
    assert data["startsAt"] == "2023-09-25T18:00:00Z" and data["finishesAt"] == "2023-09-25T19:30:00Z"
    assert data["winner"] == {"username": "Poblesk", "title": None}
    assert len(data["standings"]) == 10

    db = connect_store(server.data_dir)
    results_by_status = dict(db.execute("SELECT status, count(*) FROM games GROUP BY status").fetchall())
    assert results_by_status == {"resign": 568, "outoftime": 403, "mate": 394, "draw": 60, "noStart": 24,
                                 "stalemate": 14}
    assert dict(db.execute("SELECT result, count(*) FROM games GROUP BY result").fetchall()) == {
        "1-0": 692, "0-1": 675, "1/2-1/2": 96}
    assert db.execute("SELECT count(*) FROM games WHERE moves LIKE '%#' AND status = 'mate'").fetchone()[0] == 394
    assert db.execute("SELECT count(*) FROM standings").fetchone()[0] == 191


def test_games_are_newest_first_with_san_opening_and_pgn(server: Server) -> None:
    imported(server, TEAM_BATTLE)
    games = envelope_ok(server.client.get(f"/api/tournaments/{TEAM_BATTLE}/games?limit=3"))
    first = games["data"][0]
    assert first["id"] == "Xl32c0aA"  # the export's first game, started 19:28:04 (latest)
    assert first["white"] == {"username": "NIKITARVC1", "title": None, "rating": 2384, "ratingDiff": 1}
    assert first["black"] == {"username": "FitSt_time", "title": None, "rating": 2411, "ratingDiff": 0}
    assert (first["result"], first["status"], first["winner"]) == ("1/2-1/2", "draw", None)
    assert first["opening"] == {"eco": "B54", "name": None}
    assert first["moves"].startswith("e4 c5 Nf3 d6 d4 cxd4 Nxd4 Nf6 f3 g6")
    assert first["startedAt"] == "2023-09-25T19:28:04Z" and first["endedAt"] is None
    assert first["tournamentId"] == TEAM_BATTLE and first["perfType"] == "blitz" and first["rated"] is True
    starts = [g["startedAt"] for g in games["data"]]
    assert starts == sorted(starts, reverse=True)
    page2 = envelope_ok(server.client.get(f"/api/tournaments/{TEAM_BATTLE}/games?limit=3&page=2"))
    assert {g["id"] for g in page2["data"]}.isdisjoint(g["id"] for g in games["data"])
    pgn = server.client.get(f"/api/tournaments/{TEAM_BATTLE}/games?limit=2&format=pgn")
    assert pgn.status_code == 200 and pgn.headers["content-type"].startswith("application/x-chess-pgn")
    assert pgn.text.count("[Event ") == 2 and '[Site "https://lichess.org/Xl32c0aA"]' in pgn.text
    assert pgn.headers["cache-control"] == "public, max-age=31536000" and pgn.headers["etag"].startswith('"')
    again = server.client.get(f"/api/tournaments/{TEAM_BATTLE}/games?limit=2&format=pgn",
                              headers={"If-None-Match": pgn.headers["etag"]})
    assert again.status_code == 304
    zipped = httpx.get(f"{server.url}/api/tournaments/{TEAM_BATTLE}/games?limit=2&format=pgn",
                       headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip" and zipped.text == pgn.text


def test_swiss_found_after_arena_404(server: Server, upstream: ReplayUpstream) -> None:
    body = envelope_ok(server.client.get(f"/api/tournaments/{SWISS}"))
    assert upstream.counts[f"/lichess/api/tournament/{SWISS}"] == 1  # the arena 404
    assert upstream.counts[f"/lichess/api/swiss/{SWISS}"] == 1
    data = body["data"]
    assert (data["system"], data["status"], data["name"], data["nbPlayers"]) == (
        "swiss", "finished", "Classical Increment", 39)
    assert data["perfType"] == "classical"  # 1500 + 40 × 3 s: Lichess's classical speed


def test_partial_export_is_never_stored_as_complete(server: Server, upstream: ReplayUpstream) -> None:
    """The recorded swiss exports hold 1 of 39 standings and 1 of 36 games (recordings of the first
    lines only): the import's check against the upstream's own counts refuses them, nothing is stored,
    the detail says ``importState: failed`` and the results answer an empty page with that state."""
    body = envelope_ok(server.client.get(f"/api/tournaments/{SWISS}"))
    deadline = time.monotonic() + 10
    while body["data"]["importState"] != "failed" and time.monotonic() < deadline:
        time.sleep(0.2)
        body = envelope_ok(server.client.get(f"/api/tournaments/{SWISS}"))
    assert body["data"]["importState"] == "failed" and body["data"]["standings"] is None
    assert body["cached"] is False
    results = envelope_ok(server.client.get(f"/api/tournaments/{SWISS}/results"))
    assert results["data"] == [] and results["importState"] == "failed" and results["pagination"]["total"] == 0
    db = connect_store(server.data_dir)
    try:
        state, error, attempt = db.execute(
            "SELECT state, error, attempt FROM imports WHERE external_id = ?", (SWISS,)).fetchone()
        stored = db.execute("SELECT count(*) FROM standings").fetchone()[0] + db.execute(
            "SELECT count(*) FROM games").fetchone()[0]
        imported = db.execute("SELECT imported_at FROM tournaments WHERE external_id = ?", (SWISS,)).fetchone()[0]
    finally:
        db.close()
    assert (state, attempt, stored, imported) == ("failed", 1, 0, None)
    assert error == "the standings export ended after 1 of 39 players"


def test_list_is_filled_from_upstream_then_served_from_database(server: Server, upstream: ReplayUpstream) -> None:
    first = envelope_ok(server.client.get("/api/tournaments?limit=100"))
    assert first["source"] == "api" and upstream.counts == {"/lichess/api/tournament": 1}
    assert first["pagination"] == {"page": 1, "limit": 100, "total": 138, "totalPages": 2}
    starts = [t["startsAt"] for t in first["data"]]
    assert starts == sorted(starts, reverse=True)
    upcoming = envelope_ok(server.client.get("/api/tournaments?status=upcoming&limit=5"))
    assert upcoming["source"] == "database" and upcoming["pagination"]["total"] == 104
    assert all(t["status"] == "upcoming" for t in upcoming["data"])
    cache_control = server.client.get("/api/tournaments?status=upcoming&limit=5").headers["cache-control"]
    assert int(cache_control.split("=")[1]) > 120
    finished = envelope_ok(server.client.get("/api/tournaments?status=finished&limit=100"))
    assert finished["pagination"]["total"] == 20 and all(t["winner"] for t in finished["data"])
    assert upstream.total() == 1


def test_batch_in_order_asked_with_count_and_not_found(server: Server) -> None:
    body = envelope_ok(server.client.get(f"/api/tournaments/batch?ids={SWISS},zzzzzzzz,{TEAM_BATTLE}"))
    assert [t["id"] for t in body["data"]] == [SWISS, TEAM_BATTLE]
    assert body["count"] == 2 and body["notFound"] == ["zzzzzzzz"] and body["notYetKnown"] == []
    imported(server, TEAM_BATTLE)
    imported(server, SWISS, states=("failed",))
    again = envelope_ok(server.client.get(f"/api/tournaments/batch?ids={SWISS},{TEAM_BATTLE}"))
    assert again["cached"] is True and again["source"] == "cache"
    repeated = envelope_ok(server.client.get(f"/api/tournaments/batch?ids={SWISS}&ids={TEAM_BATTLE}"))
    assert [t["id"] for t in repeated["data"]] == [SWISS, TEAM_BATTLE]
    fresh = envelope_ok(server.client.get(f"/api/tournaments/batch?ids={SWISS},yyyyyyyy"))
    assert (fresh["notFound"], fresh["source"], fresh["cached"]) == (["yyyyyyyy"], "api", False)


def test_etag_304_gzip_cache_control_and_cors(server: Server) -> None:
    imported(server, TEAM_BATTLE)
    url = f"/api/tournaments/{TEAM_BATTLE}/results?limit=100"
    first = server.client.get(url)
    etag = first.headers["etag"]
    assert etag.startswith('"') and first.headers["cache-control"] == "public, max-age=31536000"
    again = server.client.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    raw = httpx.get(server.url + url, headers={"Accept-Encoding": "gzip"})
    assert raw.headers["content-encoding"] == "gzip"
    assert raw.json() == server.client.get(url, headers={"Accept-Encoding": "identity"}).json()
    with httpx.stream("GET", server.url + url, headers={"Accept-Encoding": "gzip"}) as stream:
        body = b"".join(stream.iter_raw())
    assert gzip.decompress(body).startswith(b'{"success":true')
    cors = server.client.get(url, headers={"Origin": "https://front.example"})
    assert cors.headers["access-control-allow-origin"] == "*"
    preflight = server.client.request("OPTIONS", url, headers={
        "Origin": "https://front.example", "Access-Control-Request-Method": "GET"})
    assert preflight.status_code == 204 and "GET" in preflight.headers["access-control-allow-methods"]


def test_ongoing_tournament_cached_for_five_minutes(server: Server, upstream: ReplayUpstream) -> None:
    """An arena that is not finished is served from the upstream, cached 300 s, and not imported."""
    recorded = json.loads((FIXTURES / "lichess" / "tournament_may24lta.json").read_text(encoding="utf-8"))
    for flag in ("isFinished", "podium"):
        recorded.pop(flag, None)
    recorded.update({"id": "ongoing1", "isStarted": True, "secondsToFinish": 600})
    upstream.add("/lichess/api/tournament/ongoing1", json.dumps(recorded).encode(), "application/json")
    first = server.client.get("/api/tournaments/ongoing1")
    body = envelope_ok(first)
    assert body["data"]["status"] == "ongoing" and body["source"] == "api"
    assert 290 <= int(first.headers["cache-control"].rsplit("=", 1)[1]) <= 300
    assert upstream.counts == {"/lichess/api/tournament/ongoing1": 1}  # no import of standings or games
    assert envelope_ok(server.client.get("/api/tournaments/ongoing1"))["cached"] is True
    db = connect_store(server.data_dir)
    assert db.execute("SELECT status, imported_at FROM tournaments WHERE external_id = 'ongoing1'").fetchone() == (
        "ongoing", None)


def test_concurrent_misses_make_one_upstream_call(server: Server, upstream: ReplayUpstream) -> None:
    """Twenty clients ask at once for a tournament nobody asked for yet: Lichess sees each path once."""
    import concurrent.futures

    upstream.set_fault(r"/tournament/sH24g2zH$", "slow", seconds=0.5)  # keep the first call in flight
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: httpx.get(f"{server.url}/api/tournaments/{TEAM_BATTLE}", timeout=60),
                                range(20)))
    assert [a.status_code for a in answers] == [200] * 20
    assert len({a.json()["data"]["id"] for a in answers}) == 1
    assert upstream.counts == {
        f"/lichess/api/tournament/{TEAM_BATTLE}": 1,
        f"/lichess/api/tournament/{TEAM_BATTLE}/results": 1,
        f"/lichess/api/tournament/{TEAM_BATTLE}/games": 1,
    }


def test_cache_clear_command_empties_the_cache_of_a_data_dir(server: Server, upstream: ReplayUpstream) -> None:
    import subprocess
    import sys

    from tests.conftest import ROOT
    from tests.redis_server import ON_REDIS, redis_server

    imported(server, SWISS, states=("failed",))  # the recorded swiss exports are partial: refused, cached
    env = {**os.environ, "REDIS_URL": redis_server().url} if ON_REDIS else None  # the cache every host shares
    proc = subprocess.run([sys.executable, "-m", "chessstats", "cache", "clear", "--data-dir", str(server.data_dir)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60, env=env)
    assert proc.returncode == 0 and proc.stdout.startswith("cleared ") and not proc.stdout.startswith("cleared 0")
    upstream.reset()
    again = envelope_ok(server.client.get("/api/tournaments/YxwjQGYu"))  # the running server sees it at once
    assert (again["cached"], again["source"]) == (False, "database") and upstream.total() == 0


def test_two_processes_import_a_tournament_once(start_server: object, upstream: ReplayUpstream, tmp_path) -> None:
    """Two server processes on one data dir (as with --workers 2): one imports, the other waits and
    then reads the import from the database."""
    import concurrent.futures

    shared = tmp_path / "shared"
    a = start_server(data_dir=shared)  # type: ignore[operator]
    b = start_server(data_dir=shared)  # type: ignore[operator]
    upstream.reset()
    upstream.set_fault(r"/tournament/sH24g2zH/games$", "slow", seconds=0.7)
    urls = [f"{srv.url}/api/tournaments/{TEAM_BATTLE}" for srv in (a, b) for _ in range(5)]
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda url: httpx.get(url, timeout=60), urls))
    assert [r.status_code for r in answers] == [200] * 10
    assert upstream.counts == {
        f"/lichess/api/tournament/{TEAM_BATTLE}": 1,
        f"/lichess/api/tournament/{TEAM_BATTLE}/results": 1,
        f"/lichess/api/tournament/{TEAM_BATTLE}/games": 1,
    }
    # a request that starts after the import's answer was cached (a loaded machine starts the threads
    # late; the import itself takes well under a second) is a cache hit
    assert {r.json()["source"] for r in answers} <= {"api", "database", "cache"}
