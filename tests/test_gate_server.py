"""The upstream gate in the real server (``--workers N``): upstream request counts, status codes and
error codes. The services' behaviour on top (cache, stale copies) is not asserted here.

Client requests are sent on fresh connections, in parallel, so that they spread over the workers.
"""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.conftest import Server, free_port
from tests.replay import ReplayUpstream

TOURNAMENT = "/lichess/api/tournament/"
FINISHED = "sH24g2zH"


def get(server: Server, path: str, timeout_s: float = 30) -> tuple[httpx.Response, float]:
    """GET on a new connection; the response and its duration in seconds."""
    start = time.monotonic()
    resp = httpx.get(server.url + path, timeout=timeout_s)
    return resp, time.monotonic() - start


def get_many(server: Server, paths: list[str]) -> list[tuple[httpx.Response, float]]:
    with ThreadPoolExecutor(len(paths)) as pool:
        return list(pool.map(lambda p: get(server, p), paths))


def code(resp: httpx.Response) -> str | None:
    try:
        return resp.json()["code"]
    except (ValueError, KeyError, TypeError):
        return None


def tournament_calls(upstream: ReplayUpstream) -> int:
    return sum(n for path, n in upstream.counts.items() if "/tournament/" in path or "/swiss/" in path)


def start(start_server: Any, workers: int, **env: str) -> Server:
    full = {f"CHESSSTATS_LICHESS_{k.upper()}": v for k, v in env.items() if k != "url"}
    if "url" in env:
        full["LICHESS_API_URL"] = env["url"]
    return start_server("--workers", str(workers), "--no-jobs", env=full)


@pytest.mark.parametrize("workers, fault", [(2, "429-retry"), (2, "429-date"), (4, "429-retry"), (4, "429-date")])
def test_429_pauses_every_worker(start_server: Any, upstream: ReplayUpstream, workers: int, fault: str) -> None:
    server = start(start_server, workers, pause_after_429_s="60")
    upstream.set_fault(TOURNAMENT, fault, seconds=3)
    first, _ = get(server, "/api/tournaments/aaaa0001")
    assert first.status_code == 503 and code(first) == "upstream_rate_limited"
    assert 2 <= int(first.headers["retry-after"]) <= 3  # the upstream's pause, not the 60 s default
    others = get_many(server, [f"/api/tournaments/bbbb{i:04d}" for i in range(3 * workers)])
    for resp, seconds in others:
        assert resp.status_code == 503 and code(resp) == "upstream_rate_limited", resp.text
        assert 1 <= int(resp.headers["retry-after"]) <= 3 and seconds < 1
    assert upstream.total() == 1  # one request reached the upstream during the pause, whatever the worker
    print(f"\n[measure] {fault}, --workers {workers}: {1 + len(others)} client requests during a 3 s pause, "
          f"{upstream.total()} upstream request")
    upstream.clear_faults()
    time.sleep(3.1)
    resp, _ = get(server, "/api/tournaments/zzzzzzzz")
    assert resp.status_code == 404 and upstream.total() == 3  # arena, then swiss: the pause is over


def test_repeated_429_doubles_the_pause(start_server: Any, upstream: ReplayUpstream) -> None:
    server = start(start_server, 2, pause_after_429_s="1", max_pause_s="3")
    upstream.set_fault(TOURNAMENT, "429")  # no Retry-After: pause_after_429_s, doubled when repeated
    pauses = []
    for i in range(4):
        resp, _ = get(server, f"/api/tournaments/cccc000{i}")
        assert resp.status_code == 503 and code(resp) == "upstream_rate_limited"
        pauses.append(int(resp.headers["retry-after"]))
        during, _ = get(server, f"/api/tournaments/dddd000{i}")
        assert code(during) == "upstream_rate_limited" and upstream.total() == i + 1
        time.sleep(pauses[-1] + 0.1)
    assert pauses == [1, 2, 3, 3]  # doubled up to max_pause_s
    print(f"\n[measure] repeated 429 without Retry-After: pauses {pauses} s, {upstream.total()} upstream requests")


def test_a_restart_during_a_pause_keeps_it(start_server: Any, upstream: ReplayUpstream) -> None:
    server = start(start_server, 1)  # one worker: a worker still starting can make a SIGTERM hang (Sanic)
    upstream.set_fault(TOURNAMENT, "429-retry", seconds=30)
    resp, _ = get(server, "/api/tournaments/eeee0001")
    assert code(resp) == "upstream_rate_limited" and resp.headers["retry-after"] == "30"
    t0 = time.monotonic()
    server.stop()
    again = start_server("--workers", "2", "--no-jobs", data_dir=server.data_dir)
    restart_s = time.monotonic() - t0
    results = get_many(again, [f"/api/tournaments/eeee000{i}" for i in range(2, 6)])
    for resp, _ in results:
        assert resp.status_code == 503 and code(resp) == "upstream_rate_limited"
        # the pause left, rounded up to whole seconds (30 when the restart took under a second)
        assert 30 - restart_s - 2 <= int(resp.headers["retry-after"]) <= 30
    assert upstream.total() == 1
    print(f"\n[measure] restart during a 30 s pause ({restart_s:.1f} s to restart): still paused after it "
          f"(Retry-After {results[0][0].headers['retry-after']} s), {upstream.total()} upstream request")


def test_rate_below_one_a_second(start_server: Any, upstream: ReplayUpstream) -> None:
    server = start(start_server, 2, rate="10/60s")
    results = get_many(server, [f"/api/tournaments/ffff000{i}" for i in range(4)])
    statuses = sorted((r.status_code, code(r)) for r, _ in results)
    assert statuses[-3:] == [(503, "upstream_busy")] * 3 and statuses[0][0] in (404, 503)
    for resp, seconds in results:
        if resp.status_code == 503:
            assert 1 <= int(resp.headers["retry-after"]) <= 6 and seconds < 1.5
    assert all(r.status_code != 500 for r, _ in results)
    assert upstream.total() == 1  # one send, then one every 6 s: no burst
    print(f"\n[measure] rate 10/60s: 4 parallel requests, {upstream.total()} upstream request, others 503 "
          f"upstream_busy with Retry-After {[r.headers.get('retry-after') for r, _ in results]}")


def test_rate_two_a_second_never_bursts(start_server: Any, upstream: ReplayUpstream) -> None:
    server = start_server("--workers", "2", "--no-jobs", env={
        "CHESSSTATS_LICHESS_RATE": "2/1s", "CHESSSTATS_LICHESS_MAX_QUEUE_WAIT_S": "10", "LOG_LEVEL": "debug"})
    results = get_many(server, [f"/api/tournaments/gggg000{i}" for i in range(4)])
    assert all(r.status_code == 404 for r, _ in results)  # arena then swiss: 8 upstream requests
    arrivals = sorted(t for t, _ in upstream.arrivals)
    sends = sorted(float(m) for m in re.findall(r"lichess: request admitted at ([0-9.]+)", server.log()))
    assert len(arrivals) == len(sends) == 8
    spans = [b - a for a, b in zip(sends, sends[2:], strict=False)]  # spans of 3 successive sends
    gaps = [b - a for a, b in zip(sends, sends[1:], strict=False)]
    assert min(gaps) >= 0.5 - 0.005 and min(spans) >= 1.0 - 0.005, sends  # never 3 within one second
    # at the replay, arrival times add the jitter of a loaded machine (first connections, threads)
    arrival_spans = [b - a for a, b in zip(arrivals, arrivals[2:], strict=False)]
    assert min(arrival_spans) >= 0.7, arrivals
    print(f"\n[measure] rate 2/1s, 2 workers, 8 upstream requests: send gaps {min(gaps):.3f}..{max(gaps):.3f} s, "
          f"shortest span of 3 sends {min(spans):.3f} s (at the replay: {min(arrival_spans):.3f} s)")


def test_trickling_body_ends_at_the_deadline(start_server: Any, upstream: ReplayUpstream) -> None:
    server = start(start_server, 1, timeout_s="2", max_queue_wait_s="5")
    upstream.set_fault(f"/tournament/{FINISHED}$", "trickle", interval=0.2)
    with ThreadPoolExecutor(3) as pool:
        slow = pool.submit(get, server, f"/api/tournaments/{FINISHED}")
        time.sleep(0.3)
        health = pool.submit(get, server, "/health")
        other = pool.submit(get, server, "/api/tournaments/zzzzzzzz")
        (resp, seconds), (health_resp, health_s), (other_resp, other_s) = slow.result(), health.result(), other.result()
    assert resp.status_code == 502 and code(resp) == "upstream_error" and "timed out" in resp.json()["error"]
    assert 1.9 <= seconds < 3.0
    assert health_resp.status_code in (200, 503) and health_s < 1  # the worker is not held
    assert other_resp.status_code == 404 and other_s < 3.5  # waited its turn, then went through
    print(f"\n[measure] trickling body, timeout_s=2: 502 after {seconds:.2f} s; /health meanwhile in "
          f"{health_s:.2f} s; a queued request done {other_s:.2f} s after it was sent")


def test_failures_open_the_breaker(start_server: Any, upstream: ReplayUpstream) -> None:
    server = start(start_server, 2, breaker_failures="5", breaker_open_s="3")
    kinds = [("500", {}, "upstream_error"), ("html500", {"status": 502}, "upstream_error"),
             ("html403", {}, "upstream_blocked"), ("drop", {}, "upstream_error"), ("500", {}, "upstream_error")]
    for i, (kind, opts, expected) in enumerate(kinds):
        upstream.set_fault(TOURNAMENT, kind, times=1, **opts)
        resp, _ = get(server, f"/api/tournaments/hhhh000{i}")
        assert resp.status_code == 502 and code(resp) == expected, (kind, resp.text)
        if kind == "html403":
            assert "contact" in resp.json()["error"]
    assert upstream.total() == 5
    upstream.reset()
    results = get_many(server, [f"/api/tournaments/iiii000{i}" for i in range(6)])
    for resp, seconds in results:
        assert resp.status_code == 503 and code(resp) == "upstream_busy" and seconds < 1
        assert "failing" in resp.json()["error"] and 1 <= int(resp.headers["retry-after"]) <= 3
    assert upstream.total() == 0  # the breaker answered, not the upstream
    time.sleep(3.1)
    probes = get_many(server, [f"/api/tournaments/jjjj000{i}" for i in range(4)])
    assert any(r.status_code == 404 for r, _ in probes)
    arena_calls = sum(n for p, n in upstream.counts.items() if p.startswith(TOURNAMENT))
    assert arena_calls >= 1
    print(f"\n[measure] 5 failures (500, HTML 502, HTML 403, cut stream, 500) opened the breaker: 6 client "
          f"requests, 0 upstream requests; after 3 s the probe passed: {[r.status_code for r, _ in probes]}")


def test_connection_refused_opens_the_breaker(start_server: Any, upstream: ReplayUpstream) -> None:
    closed = free_port()
    server = start(start_server, 1, url=f"http://127.0.0.1:{closed}/api", breaker_failures="5", breaker_open_s="30")
    for i in range(5):
        resp, _ = get(server, f"/api/tournaments/kkkk000{i}")
        assert resp.status_code == 502 and code(resp) == "upstream_error"
    for i in range(3):
        resp, seconds = get(server, f"/api/tournaments/llll000{i}")
        assert resp.status_code == 503 and code(resp) == "upstream_busy" and seconds < 0.5
        assert 25 <= int(resp.headers["retry-after"]) <= 30


def test_bounded_queue_answers_busy_at_once(start_server: Any, upstream: ReplayUpstream) -> None:
    server = start(start_server, 2, max_queue_wait_s="0.5")
    upstream.set_fault(f"/tournament/{FINISHED}$", "slow", seconds=3)
    with ThreadPoolExecutor(5) as pool:
        holder = pool.submit(get, server, f"/api/tournaments/{FINISHED}")
        time.sleep(0.5)
        waiting = [pool.submit(get, server, f"/api/tournaments/mmmm000{i}") for i in range(4)]
        busy = [f.result() for f in waiting]
        held, held_s = holder.result()
    for resp, seconds in busy:
        assert resp.status_code == 503 and code(resp) == "upstream_busy", resp.text
        assert int(resp.headers["retry-after"]) >= 1 and seconds < 1.5
    assert not [p for p in upstream.counts if "mmmm" in p]  # refused ones never reached the upstream
    assert held.status_code == 200 and held_s >= 3
    print(f"\n[measure] one slot held by a 3 s answer, max_queue_wait_s=0.5: 4 requests answered 503 "
          f"upstream_busy in {max(s for _, s in busy):.2f} s at most")
