"""Every error status of the tournament routes, through the real server: the API.md envelope,
no stack trace, and no partial row left by a failed import."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.conftest import Server, imported
from tests.pg_store import connect_store
from tests.replay import ReplayUpstream

TEAM_BATTLE = "sH24g2zH"


def assert_error(resp: httpx.Response, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"success", "error", "code"}
    assert body["success"] is False and body["code"] == code and body["error"]
    for leak in ("Traceback", "File \"", "/work/", "site-packages", "SELECT ", "sqlite3."):
        assert leak not in resp.text
    return body


def stored_rows(server: Server) -> tuple[int, int, int]:
    db = connect_store(server.data_dir)
    try:
        return (
            db.execute("SELECT count(*) FROM tournaments WHERE imported_at IS NOT NULL").fetchone()[0],
            db.execute("SELECT count(*) FROM standings").fetchone()[0],
            db.execute("SELECT count(*) FROM games").fetchone()[0],
        )
    finally:
        db.close()


@pytest.mark.parametrize("path, fragment", [
    ("/api/tournaments/abc", "malformed"),
    ("/api/tournaments/abcdefgh!", "malformed"),
    ("/api/tournaments/abcdefghi", "malformed"),
    ("/api/tournaments?limit=0", "limit"),
    ("/api/tournaments?limit=101", "limit"),
    ("/api/tournaments?limit=ten", "limit"),
    ("/api/tournaments?page=0", "page"),
    ("/api/tournaments?page=-1", "page"),
    ("/api/tournaments?limit=%C2%B2", "limit"),  # superscript two: a digit to str.isdigit, not to int()
    ("/api/tournaments?limit=%D9%A3", "limit"),  # Arabic-Indic three
    ("/api/tournaments?page=" + "9" * 5000, "page"),  # beyond int()'s digit limit
    ("/api/tournaments/sH24g2zH/games?page=%E2%91%A0", "page"),
    ("/api/tournaments?status=live", "status"),
    ("/api/tournaments?platform=icc", "platform"),
    ("/api/tournaments/bad.id?platform=chesscom", "malformed"),
    ("/api/tournaments/sH24g2zH/results?limit=501", "limit"),
    ("/api/tournaments/sH24g2zH/games?limit=201", "limit"),
    ("/api/tournaments/sH24g2zH/games?format=xml", "format"),
    ("/api/tournaments/batch", "ids"),
    ("/api/tournaments/batch?ids=,,", "ids"),
    ("/api/tournaments/batch?ids=" + ",".join(f"abcd{i:04d}" for i in range(51)), "at most 50"),
    ("/api/tournaments/batch?ids=sH24g2zH,bad", "malformed"),
])
def test_bad_requests_are_400_and_never_reach_upstream(
    server: Server, upstream: ReplayUpstream, path: str, fragment: str
) -> None:
    body = assert_error(server.client.get(path), 400, "bad_request")
    assert fragment in body["error"]
    assert upstream.total() == 0


def test_unknown_tournament_and_route_are_404(server: Server, upstream: ReplayUpstream) -> None:
    assert_error(server.client.get("/api/tournaments/zzzzzzzz"), 404, "not_found")
    assert upstream.counts == {"/lichess/api/tournament/zzzzzzzz": 1, "/lichess/api/swiss/zzzzzzzz": 1}
    # the upstream's answer is remembered briefly (negative cache entry): no second round trip
    assert_error(server.client.get("/api/tournaments/zzzzzzzz"), 404, "not_found")
    assert_error(server.client.get("/api/tournaments/zzzzzzzz/results"), 404, "not_found")
    batch = server.client.get("/api/tournaments/batch?ids=zzzzzzzz").json()
    assert (batch["count"], batch["notFound"], batch["source"], batch["cached"]) == (0, ["zzzzzzzz"], "cache", True)
    assert upstream.total() == 2
    assert_error(server.client.get("/api/nothing-here"), 404, "not_found")
    wrong_method = server.client.post("/api/tournaments")
    assert_error(wrong_method, 405, "method_not_allowed")
    assert "GET" in wrong_method.headers["allow"]
    head = server.client.head("/api/tournaments/zzzzzzzz")
    assert head.status_code == 404 and head.content == b""
    head = server.client.head("/health")
    assert head.status_code == 200 and head.content == b"" and int(head.headers["content-length"]) > 0


@pytest.mark.parametrize("kind", ["500", "html500", "html404", "badjson", "slow"])
def test_upstream_failure_with_nothing_stored_is_502(
    start_server: object, upstream: ReplayUpstream, kind: str
) -> None:
    server = start_server(env={"CHESSSTATS_UPSTREAM_TIMEOUT_S": "0.5",  # type: ignore[operator]
                               "CHESSSTATS_CACHE_FAILURE_BASE_S": "1"})
    upstream.set_fault(r"/tournament/sH24g2zH$", kind, seconds=2)
    body = assert_error(server.client.get(f"/api/tournaments/{TEAM_BATTLE}"), 502, "upstream_error")
    assert "lichess" in body["error"]
    assert stored_rows(server) == (0, 0, 0)
    calls = upstream.total()
    upstream.clear_faults()
    # the failure is remembered for a moment (failure_base_s): the next requests cost no upstream call
    for _ in range(5):
        assert_error(server.client.get(f"/api/tournaments/{TEAM_BATTLE}"), 502, "upstream_error")
    assert upstream.total() == calls
    time.sleep(1.1)
    assert server.client.get(f"/api/tournaments/{TEAM_BATTLE}").status_code == 200  # then it is tried again


@pytest.mark.parametrize("fault, retry_after", [("429", "60"), ("429-retry", "17")])
def test_upstream_429_with_nothing_stored_is_503_with_retry_after(
    server: Server, upstream: ReplayUpstream, fault: str, retry_after: str
) -> None:
    upstream.set_fault(r"/tournament/sH24g2zH$", fault, seconds=17)
    resp = server.client.get(f"/api/tournaments/{TEAM_BATTLE}")
    assert_error(resp, 503, "upstream_rate_limited")
    assert resp.headers["retry-after"] == retry_after
    calls = upstream.total()
    # Lichess asked us to wait: the client pauses instead of calling again at once
    upstream.clear_faults()
    resp = server.client.get("/api/tournaments/YxwjQGYu")
    assert_error(resp, 503, "upstream_rate_limited")
    assert 1 <= int(resp.headers["retry-after"]) <= int(retry_after)
    assert upstream.total() == calls


@pytest.mark.parametrize("kind", ["truncate", "drop", "500"])
def test_failed_import_leaves_no_partial_rows(server: Server, upstream: ReplayUpstream, kind: str) -> None:
    """Info and standings arrive, the games export breaks: nothing of the tournament is imported, the
    attempt is recorded as failed; a re-import replaces it whole once the upstream is well."""
    upstream.set_fault(r"/tournament/sH24g2zH/games$", kind)
    imported(server, TEAM_BATTLE, states=("failed",))
    assert stored_rows(server) == (0, 0, 0)
    upstream.clear_faults()
    upstream.set_fault(r"/tournament/sH24g2zH/results$", "truncate")
    assert server.admin("POST", f"/api/admin/tournaments/{TEAM_BATTLE}/reimport").status_code == 202
    imported(server, TEAM_BATTLE, states=("failed",))
    assert stored_rows(server) == (0, 0, 0)
    upstream.clear_faults()
    answer = server.admin("POST", f"/api/admin/tournaments/{TEAM_BATTLE}/reimport")
    assert answer.status_code == 202 and answer.json()["data"]["job"] == "tournament-import"
    imported(server, TEAM_BATTLE)
    assert stored_rows(server) == (1, 191, 1463)


def test_stored_tournament_served_stale_when_upstream_fails(server: Server, upstream: ReplayUpstream) -> None:
    """A tournament the discovery stored (not imported) is served from the database, flagged stale."""
    assert server.client.get("/api/tournaments?limit=1").status_code == 200  # fills from the current list
    upstream.set_fault(r"/tournament/", "500")
    resp = server.client.get("/api/tournaments/OD2t5mm2")  # listed as started
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["stale"], body["source"], body["cached"]) == (True, "database", False)
    assert resp.headers["x-cache"] == "STALE" and body["data"]["name"] == "≤2000 Blitz Arena"
    # a finished one (C95n7Ce4 is in the list's finished part) answers what is known with its import state
    finished = server.client.get("/api/tournaments/C95n7Ce4").json()
    assert finished["data"]["name"] == "Hourly Bullet Arena"
    assert finished["data"]["importState"] in ("queued", "importing", "failed")


def test_admin_routes_need_the_token(server: Server, start_server: object) -> None:
    assert_error(server.client.post("/api/admin/cache/clear"), 401, "unauthorized")
    wrong = server.client.post("/api/admin/cache/clear", headers={"Authorization": "Bearer nope"})
    assert_error(wrong, 401, "unauthorized")
    assert server.admin("POST", "/api/admin/cache/clear").status_code == 200
    bad = server.admin("POST", "/api/admin/cache/invalidate", content=b"{not json")
    assert_error(bad, 400, "bad_request")
    assert_error(server.admin("POST", "/api/admin/cache/invalidate", json={"key": 3}), 400, "bad_request")
    assert server.admin("POST", "/api/admin/cache/invalidate", json={"pattern": "tournament:*"}).status_code == 200


def test_admin_routes_closed_without_a_configured_token(start_server: object, tmp_path) -> None:
    server = start_server(env={"CHESSSTATS_ADMIN_TOKEN": ""}, data_dir=tmp_path / "d2")  # type: ignore[operator]
    assert_error(server.client.post("/api/admin/cache/clear"), 401, "unauthorized")
    assert_error(server.client.post("/api/admin/cache/clear", headers={"Authorization": "Bearer"}), 401,
                 "unauthorized")
