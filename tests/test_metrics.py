"""``GET /metrics`` on real servers, parsed by the Prometheus client's own parser."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Server, imported
from tests.replay import ReplayUpstream
from tests.test_scheduler_server import jobs_env

StartServer = Callable[..., Server]
Samples = list[tuple[str, dict[str, str], float]]


def scrape(server: Server, **headers: str) -> Samples:
    resp = server.client.get("/metrics", headers=headers)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(resp.text)
            for s in family.samples]


def total(samples: Samples, name: str, **labels: str) -> float:
    return sum(v for n, lab, v in samples if n == name and all(lab.get(k) == w for k, w in labels.items()))


def wait_for_scrape(server: Server, ready: Callable[[Samples], bool], timeout_s: float = 30) -> Samples:
    deadline = time.monotonic() + timeout_s
    while True:
        samples = scrape(server)
        if ready(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.3)


def test_one_scrape_sees_every_worker(start_server: StartServer, upstream: ReplayUpstream) -> None:
    server = start_server("--workers", "2", env=jobs_env(cleanup="* * * * * *"))
    n = 40
    for _ in range(n):  # new connections: the kernel spreads them over both workers
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.get("/api/tournaments?limit=5").status_code == 200
    for _ in range(3):
        assert server.client.get("/api/no-such-route").status_code == 404
    imported(server, "sH24g2zH")

    def ready(s: Samples) -> bool:
        pids = [lab["pid"] for name, lab, v in s if name == "chessstats_worker_requests" and v > 0]
        return (total(s, "chessstats_http_requests_total", route="/api/tournaments") == n
                and total(s, "chessstats_imports_total", outcome="complete") >= 1
                and total(s, "chessstats_job_runs_total", job="cleanup", outcome="completed") >= 1
                and len(pids) == 2)

    s = wait_for_scrape(server, ready)
    pids = {lab["pid"]: v for name, lab, v in s if name == "chessstats_worker_requests" and v > 0}
    assert len(pids) == 2, pids  # requests served by both workers, seen in one scrape
    assert total(s, "chessstats_http_requests_total", route="/api/tournaments", method="GET", status="200") == n
    assert total(s, "chessstats_http_requests_total", route="<unmatched>", status="404") == 3
    assert total(s, "chessstats_http_requests_total", route="/api/tournaments/{tid}", status="200") >= 1
    assert total(s, "chessstats_http_request_duration_seconds_count", route="/api/tournaments") == n
    assert total(s, "chessstats_http_request_duration_seconds_bucket", route="/api/tournaments", le="+Inf") == n
    assert total(s, "chessstats_http_request_duration_seconds_sum", route="/api/tournaments") > 0
    assert total(s, "chessstats_cache_responses_total", result="miss") >= 1
    assert total(s, "chessstats_cache_responses_total", result="hit") >= n - 2
    assert total(s, "chessstats_upstream_calls_total", upstream="lichess", status="2xx") >= 3  # list, info, exports
    assert total(s, "chessstats_upstream_429_total", upstream="lichess") == 0
    assert total(s, "chessstats_import_duration_seconds_count", outcome="complete") >= 1
    assert total(s, "chessstats_job_run_duration_seconds_count", job="cleanup") >= 1
    assert total(s, "chessstats_database_size_bytes", file="db") > 0
    assert ("chessstats_upstream_paused_seconds", {"upstream": "lichess"}, 0.0) in s


def test_upstream_429s_and_pauses_are_counted(start_server: StartServer, upstream: ReplayUpstream) -> None:
    server = start_server("--no-jobs", env={"CHESSSTATS_LICHESS_PAUSE_AFTER_429_S": "30"})
    upstream.set_fault(r"/api/(tournament|swiss)/", "429-retry", seconds=7)
    assert server.client.get("/api/tournaments/aaaaaaaa").status_code == 503
    s = wait_for_scrape(server, lambda s: total(s, "chessstats_upstream_429_total", upstream="lichess") >= 1)
    assert total(s, "chessstats_upstream_429_total", upstream="lichess") == 1
    assert total(s, "chessstats_upstream_pause_seconds_total", upstream="lichess") == 7
    assert total(s, "chessstats_upstream_calls_total", upstream="lichess", status="4xx") == 1
    assert 0 < total(s, "chessstats_upstream_paused_seconds", upstream="lichess") <= 7
    assert server.client.get("/api/tournaments/bbbbbbbb").status_code == 503  # refused without a call
    s = wait_for_scrape(server, lambda s: total(s, "chessstats_upstream_refused_total", reason="paused") >= 1)
    assert total(s, "chessstats_upstream_refused_total", upstream="lichess", reason="paused") >= 1


def test_a_token_protects_it_and_it_can_be_off(start_server: StartServer, tmp_path) -> None:
    server = start_server("--no-jobs", env={"CHESSSTATS_METRICS_TOKEN": "s3cret"}, data_dir=tmp_path / "a")
    refused = server.client.get("/metrics")
    assert refused.status_code == 401 and refused.json()["code"] == "unauthorized"
    assert server.client.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert scrape(server, Authorization="Bearer s3cret")
    off = start_server("--no-jobs", env={"CHESSSTATS_METRICS_ENABLED": "false"}, data_dir=tmp_path / "b")
    assert off.client.get("/metrics").status_code == 404
    assert not (tmp_path / "b" / "metrics").exists()


def test_a_restart_starts_from_zero(start_server: StartServer, tmp_path) -> None:
    data_dir = tmp_path / "d"
    first = start_server("--no-jobs", data_dir=data_dir)
    for _ in range(5):
        first.client.get("/api/no-such-route")
    s = wait_for_scrape(first, lambda s: total(s, "chessstats_http_requests_total", route="<unmatched>") == 5)
    assert total(s, "chessstats_http_requests_total", route="<unmatched>") == 5
    first.stop()
    second = start_server("--no-jobs", data_dir=data_dir)
    second.client.get("/api/no-such-route")
    s = wait_for_scrape(second, lambda s: total(s, "chessstats_http_requests_total", route="<unmatched>") >= 1)
    assert total(s, "chessstats_http_requests_total", route="<unmatched>") == 1


def test_every_answer_is_counted_once_with_two_workers(start_server: StartServer, upstream: ReplayUpstream) -> None:
    # routed answers, routing errors and 429s are tallied outside Sanic middleware: each exactly once,
    # in whichever worker answered, and a scrape sees them all within a flush interval or two
    from tests.test_ratelimit import fresh_get, limited, settle

    server = start_server("--workers", "2", "--no-jobs", env=limited(20))
    settle(60)
    time.sleep(2.5)  # every worker has flushed the start-up's /health polls
    health_before = total(scrape(server), "chessstats_http_requests_total", route="/health", status="200")
    statuses = [fresh_get(server.url + "/api/no-such-route").status_code for _ in range(30)]
    assert statuses.count(404) == 20 and statuses.count(429) == 10, statuses
    for _ in range(5):
        assert fresh_get(server.url + "/health").status_code == 200  # not /api: never limited

    def ready(s: Samples) -> bool:
        return (total(s, "chessstats_http_requests_total", route="<unmatched>") >= 30
                and total(s, "chessstats_http_requests_total", route="/health") >= health_before + 5)

    s = wait_for_scrape(server, ready)
    assert total(s, "chessstats_http_requests_total", route="<unmatched>", status="404") == 20
    assert total(s, "chessstats_http_requests_total", route="<unmatched>", status="429") == 10
    assert total(s, "chessstats_ratelimit_refused_total") == 10
    assert total(s, "chessstats_http_requests_total", route="/health", method="GET", status="200") == health_before + 5
    assert total(s, "chessstats_http_request_duration_seconds_count", route="<unmatched>") == 30
    assert total(s, "chessstats_cache_responses_total") == 0  # no envelope answered


def test_background_calls_are_counted_apart(start_server: StartServer, upstream: ReplayUpstream) -> None:
    # a user's first GET of a finished tournament fetches its detail itself (an interactive call) and
    # queues its import, whose results and games exports are background calls (they give way to users
    # at the gate); on --workers 2 the scrape sums both workers
    server = start_server("--workers", "2", "--no-jobs")
    upstream.reset()
    imported(server, "sH24g2zH")
    lichess = sum(n for path, n in upstream.counts.items() if path.startswith("/lichess/"))
    s = wait_for_scrape(server, lambda s: total(s, "chessstats_upstream_calls_total", upstream="lichess") >= lichess)
    background = total(s, "chessstats_upstream_background_calls_total", upstream="lichess")
    assert total(s, "chessstats_upstream_calls_total", upstream="lichess") == lichess
    assert upstream.counts["/lichess/api/tournament/sH24g2zH/games"] == 1
    assert 2 <= background < lichess, (background, upstream.counts)  # the exports; the user's detail fetch was not
