"""Background upstream calls (the scheduler's jobs) give way to users' requests at the gate.

The tournament-monitor job refreshes every stored ongoing Lichess tournament (14 in the replay's
recorded list, arena then swiss each); with Lichess at its real ``2/1s`` rate and one request in
flight, users' player requests made while it runs must still answer 200 within the normal 2-s
wait bound, whatever the worker, and the replay must never see more than the configured rate.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import Server
from tests.replay import ReplayUpstream
from tests.test_scheduler_server import jobs_env, wait_for

StartServer = Callable[..., Server]

PLAYERS = ["/api/players/lichess/thibault", "/api/players/lichess/maia5", "/api/players/lichess/Ediz_Gurel/history",
           "/api/players/lichess/top/rapid"]


def lichess_arrivals(upstream: ReplayUpstream) -> list[float]:
    with upstream._lock:
        return sorted(at for at, path in upstream.arrivals if path.startswith("/lichess/"))


def monitor_calls(upstream: ReplayUpstream) -> int:
    with upstream._lock:
        return sum(1 for _, path in upstream.arrivals if "/tournament/" in path or "/swiss/" in path)


def assert_rate_kept(arrivals: list[float], count: int = 2, window_s: float = 1.0) -> None:
    """No ``count + 1`` requests within ``window_s`` (less 0.1 s of network jitter)."""
    for first, last in zip(arrivals, arrivals[count:], strict=False):
        assert last - first >= window_s - 0.1, f"{count + 1} upstream requests within {last - first:.3f} s"


def run_monitor_with_users(server: Server, upstream: ReplayUpstream) -> list[tuple[str, int, float, str]]:
    """Store the live tournaments, run the monitor, and ask for the players while it runs; returns
    ``(path, status, seconds, code)`` of each user request."""
    assert server.client.get("/api/tournaments?limit=1").status_code == 200
    upstream.reset()
    resp = server.admin("POST", "/api/admin/jobs/tournament-monitor/run")
    assert resp.status_code == 202, resp.text
    wait_for(lambda: monitor_calls(upstream) >= 3, timeout_s=30)  # the monitor is under way

    def get(path: str) -> tuple[str, int, float, str]:
        start = time.monotonic()
        r = httpx.get(server.url + path, timeout=30)  # a new connection: any worker
        code = r.json().get("code", "") if r.status_code != 200 else ""
        return path, r.status_code, time.monotonic() - start, code

    results = [get(p) for p in PLAYERS]  # one after the other, as a user browses
    with ThreadPoolExecutor(2) as pool:  # and two users at once, on other players' pages again
        results += list(pool.map(get, ["/api/players/lichess/maia1", "/api/players/lichess/top/blitz"]))
    assert monitor_calls(upstream) < 28, "the monitor finished before the users asked: nothing was tested"
    return results


@pytest.mark.parametrize("workers", [1, 2])
def test_user_requests_get_through_while_the_monitor_runs(start_server: StartServer, upstream: ReplayUpstream,
                                                          workers: int) -> None:
    env = {**jobs_env(tournament_monitor="0 0 1 1 *"), "CHESSSTATS_LICHESS_RATE": "2/1s"}
    server = start_server("--workers", str(workers), env=env)
    results = run_monitor_with_users(server, upstream)
    for path, status, seconds, code in results:
        assert status == 200, f"{path}: {status} {code} after {seconds:.1f} s"
        assert seconds < 2.0 + 1.0, f"{path} took {seconds:.1f} s"  # the wait bound plus the request itself

    def finished() -> dict | None:
        runs = server.admin("GET", "/api/admin/jobs").json()["data"]
        done = runs["completed"] + runs["failed"]
        return done[0] if done else None

    run = wait_for(finished, timeout_s=90, every_s=0.5)
    assert run["state"] == "completed" and "refreshed" in run["summary"], run  # the monitor still did its work
    assert "failed" not in run["summary"], run
    arrivals = lichess_arrivals(upstream)
    assert_rate_kept(arrivals)
    print(f"\n[measure] --workers {workers}: {len(results)} user requests, slowest "
          f"{max(s for _, _, s, _ in results):.2f} s; {len(arrivals)} Lichess requests in "
          f"{arrivals[-1] - arrivals[0]:.1f} s; monitor: {run['summary']} in {run['durationMs']} ms")


def test_two_processes_on_one_data_dir(start_server: StartServer, upstream: ReplayUpstream, tmp_path) -> None:
    """The monitor runs in one process, the users ask the other: the gate's state in <data dir>/gate
    (or Redis) makes the first give way to the second."""
    data_dir = tmp_path / "shared"
    env = {**jobs_env(tournament_monitor="0 0 1 1 *"), "CHESSSTATS_LICHESS_RATE": "2/1s"}
    a = start_server("--workers", "1", data_dir=data_dir, env=env)
    b = start_server("--workers", "1", "--no-jobs", data_dir=data_dir, env=env)
    assert a.client.get("/api/tournaments?limit=1").status_code == 200
    upstream.reset()
    assert a.admin("POST", "/api/admin/jobs/tournament-monitor/run").status_code == 202
    wait_for(lambda: monitor_calls(upstream) >= 3, timeout_s=30)
    for path in PLAYERS:
        start = time.monotonic()
        r = b.client.get(path)
        assert r.status_code == 200, f"{path}: {r.status_code} {r.text[:200]}"
        assert time.monotonic() - start < 3.0
    assert monitor_calls(upstream) < 28, "the monitor finished before the users asked: nothing was tested"
    wait_for(lambda: a.admin("GET", "/api/admin/jobs").json()["data"]["counts"]["completed"] == 1,
             timeout_s=90, every_s=0.5)
    assert_rate_kept(lichess_arrivals(upstream))
