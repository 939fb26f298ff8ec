"""Faults and several workers, through the real server and the replay upstream, counting upstream
requests: stale-while-revalidate and stale-if-error, one fetch per key across workers, imports no
client can cancel (verified before they are final), what one route learns every route knows."""

from __future__ import annotations

import concurrent.futures
import json
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server, imported
from tests.pg_store import connect_store
from tests.replay import ReplayUpstream, generate_arena
from tests.test_metrics import total, wait_for_scrape

NDJSON, JSON = "application/x-ndjson", "application/json"


def ongoing_arena(upstream: ReplayUpstream, tid: str) -> None:
    """Register an ONGOING arena ``tid`` (the recorded may24lta detail marked started; recorded
    standings and games of other arenas), so that no two tests share an id."""
    live = json.loads(upstream.files["tournament_may24lta.json"])
    for key in ("isFinished", "podium", "isRecentlyFinished", "stats"):
        live.pop(key, None)
    live.update(id=tid, isStarted=True, nbPlayers=3)
    upstream.add(f"/lichess/api/tournament/{tid}", json.dumps(live).encode(), JSON)
    upstream.add(f"/lichess/api/tournament/{tid}/results", upstream.files["tournament_hallow23_results_nb3.ndjson"],
                 NDJSON)
    upstream.add(f"/lichess/api/tournament/{tid}/games", upstream.files["tournament_may25bta_games_first.ndjson"],
                 NDJSON)


def finished_arena(upstream: ReplayUpstream, tid: str, players: int = 12, games: int = 30) -> dict:
    """Register a GENERATED finished arena (consistent counts); returns its routes."""
    routes = generate_arena(tid, players, games)
    for path, (body, ctype) in routes.items():
        upstream.add(path, body, ctype)
    return routes


def count(upstream: ReplayUpstream, tid: str, suffix: str = "") -> int:
    return upstream.counts.get(f"/lichess/api/tournament/{tid}{suffix}", 0)


def db_one(server: Server, sql: str, params: tuple = ()) -> tuple:
    db = connect_store(server.data_dir)
    try:
        return db.execute(sql, params).fetchone()
    finally:
        db.close()


# --- stale-while-revalidate and stale-if-error ---------------------------------------------------


@pytest.mark.parametrize("workers", ["1", "2", "4"])
def test_expired_entry_served_stale_at_once_while_the_upstream_sleeps(
    start_server, upstream: ReplayUpstream, workers: str
) -> None:
    server = start_server("--workers", workers, "--no-jobs", env={"CHESSSTATS_TOURNAMENTS_ONGOING_TTL_S": "1"})
    tid = f"swr0000{workers}"
    ongoing_arena(upstream, tid)
    first = server.client.get(f"/api/tournaments/{tid}").json()
    assert first["cached"] is False and first["data"]["status"] == "ongoing"
    time.sleep(1.2)
    upstream.reset()
    upstream.set_fault(rf"/tournament/{tid}$", "slow", seconds=30)
    took_all = []
    for _ in range(12):  # new connections: spread over the workers
        started = time.monotonic()
        resp = httpx.get(f"{server.url}/api/tournaments/{tid}", timeout=30)
        took = time.monotonic() - started
        took_all.append(took)
        body = resp.json()
        assert resp.status_code == 200 and took < 2.0, (resp.status_code, took)
        assert resp.headers["x-cache"] == "STALE" and body["stale"] is True and body["cached"] is True
        assert body["fetchedAt"] == first["fetchedAt"] and resp.headers["cache-control"] == "public, max-age=0"
    time.sleep(0.3)
    print(f"\n[measure] stale answers with {workers} worker(s) while the upstream sleeps 30 s: max "
          f"{max(took_all) * 1000:.0f} ms, upstream detail requests {count(upstream, tid)}")
    assert count(upstream, tid) == 1  # one background revalidation across the workers, not one per request


def test_ongoing_standings_served_stale_when_the_upstream_fails(start_server, upstream: ReplayUpstream) -> None:
    server = start_server(env={"CHESSSTATS_TOURNAMENTS_ONGOING_TTL_S": "1"})
    ongoing_arena(upstream, "swr00012")
    first = server.client.get("/api/tournaments/swr00012/results").json()
    assert [r["rank"] for r in first["data"]] == [1, 2, 3]
    time.sleep(1.2)
    upstream.reset()
    upstream.set_fault(r"/tournament/swr00012", "500")
    for _ in range(5):
        resp = server.client.get("/api/tournaments/swr00012/results")
        assert resp.status_code == 200 and resp.json()["stale"] is True and resp.headers["x-cache"] == "STALE"
    games = server.client.get("/api/tournaments/swr00012/games")
    assert games.status_code == 502 and games.json()["code"] == "upstream_error"  # never fetched: nothing to serve
    time.sleep(0.3)
    # one background revalidation of the standings, remembered as failed; one games fetch
    assert count(upstream, "swr00012", "/results") == 1 and count(upstream, "swr00012", "/games") == 1


def test_stored_row_served_within_the_bound_while_the_upstream_sleeps(start_server, upstream: ReplayUpstream) -> None:
    server = start_server()
    assert server.client.get("/api/tournaments?limit=1").status_code == 200  # stores the current list
    upstream.set_fault(r"/tournament/L0Mnwkt0$", "slow", seconds=30)
    started = time.monotonic()
    resp = server.client.get("/api/tournaments/L0Mnwkt0")
    took = time.monotonic() - started
    print(f"\n[measure] stored row served after {took:.2f} s while the upstream sleeps 30 s")
    assert resp.status_code == 200 and 1.5 < took < 3.0, took  # client_wait_s = 2
    assert resp.json()["stale"] is True and resp.json()["source"] == "database"


# --- one fetch per key, across workers -------------------------------------------------------------


@pytest.mark.parametrize("workers", ["2", "4"])
def test_concurrent_first_requests_on_several_workers_make_one_request_per_path(
    start_server, upstream: ReplayUpstream, workers: str
) -> None:
    server = start_server("--workers", workers, "--no-jobs")
    tid = f"many000{workers}"
    ongoing_arena(upstream, tid)
    upstream.reset()
    upstream.set_fault(rf"/tournament/{tid}", "slow", seconds=0.5)
    paths = [f"/api/tournaments/{tid}", f"/api/tournaments/{tid}/results"] * 8
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda p: httpx.get(server.url + p, timeout=30), paths))
    assert [a.status_code for a in answers] == [200] * 16, [a.text for a in answers if a.status_code != 200]
    assert count(upstream, tid) == 1 and count(upstream, tid, "/results") == 1, (upstream.counts, server.log())
    pids = {a.headers.get("x-worker-pid") for a in answers}  # informative only
    assert pids


# --- imports no client can cancel ------------------------------------------------------------------


def test_import_completes_after_the_first_client_hangs_up(start_server, upstream: ReplayUpstream) -> None:
    """The import outlives the client that noticed it and the server's response timeout (2 s here,
    the export takes 5 s): no request is cut, no answer is an error page, the import completes."""
    server = start_server(env={"CHESSSTATS_SERVER_RESPONSE_TIMEOUT_S": "2"})
    finished_arena(upstream, "hang0001", players=40, games=120)
    upstream.reset()
    upstream.set_fault(r"/tournament/hang0001/games$", "slow", seconds=5)
    with pytest.raises(httpx.TimeoutException):
        httpx.get(server.url + "/api/tournaments/hang0001", timeout=0.3)  # hangs up at once
    second = server.client.get("/api/tournaments/hang0001")  # waits for the same import at most the bound
    assert second.status_code == 200 and second.json()["data"]["importState"] in ("queued", "importing")
    time.sleep(2.5)  # past the response timeout, the import still runs
    third = server.client.get("/api/tournaments/hang0001/results")
    assert third.status_code == 200  # waited for the import (1.5 s at most): the page so far, or the whole page
    assert third.json().get("importState") == "importing" or len(third.json()["data"]) == 40
    body = imported(server, "hang0001")
    assert body["data"]["status"] == "finished" and len(body["data"]["standings"]) == 10
    assert (count(upstream, "hang0001"), count(upstream, "hang0001", "/results"),
            count(upstream, "hang0001", "/games")) == (1, 1, 1)
    assert db_one(server, "SELECT count(*) FROM games") == (120,)
    state, summary = db_one(server, "SELECT state, summary FROM imports WHERE external_id = 'hang0001'")
    assert state == "complete" and summary == "verified: 40/40 players, 120/120 games"
    assert "Traceback" not in server.log()


def test_kill_9_during_an_import_resumes_it_after_restart(start_server, upstream: ReplayUpstream,
                                                          tmp_path: Path) -> None:
    data = tmp_path / "kill"
    server = start_server(data_dir=data, env={"CHESSSTATS_TOURNAMENTS_IMPORT_POLL_S": "0.5"})
    finished_arena(upstream, "kill0001", players=20, games=50)
    upstream.set_fault(r"/tournament/kill0001/games$", "slow", seconds=3)
    assert server.client.get("/api/tournaments/kill0001").json()["data"]["importState"] in ("queued", "importing")
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(10)
    assert db_one(server, "SELECT state FROM imports") == ("importing",)
    assert db_one(server, "SELECT count(*) FROM games") == (0,)
    upstream.clear_faults()
    again = start_server(data_dir=data, env={"CHESSSTATS_TOURNAMENTS_IMPORT_POLL_S": "0.5"})
    imported(again, "kill0001", timeout_s=30)
    assert db_one(again, "SELECT state, attempt FROM imports") == ("complete", 2)
    assert db_one(again, "SELECT count(*) FROM games") == (50,)


def test_export_cut_on_a_record_boundary_is_not_stored_as_complete(server: Server, upstream: ReplayUpstream) -> None:
    routes = finished_arena(upstream, "short001", players=191, games=300)
    results = routes["/lichess/api/tournament/short001/results"][0]
    upstream.add("/lichess/api/tournament/short001/results", b"".join(results.splitlines(True)[:100]), NDJSON)
    body = imported(server, "short001", states=("failed",))
    assert body["data"]["standings"] is None
    error, attempt = db_one(server, "SELECT error, attempt FROM imports")
    assert error == "the standings export ended after 100 of 191 players" and attempt == 1
    assert db_one(server, "SELECT count(*) FROM standings") == (0,)
    assert server.client.get("/api/tournaments/short001/results").json()["importState"] == "failed"

    upstream.add("/lichess/api/tournament/short001/results", results, NDJSON)
    pgn = routes["/lichess/api/tournament/short001/games"][0]
    upstream.add("/lichess/api/tournament/short001/games", pgn[: pgn.index(b"[Event", len(pgn) // 2)],
                 "application/x-chess-pgn")
    assert server.admin("POST", "/api/admin/tournaments/short001/reimport").status_code == 202
    imported(server, "short001", states=("failed",))
    error, = db_one(server, "SELECT error FROM imports")
    assert error.startswith("the games export ended after ") and error.endswith(" of 300 games")

    for path, (body_bytes, ctype) in routes.items():
        upstream.add(path, body_bytes, ctype)
    answer = server.admin("POST", "/api/admin/tournaments/short001/reimport")
    assert answer.status_code == 202 and answer.json()["data"]["state"] == "queued"
    imported(server, "short001")
    assert db_one(server, "SELECT count(*) FROM standings") == (191,)
    assert db_one(server, "SELECT count(*) FROM games") == (300,)


def test_failed_import_is_retried_later_not_on_every_request(start_server, upstream: ReplayUpstream) -> None:
    server = start_server(env={"CHESSSTATS_TOURNAMENTS_IMPORT_RETRY_BASE_S": "3"})
    finished_arena(upstream, "retry001")
    upstream.reset()
    upstream.set_fault(r"/tournament/retry001/games$", "500")
    imported(server, "retry001", states=("failed",))
    for _ in range(20):
        assert server.client.get("/api/tournaments/retry001").json()["data"]["importState"] in ("failed", "importing")
    assert count(upstream, "retry001", "/games") == 1  # 21 requests, one export download
    upstream.clear_faults()
    # on a slow machine the first retry (3 s after the failure) can come right before the fault is
    # cleared and fail again: counted from here, the import completes with exactly one more download
    before = count(upstream, "retry001", "/games")
    assert before <= 2
    imported(server, "retry001", timeout_s=30)  # the retry, 3 s later (or 6 s after a second failure)
    assert count(upstream, "retry001", "/games") == before + 1


def test_unfinished_games_are_refreshed_until_final_and_not_cached_forever(
    start_server, upstream: ReplayUpstream
) -> None:
    server = start_server(env={"CHESSSTATS_TOURNAMENTS_PENDING_REFRESH_S": "1",
                               "CHESSSTATS_TOURNAMENTS_IMPORT_POLL_S": "0.3"})
    detail = json.loads(upstream.files["tournament_sH24g2zH.json"])
    detail.update(id="pend0001", nbPlayers=3)
    detail["stats"]["games"] = 1
    game = json.loads(upstream.files["tournament_may25bta_games_first.ndjson"].splitlines()[0])
    game.update(status="started")
    game.pop("winner", None)
    upstream.add("/lichess/api/tournament/pend0001", json.dumps(detail).encode(), JSON)
    upstream.add("/lichess/api/tournament/pend0001/results", upstream.files["tournament_hallow23_results_nb3.ndjson"],
                 NDJSON)
    upstream.add("/lichess/api/tournament/pend0001/games", json.dumps(game).encode() + b"\n", NDJSON)
    imported(server, "pend0001")
    games = server.client.get("/api/tournaments/pend0001/games")
    assert games.json()["data"][0]["result"] == "*" and games.json()["data"][0]["status"] == "started"
    assert games.headers["cache-control"] != "public, max-age=31536000"
    pending, = db_one(server, "SELECT pending_games FROM imports")
    assert pending == 1

    game.update(status="mate", winner="white")
    upstream.add("/lichess/api/tournament/pend0001/games", json.dumps(game).encode() + b"\n", NDJSON)
    deadline = time.monotonic() + 15
    while db_one(server, "SELECT pending_games FROM imports") != (0,) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert db_one(server, "SELECT pending_games FROM imports") == (0,)
    final = server.client.get("/api/tournaments/pend0001/games")
    assert final.json()["data"][0]["result"] == "1-0" and final.json()["data"][0]["status"] == "mate"
    assert final.headers["cache-control"] == "public, max-age=31536000"


# --- what one route learns, every route knows ------------------------------------------------------


def test_a_tournament_found_gone_leaves_every_cached_list(server: Server, upstream: ReplayUpstream) -> None:
    upcoming = server.client.get("/api/tournaments?status=upcoming&limit=100").json()
    victim = upcoming["data"][0]["id"]  # recorded in the current list, unknown to the replay's detail route
    cached = server.client.get("/api/tournaments?status=upcoming&limit=100")
    assert cached.headers["x-cache"] == "HIT"
    # the detail route asks Lichess, which knows neither an arena nor a swiss with that id
    assert server.client.get(f"/api/tournaments/{victim}").status_code == 404
    after = server.client.get("/api/tournaments?status=upcoming&limit=100")
    assert after.headers["x-cache"] == "MISS" and after.json()["stale"] is False
    assert victim not in [t["id"] for t in after.json()["data"]]
    cancelled = server.client.get("/api/tournaments?status=cancelled&limit=100").json()
    assert [t["id"] for t in cancelled["data"]] == [victim]


def test_batch_fans_out_to_a_bounded_number_of_upstream_lookups(server: Server, upstream: ReplayUpstream) -> None:
    ids = [f"unkn{i:04d}" for i in range(50)]
    started = time.monotonic()
    body = server.client.get("/api/tournaments/batch", params={"ids": ",".join(ids)}).json()
    took = time.monotonic() - started
    assert body["count"] == 0 and body["notFound"] == ids[:5] and body["notYetKnown"] == ids[5:]
    print(f"\n[measure] batch of 50 unknown ids: {upstream.total()} upstream calls in {took:.2f} s")
    assert upstream.total() == 10 and took < 5  # arena then swiss for each of the 5 looked up
    again = server.client.get("/api/tournaments/batch", params={"ids": ",".join(ids[:5])}).json()
    assert again["notFound"] == ids[:5] and upstream.total() == 10  # negative entries
    assert db_one(server, "SELECT count(*) FROM tournaments") == (0,)  # no row for ids that do not exist


def test_an_id_answered_with_another_spelling_is_matched_or_not_found(server: Server, upstream: ReplayUpstream) -> None:
    """Lichess answering with the same id in another case is the same tournament; another id is a 404
    (never a 500, never a re-fetch on every request)."""
    ongoing_arena(upstream, "CASEtest")
    body = json.loads(upstream.routes["/lichess/api/tournament/CASEtest"][0])
    upstream.add("/lichess/api/tournament/caseTEST", json.dumps(body).encode(), JSON)  # answers id "CASEtest"
    body["id"] = "zzOther1"
    upstream.add("/lichess/api/tournament/wrongId1", json.dumps(body).encode(), JSON)
    resp = server.client.get("/api/tournaments/caseTEST")
    assert resp.status_code == 200 and resp.json()["data"]["id"] == "CASEtest"
    assert server.client.get("/api/tournaments/caseTEST").headers["x-cache"] == "HIT"
    for _ in range(3):
        wrong = server.client.get("/api/tournaments/wrongId1")
        assert wrong.status_code == 404 and wrong.json()["code"] == "not_found"
    assert upstream.counts["/lichess/api/tournament/wrongId1"] == 1
    assert db_one(server, "SELECT count(*) FROM tournaments WHERE external_id IN ('wrongId1', 'zzOther1')") == (0,)


def test_a_flood_of_unknown_ids_neither_starves_known_data_nor_queues_work(
    start_server, upstream: ReplayUpstream
) -> None:
    """10 requests a second for random unknown ids, each taking Lichess 0.5 s, against one request
    in flight: the lane's queue is bounded (quick 503 upstream_busy), cached data never waits behind
    it, Lichess stops being called as soon as the flood stops, and no file or row is left per id."""
    import random
    import string

    server = start_server(env={"CHESSSTATS_LICHESS_MAX_QUEUE_WAIT_S": "1"})
    ongoing_arena(upstream, "legit001")
    assert server.client.get("/api/tournaments/legit001").status_code == 200
    upstream.reset()
    upstream.set_fault(r"/(tournament|swiss)/[a-z]{8}$", "slow", seconds=0.5)
    rng = random.Random(7)
    stop = time.monotonic() + 6
    statuses: list[int] = []
    legit: list[tuple[int, float]] = []

    def flood() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            with concurrent.futures.ThreadPoolExecutor(32) as pool:
                futures = []
                while time.monotonic() < stop:
                    tid = "".join(rng.choices(string.ascii_lowercase, k=8))
                    futures.append(pool.submit(client.get, f"/api/tournaments/{tid}"))
                    time.sleep(0.1)
                statuses.extend(f.result().status_code for f in futures)

    def known() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            while time.monotonic() < stop:
                started = time.monotonic()
                legit.append((client.get("/api/tournaments/legit001").status_code, time.monotonic() - started))
                time.sleep(0.2)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda f: f(), (flood, known)))
    print(f"\n[measure] flood: {len(statuses)} requests, {statuses.count(503)} x 503, {statuses.count(404)} x 404, "
          f"{upstream.total()} upstream calls; known route {len(legit)} x 200, max "
          f"{max(t for _, t in legit) * 1000:.0f} ms")
    assert len(statuses) >= 50 and set(statuses) <= {404, 503}, statuses
    assert statuses.count(503) >= 20  # the bounded lane answers at once instead of queueing
    assert [s for s, _ in legit] == [200] * len(legit) and max(t for _, t in legit) < 0.5, legit
    time.sleep(1.5)  # at most the call in flight ends
    calls = upstream.total()
    time.sleep(3)
    assert upstream.total() == calls  # nothing was left queued for everyone else
    locks = list((server.data_dir / "locks").glob("*"))
    assert len(locks) <= 600  # striped locks: a bounded set, none per id
    assert db_one(server, "SELECT count(*) FROM tournaments") == (1,)


def test_fide_ids_stated_by_an_export_link_accounts(server: Server, upstream: ReplayUpstream) -> None:
    """The recorded PGN of may25bta states ``[WhiteFideId "24248185"]``: after the import, that
    Lichess account belongs to the player with that FIDE id (a link the upstream states, not a guess)."""
    detail = json.loads(upstream.files["tournament_sH24g2zH.json"])
    detail.update(id="fideln01", nbPlayers=3)
    detail["stats"]["games"] = 1
    upstream.add("/lichess/api/tournament/fideln01", json.dumps(detail).encode(), JSON)
    upstream.add("/lichess/api/tournament/fideln01/results", upstream.files["tournament_hallow23_results_nb3.ndjson"],
                 NDJSON)
    upstream.add("/lichess/api/tournament/fideln01/games", upstream.files["tournament_may25bta_games_first.pgn"],
                 "application/x-chess-pgn")
    imported(server, "fideln01")
    white, = db_one(server, "SELECT white_username FROM games")
    deadline = time.monotonic() + 10  # the link is made right after the import's transaction
    while db_one(server, "SELECT count(*) FROM player_accounts a JOIN players p ON p.id = a.player_id "
                         "WHERE a.platform = 'lichess' AND a.username = ? AND p.fide_id = 24248185", (white,))[0] == 0 \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    player_id, fide_id = db_one(server, "SELECT p.id, p.fide_id FROM player_accounts a JOIN players p "
                                        "ON p.id = a.player_id WHERE a.platform = 'lichess' AND a.username = ?",
                                        (white,))
    assert fide_id == 24248185
    body = server.client.get(f"/api/players/{player_id}").json()
    assert body["success"] is True and body["data"]["fideId"] == 24248185
    accounts = {(a["platform"], a["username"]) for a in body["data"]["accounts"]}
    assert accounts == {("fide", "24248185"), ("lichess", white)}


def test_a_revalidation_is_a_background_call(start_server, upstream: ReplayUpstream) -> None:
    # stale-while-revalidate on --workers 2: the user gets the stale copy at once and the one refresh
    # goes to the upstream as a background call (it gives way to users at the gate), counted in /metrics
    server = start_server("--workers", "2", "--no-jobs", env={"CHESSSTATS_TOURNAMENTS_ONGOING_TTL_S": "1"})
    tid = "swrbg001"
    ongoing_arena(upstream, tid)
    assert server.client.get(f"/api/tournaments/{tid}").json()["cached"] is False  # an interactive fetch
    before = wait_for_scrape(server, lambda s: total(s, "chessstats_upstream_calls_total", upstream="lichess") >= 1)
    assert total(before, "chessstats_upstream_background_calls_total", upstream="lichess") == 0
    time.sleep(1.2)
    upstream.reset()
    for _ in range(6):  # new connections: spread over the workers
        resp = httpx.get(f"{server.url}/api/tournaments/{tid}", timeout=30)
        assert resp.status_code == 200 and resp.headers["x-cache"] in ("STALE", "HIT"), resp.headers
    after = wait_for_scrape(server, lambda s: total(s, "chessstats_upstream_background_calls_total",
                                                    upstream="lichess") >= 1)
    time.sleep(1.5)  # a second revalidation, if any, would be counted by now
    after = wait_for_scrape(server, lambda s: True)
    assert count(upstream, tid) == 1 == total(after, "chessstats_upstream_background_calls_total", upstream="lichess")
