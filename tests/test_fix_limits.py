"""Rate limits and metrics on real servers: the players' games routes are expensive, a CORS preflight
is never counted nor refused, ``/metrics`` survives its directory being deleted, and a bearer token
of raw non-ASCII bytes is a 401."""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

import httpx
import pytest

from chessstats.api.observe import route_label
from chessstats.app import create_app
from chessstats.config import load_config
from chessstats.openapi import app_routes
from chessstats.ratelimit import RateLimiter
from tests.test_metrics import Samples, scrape, total
from tests.test_ratelimit import assert_both_workers_answered, assert_workers_answered, fresh_get, limited, settle

#: Every expensive route (API.md: "10 / 5 minutes on the expensive routes (``.../games``)").
EXPENSIVE = {"/api/tournaments/{tid}/games", "/api/players/lichess/{username}/games",
             "/api/players/chesscom/{username}/games"}
PREFLIGHT = {"Origin": "https://frontend.example", "Access-Control-Request-Method": "GET"}


def test_exactly_the_games_routes_of_the_route_table_are_expensive() -> None:
    config = load_config(None, env={})
    app = create_app(config, name="fix_limits_routes")
    limiter = RateLimiter(config.ratelimit, None)
    try:
        api = {route_label(path): limiter.expensive(path) for path, _, _ in app_routes(app)
               if route_label(path).startswith("/api/")}
    finally:
        limiter.close()
    assert len(api) >= 15
    assert {label for label, expensive in api.items() if expensive} == EXPENSIVE
    # a new .../games route cannot escape: every one in the table is in EXPENSIVE (and so expensive)
    assert {label for label in api if label.endswith("/games")} == EXPENSIVE


def test_the_players_games_routes_take_the_expensive_window(start_server, upstream) -> None:
    server = start_server("--no-jobs", env=limited(50, CHESSSTATS_RATELIMIT_EXPENSIVE_MAX_REQUESTS="2"))
    settle(60, 300)
    upstream.reset()
    client = server.client
    lichess, chesscom = "/api/players/lichess/lance5500/games", "/api/players/chesscom/hikaru/games"
    first = client.get(lichess, params={"max": "0"})  # a 400 with no upstream call, counted first
    assert first.status_code == 400, first.text
    assert (first.headers["ratelimit-limit"], first.headers["ratelimit-remaining"]) == ("2", "1")
    assert 1 <= int(first.headers["ratelimit-reset"]) <= 300
    second = client.get(chesscom, params={"max": "0"})  # one expensive window for every expensive route
    assert second.status_code == 400 and second.headers["ratelimit-limit"] == "2"
    assert second.headers["ratelimit-remaining"] == "0"
    for path in (lichess, chesscom):
        refused = client.get(path, params={"max": "1"})
        assert refused.status_code == 429 and refused.json()["code"] == "rate_limited", path
        assert refused.headers["ratelimit-limit"] == "2" and int(refused.headers["retry-after"]) >= 1
        assert "2 per 300 s" in refused.json()["error"]
    assert upstream.total() == 0  # refused before the route ran
    general = client.get("/api/players/lichess/lance5500")  # not expensive: the general window (50)
    assert general.status_code != 429 and general.headers["ratelimit-limit"] == "50"
    assert general.headers["ratelimit-remaining"] == "45"


def test_a_preflight_is_neither_counted_nor_refused(start_server) -> None:
    server = start_server("--no-jobs", env=limited(3))
    settle(60)
    client = server.client

    def preflight(path: str) -> httpx.Response:
        resp = client.options(path, headers=PREFLIGHT)
        assert resp.status_code == 204, (path, resp.status_code, resp.text)
        assert resp.headers["access-control-allow-origin"] in ("*", PREFLIGHT["Origin"])
        assert "GET" in resp.headers["access-control-allow-methods"]
        return resp

    assert client.get("/api/no-such-route").headers["ratelimit-remaining"] == "2"
    for path in ("/api/tournaments", "/api/tournaments/abc/games", "/api/players/lichess/x/games"):
        preflight(path)
    assert client.options("/api/no-such-route", headers=PREFLIGHT).status_code == 404  # no route: not counted
    assert client.get("/api/no-such-route").headers["ratelimit-remaining"] == "1"  # the preflights: nothing
    assert client.get("/api/no-such-route").headers["ratelimit-remaining"] == "0"
    assert client.get("/api/tournaments").status_code == 429  # the limit is used up
    for _ in range(3):  # still the normal preflight answer, with no limit headers of its own
        resp = preflight("/api/tournaments")
        assert "ratelimit-remaining" not in resp.headers and "retry-after" not in resp.headers
    refused = client.get("/api/tournaments", headers={"Origin": PREFLIGHT["Origin"]})
    assert refused.status_code == 429 and refused.headers["ratelimit-remaining"] == "0"
    assert "access-control-allow-origin" in refused.headers  # the frontend can read Retry-After
    # an OPTIONS that is not a preflight is a request like any other
    assert client.options("/api/tournaments").status_code == 429


def _unmatched(server) -> float:
    return total(scrape(server), "chessstats_http_requests_total", route="<unmatched>")


def _wait_unmatched(server, want: float, timeout_s: float = 30) -> Samples:
    deadline = time.monotonic() + timeout_s
    while True:
        samples = scrape(server)
        if total(samples, "chessstats_http_requests_total", route="<unmatched>") >= want \
                or time.monotonic() > deadline:
            return samples
        time.sleep(0.3)


@pytest.mark.parametrize("workers", [1, 2])
def test_metrics_recover_when_their_directory_is_deleted(start_server, tmp_path: Path, workers: int) -> None:
    data_dir = tmp_path / "d"
    server = start_server("--workers", str(workers), "--no-jobs", data_dir=data_dir)
    for _ in range(4):
        fresh_get(server.url + "/api/no-such-route")
    assert total(_wait_unmatched(server, 4), "chessstats_http_requests_total", route="<unmatched>") == 4
    shutil.rmtree(data_dir / "metrics")
    for _ in range(6):  # on new connections: spread over the workers
        assert fresh_get(server.url + "/api/no-such-route").status_code == 404
    # every worker makes the directory again within a flush (1 s); the counts from before are gone
    samples = _wait_unmatched(server, 6)
    assert total(samples, "chessstats_http_requests_total", route="<unmatched>") == 6
    assert (data_dir / "metrics").is_dir()
    time.sleep(2.5)  # more flushes: one log line per worker, not one a second
    assert _unmatched(server) == 6
    # logged once per worker that found its files gone, never once a second (a worker whose flush ran
    # while the directory was being removed has been seen to take the rebuilt files without a line)
    assert 1 <= server.log().count("was deleted while the server ran") <= workers
    assert "Traceback" not in server.log()


def test_a_bearer_token_of_raw_non_ascii_bytes_is_refused_401(start_server) -> None:
    server = start_server("--no-jobs", env={"CHESSSTATS_METRICS_TOKEN": "s3cret"})

    def raw_get(authorization: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nAuthorization: " + authorization
                         + b"\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        return answer

    for header in (b"Bearer \xff\xfe", b"\xff\xfe", b"Bearer s3cret\xff", b"Bearer \xc3\xa9"):
        answer = raw_get(header)
        assert answer.startswith(b"HTTP/1.1 401 "), (header, answer[:200])
        assert b'"unauthorized"' in answer and b"www-authenticate: bearer" in answer.lower()
    assert raw_get(b"Bearer s3cret").startswith(b"HTTP/1.1 200 ")
    assert "UnicodeEncodeError" not in server.log()


@pytest.mark.parametrize("workers", [2, 4])
def test_the_expensive_window_holds_across_workers(start_server, upstream, workers: int) -> None:
    # the players' games routes on --workers 2 and 4, each request on a new connection (the kernel spreads
    # them): one expensive window for both routes and every worker, exact, refused before any upstream call
    server = start_server("--workers", str(workers), "--no-jobs",
                          env=limited(50, CHESSSTATS_RATELIMIT_EXPENSIVE_MAX_REQUESTS="6"))
    settle(60, 300)
    upstream.reset()
    paths = ["/api/players/lichess/lance5500/games", "/api/players/chesscom/hikaru/games"]
    counted = [fresh_get(server.url + paths[i % 2], params={"max": "0"}) for i in range(6)]  # 400s, no upstream
    assert [r.status_code for r in counted] == [400] * 6, [r.text[:200] for r in counted]
    assert [int(r.headers["ratelimit-remaining"]) for r in counted] == [5, 4, 3, 2, 1, 0]
    refused = [fresh_get(server.url + path, params={"max": "1"}) for path in paths * 2]
    assert [r.status_code for r in refused] == [429] * 4 and all("retry-after" in r.headers for r in refused)
    assert upstream.total() == 0
    if workers == 2:
        assert_both_workers_answered(server)
    else:
        assert_workers_answered(server, at_least=2)
