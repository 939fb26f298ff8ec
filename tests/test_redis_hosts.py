"""Several hosts behind one Redis (issue 12): real servers on **different data dirs** sharing the test
Redis (``REDIS_URL``), the replay upstream counting requests. A host here is a ``chessstats serve``
process with its own data dir (its own SQLite file, no shared files): whatever they agree on goes
through Redis. Skipped when redis-server is not installed."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server, imported
from tests.redis_server import RedisServer
from tests.replay import ReplayUpstream
from tests.test_scheduler_server import assert_no_overlap, assert_once_per_tick, db_runs, jobs_env, wait_for

StartServer = Callable[..., Server]
#: TEST_STORE=postgresql: every server of a test uses one PostgreSQL database (a shared store), so the
#: hosts also share their job runs and stored data; with SQLite each data dir has its own database.
SHARED_STORE = os.environ.get("TEST_STORE", "").lower() in ("pg", "postgres", "postgresql")
LEASE_S = 2.0
TOP = "/lichess/api/player/top/100/bullet"


def redis_env(redis: RedisServer, **extra: str) -> dict[str, str]:
    return {"REDIS_URL": redis.url, "CHESSSTATS_CACHE_LOCK_LEASE_S": str(LEASE_S), **extra}


def two_hosts(start_server: StartServer, redis: RedisServer, tmp_path: Path, *args: str,
              env: dict[str, str] | None = None) -> tuple[Server, Server]:
    env = redis_env(redis, **(env or {}))
    return (start_server(*args, data_dir=tmp_path / "host-a", env=env),
            start_server(*args, data_dir=tmp_path / "host-b", env=env))


def scheduler_holder(redis: RedisServer) -> int | None:
    """The pid holding the scheduler lock in Redis (its value is ``host:pid:token``), None when free."""
    with redis.client() as client:
        value = client.get("chessstats:lock:scheduler")
    return int(value.decode().split(":")[1]) if value else None


def test_one_cache_for_both_hosts_and_a_clear_on_one_reaches_the_others_memory(
        start_server: StartServer, redis: RedisServer, upstream: ReplayUpstream, tmp_path: Path) -> None:
    a, b = two_hosts(start_server, redis, tmp_path)
    upstream.reset()
    first = a.client.get("/api/players/lichess/top/bullet?nb=5")
    assert first.status_code == 200 and first.headers["x-cache"] == "MISS"
    for _ in range(2):  # from Redis, then from b's in-process LRU
        again = b.client.get("/api/players/lichess/top/bullet?nb=5")
        assert again.headers["x-cache"] == "HIT" and again.json()["data"] == first.json()["data"]
    assert upstream.counts == {TOP: 1}  # host b never asked the upstream
    cleared = a.admin("POST", "/api/admin/cache/clear")
    assert cleared.status_code == 200, cleared.text
    time.sleep(0.15)  # b looks at the generation key every 0.1 s
    after = b.client.get("/api/players/lichess/top/bullet?nb=5")
    assert after.headers["x-cache"] == "MISS"  # b's in-process copy went too
    assert upstream.counts == {TOP: 1 if SHARED_STORE else 2}  # a shared store still has the leaderboard
    stats = b.admin("GET", "/api/admin/cache/stats").json()["data"]
    assert stats["entries"] >= 1 and stats["healthy"] is True
    health = b.client.get("/health").json()
    assert health["checks"]["cache"]["status"] == "ok", health["checks"]["cache"]


def test_a_miss_is_fetched_once_across_hosts(start_server: StartServer, redis: RedisServer,
                                             upstream: ReplayUpstream, tmp_path: Path) -> None:
    a, b = two_hosts(start_server, redis, tmp_path, "--workers", "2", "--no-jobs")
    upstream.reset()
    upstream.set_fault(r"/player/top/", "slow", seconds=1)
    servers = [a, b] * 4
    with ThreadPoolExecutor(len(servers)) as pool:
        answers = list(pool.map(lambda s: httpx.get(s.url + "/api/players/lichess/top/bullet", timeout=30), servers))
    assert all(r.status_code == 200 for r in answers), [r.text for r in answers if r.status_code != 200]
    assert upstream.counts == {TOP: 1}  # single flight across 2 hosts x 2 workers
    print(f"\n[measure] 8 concurrent misses on 2 hosts x 2 workers: {upstream.total()} upstream request")


def test_a_429_on_one_host_pauses_every_host(start_server: StartServer, redis: RedisServer,
                                             upstream: ReplayUpstream, tmp_path: Path) -> None:
    a, b = two_hosts(start_server, redis, tmp_path, "--workers", "2", "--no-jobs",
                     env={"CHESSSTATS_LICHESS_PAUSE_AFTER_429_S": "60"})
    upstream.reset()
    upstream.set_fault("/lichess/api/tournament/", "429-retry", seconds=3)
    first = a.client.get("/api/tournaments/aaaa0001")
    assert first.status_code == 503 and first.json()["code"] == "upstream_rate_limited"
    for i in range(4):
        started = time.monotonic()
        resp = httpx.get(b.url + f"/api/tournaments/bbbb{i:04d}", timeout=30)
        assert resp.status_code == 503 and resp.json()["code"] == "upstream_rate_limited", resp.text
        elapsed = time.monotonic() - started
        assert 1 <= int(resp.headers["retry-after"]) <= 3 and elapsed < 2, (resp.headers, elapsed)
    assert upstream.total() == 1, upstream.counts  # host b sent nothing during host a's pause
    upstream.clear_faults()
    time.sleep(3.1)
    resp = httpx.get(b.url + "/api/tournaments/zzzzzzzz", timeout=30)
    assert resp.status_code == 404 and upstream.total() == 3  # arena, then swiss: the pause is over


def test_a_scheduled_job_runs_once_per_tick_across_hosts(start_server: StartServer, redis: RedisServer,
                                                         tmp_path: Path) -> None:
    env = jobs_env(cleanup="* * * * * *")
    started = time.monotonic()
    a, b = two_hosts(start_server, redis, tmp_path, "--workers", "2", env=env)
    time.sleep(4)
    lived = time.monotonic() - started
    assert a.stop() == 0 and b.stop() == 0
    runs_a = db_runs(a.data_dir, "cleanup")
    runs_b = [] if SHARED_STORE else db_runs(b.data_dir, "cleanup")  # one database for both when shared
    both = runs_a + runs_b
    assert_once_per_tick(both)  # no tick ran on both hosts
    assert_no_overlap(both)
    # one run per tick in all, not one per host: 2 hosts x 2 workers would give ~4x
    assert 2 <= len(both) <= lived + 1, (len(runs_a), len(runs_b), lived)
    print(f"\n[measure] 2 hosts x 2 workers, {lived:.1f} s: cleanup (every 1 s) ran {len(runs_a)} + "
          f"{len(runs_b)} times")


def test_kill9_of_the_scheduler_host_another_host_takes_over(start_server: StartServer, redis: RedisServer,
                                                            tmp_path: Path) -> None:
    a, b = two_hosts(start_server, redis, tmp_path, "--workers", "1", env=jobs_env(cleanup="* * * * * *"))
    holder_pid = wait_for(lambda: scheduler_holder(redis))
    holder, other = (a, b) if holder_pid == a.proc.pid else (b, a)
    assert holder_pid == holder.proc.pid
    wait_for(lambda: len(db_runs(holder.data_dir, "cleanup")) >= 1)
    if not SHARED_STORE:
        assert db_runs(other.data_dir, "cleanup") == []  # the other host only waits
    holder.stop(signal.SIGKILL)
    t0 = time.monotonic()
    wait_for(lambda: scheduler_holder(redis) == other.proc.pid, timeout_s=LEASE_S + 5)
    takeover_s = time.monotonic() - t0
    wait_for(lambda: any(r["state"] == "completed" for r in db_runs(other.data_dir, "cleanup")))
    assert other.client.get("/health").json()["checks"]["scheduler"]["lockHolder"] is True
    print(f"\n[measure] kill -9 of the scheduler's host: the other host took the Redis lock {takeover_s:.2f} s "
          f"later (lease {LEASE_S} s)")
    assert takeover_s <= LEASE_S + 1.5


def test_kill9_during_a_run_the_new_holder_marks_it_interrupted(start_server: StartServer, redis: RedisServer,
                                                                upstream: ReplayUpstream, tmp_path: Path) -> None:
    """The run must be visible to the new holder: with SQLite both processes use one data dir's database
    (and Redis for every lock); with a shared store (TEST_STORE=postgresql) they are two hosts with
    their own data dirs."""
    env = redis_env(redis, **jobs_env(rankings_updater="0 0 1 1 *"))
    data_dir = tmp_path / "data"
    upstream.set_fault(r"/player/top/", "slow", seconds=30)
    a = start_server("--workers", "1", data_dir=data_dir, env=env)
    b = start_server("--workers", "1", data_dir=tmp_path / "host-b" if SHARED_STORE else data_dir, env=env)
    holder_pid = wait_for(lambda: scheduler_holder(redis))
    holder, other = (a, b) if holder_pid == a.proc.pid else (b, a)
    resp = other.admin("POST", "/api/admin/jobs/rankings-updater/run")
    assert resp.status_code == 202, resp.text
    run_id = resp.json()["data"]["id"]
    wait_for(lambda: db_runs(data_dir, "rankings-updater")[0]["state"] == "active")
    assert not (data_dir / "scheduler.lock").exists()  # the lock is in Redis, not in the data dir
    holder.stop(signal.SIGKILL)
    upstream.clear_faults()
    t0 = time.monotonic()
    row = wait_for(lambda: next((r for r in db_runs(data_dir, "rankings-updater")
                                 if r["id"] == run_id and r["state"] == "failed"), None), timeout_s=LEASE_S + 10)
    recovered_s = time.monotonic() - t0
    assert row["error"].startswith("interrupted")  # type: ignore[index]
    assert scheduler_holder(redis) == other.proc.pid
    retry = wait_for(lambda: [r for r in db_runs(data_dir, "rankings-updater")
                              if r["retry_of"] == run_id and r["state"] == "completed"])
    assert retry[0]["attempt"] == 2  # type: ignore[index]
    print(f"\n[measure] kill -9 during a run: marked interrupted by the other process {recovered_s:.2f} s later "
          f"(lease {LEASE_S} s)")


@pytest.mark.skipif(not SHARED_STORE, reason="needs the shared store too (TEST_STORE=postgresql): "
                    "with SQLite each host has its own database")
def test_a_finished_tournament_is_imported_once_across_hosts(start_server: StartServer, redis: RedisServer,
                                                             upstream: ReplayUpstream, tmp_path: Path) -> None:
    a, b = two_hosts(start_server, redis, tmp_path, "--workers", "2", "--no-jobs")
    upstream.reset()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda s: httpx.get(s.url + "/api/tournaments/sH24g2zH", timeout=30), [a, b] * 4))
    imported(a, "sH24g2zH")
    imported(b, "sH24g2zH")
    exports = {path: n for path, n in upstream.counts.items() if path.endswith(("/results", "/games"))}
    assert exports and all(n == 1 for n in exports.values()), upstream.counts


def test_inbound_rate_limits_hold_across_hosts(start_server: StartServer, redis: RedisServer,
                                               tmp_path: Path) -> None:
    a, b = two_hosts(start_server, redis, tmp_path, "--workers", "2", "--no-jobs",
                     env={"CHESSSTATS_RATELIMIT_ENABLED": "true", "CHESSSTATS_RATELIMIT_MAX_REQUESTS": "10",
                          "CHESSSTATS_RATELIMIT_WINDOW_S": "3600"})
    statuses = [httpx.get(s.url + "/api/no-such-route", timeout=30).status_code for s in [a, b] * 8]
    assert statuses == [404] * 10 + [429] * 6, statuses  # 10 in all, not 10 per host (or per worker)
    refused = httpx.get(a.url + "/api/no-such-route", timeout=30)
    assert refused.headers["ratelimit-remaining"] == "0" and int(refused.headers["retry-after"]) <= 3600


def test_redis_down_the_service_still_answers_and_recovers(start_server: StartServer, redis: RedisServer,
                                                           upstream: ReplayUpstream, tmp_path: Path) -> None:
    server = start_server("--workers", "2", data_dir=tmp_path / "host", env=redis_env(
        redis, CHESSSTATS_RATELIMIT_ENABLED="true", **jobs_env(cleanup="* * * * * *")))
    path = "/api/players/lichess/top/bullet?nb=5"
    assert server.client.get(path).status_code == 200
    redis.kill()
    try:
        started = time.monotonic()
        answers = [httpx.get(server.url + path, timeout=30) for _ in range(6)]
        elapsed = time.monotonic() - started
        assert [r.status_code for r in answers] == [200] * 6, [r.text for r in answers]
        assert all(r.headers["x-cache"] == "MISS" for r in answers)  # no cache: the upstream answers
        assert "ratelimit-remaining" in answers[-1].headers  # counted in each process meanwhile
        assert elapsed < 6, elapsed  # at most one socket timeout per process before the back-off
        health = wait_for(lambda: (h := server.client.get("/health")).status_code == 503 and h.json())
        assert health["checks"]["cache"]["status"] == "error", health["checks"]["cache"]  # type: ignore[index]
    finally:
        redis.start()
    wait_for(lambda: server.client.get("/health").status_code == 200, timeout_s=20)
    server.client.get(path)
    assert wait_for(lambda: server.client.get(path).headers["x-cache"] == "HIT")
    assert "Traceback" not in server.log(), server.log()[-3000:]
