"""The scheduler in real servers (subprocesses on sockets, real SQLite file, replay upstream).

Schedules use croniter's trailing seconds field (``* * * * * *``: every second) through
``CHESSSTATS_JOBS_<NAME>_SCHEDULE`` so that nothing waits minutes.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from chessstats.scheduler.registry import REGISTRY
from tests.conftest import ROOT, Server
from tests.pg_store import connect_store
from tests.replay import ReplayUpstream

StartServer = Callable[..., Server]


def jobs_env(**schedules: str) -> dict[str, str]:
    """Every job disabled except those given (name with underscores → cron schedule); fast polls."""
    env = {"CHESSSTATS_SCHEDULER_POLL_S": "0.2", "CHESSSTATS_SCHEDULER_RETRY_BASE_S": "0.3",
           "CHESSSTATS_SCHEDULER_STOP_TIMEOUT_S": "1"}
    for name in REGISTRY:
        key = name.upper().replace("-", "_")
        if name.replace("-", "_") in schedules:
            env[f"CHESSSTATS_JOBS_{key}_SCHEDULE"] = schedules[name.replace("-", "_")]
        else:
            env[f"CHESSSTATS_JOBS_{key}_ENABLED"] = "false"
    return env


def db_runs(data_dir: Path, job: str | None = None) -> list[dict]:
    with connect_store(data_dir, timeout=10) as conn:
        conn.row_factory = sqlite3.Row
        sql = "SELECT * FROM job_runs" + (" WHERE job = ?" if job else "") + " ORDER BY id"
        return [dict(r) for r in conn.execute(sql, (job,) if job else ())]


def wait_for(predicate: Callable[[], object], timeout_s: float = 15, every_s: float = 0.05) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError("condition not met in time")


def assert_no_overlap(rows: list[dict]) -> None:
    done = sorted((r for r in rows if r["started_at"]), key=lambda r: r["started_at"])
    for a, b in zip(done, done[1:], strict=False):
        assert a["finished_at"] is not None and b["started_at"] >= a["finished_at"], (a, b)


def assert_once_per_tick(rows: list[dict]) -> None:
    ticks = [r["scheduled_for"] for r in rows if r["trigger"] in ("schedule", "catch-up")]
    assert len(ticks) == len(set(ticks)), Counter(ticks).most_common(3)


def test_exactly_once_with_four_workers(start_server: StartServer, upstream: ReplayUpstream,
                                        record_property: Callable[[str, object], None]) -> None:
    env = jobs_env(cleanup="* * * * * *", rankings_updater="* * * * * */2")
    started = time.monotonic()
    server = start_server("--workers", "4", env=env)
    ready = time.monotonic()
    time.sleep(4.5)
    health = server.client.get("/health").json()
    stopping = time.monotonic()
    assert server.stop() == 0
    lived, served = time.monotonic() - started, stopping - ready
    assert health["checks"]["scheduler"]["timezone"] == "UTC" and "lockHolder" in health["checks"]["scheduler"]
    assert set(health["jobs"]) == {"waiting", "active", "completed", "failed"}
    cleanup = db_runs(server.data_dir, "cleanup")
    rankings = db_runs(server.data_dir, "rankings-updater")
    for rows in (cleanup, rankings):
        assert_once_per_tick(rows)
        assert_no_overlap(rows)
    # one run per tick, not one per worker: 4 workers would give ~4x
    assert 3 <= len(cleanup) <= lived + 1, (len(cleanup), served, lived)
    assert 1 <= len(rankings) <= lived / 2 + 1, (len(rankings), served, lived)
    assert all(r["state"] == "completed" for r in cleanup + rankings if r["finished_at"])
    completed = sum(r["state"] == "completed" for r in rankings)
    assert upstream.counts.get("/lichess/api/player/top/100/bullet", 0) == completed  # one fetch per run
    record_property("multiworker_runs", {"cleanup": len(cleanup), "rankings-updater": len(rankings),
                                         "seconds_served": round(served, 2), "seconds_alive": round(lived, 2)})
    print(f"\n[measure] 4 workers, {served:.1f} s serving ({lived:.1f} s alive): cleanup (every 1 s) ran "
          f"{len(cleanup)} times, rankings-updater (every 2 s) {len(rankings)} times")


@pytest.mark.files_only("reads scheduler.lock; tests/test_redis_hosts.py has the Redis takeover")
def test_two_processes_one_data_dir_and_takeover_after_kill9(start_server: StartServer, tmp_path: Path) -> None:
    env = jobs_env(cleanup="* * * * * *")
    data_dir = tmp_path / "shared"
    a = start_server("--workers", "1", data_dir=data_dir, env=env)
    b = start_server("--workers", "1", data_dir=data_dir, env=env)
    wait_for(lambda: len(db_runs(data_dir, "cleanup")) >= 2)
    holder_pid = int((data_dir / "scheduler.lock").read_text().strip())
    holder, other = (a, b) if holder_pid == a.proc.pid else (b, a)
    assert holder_pid == holder.proc.pid
    time.sleep(1.5)
    killed_at = time.time()
    holder.stop(signal.SIGKILL)
    t0 = time.monotonic()
    wait_for(lambda: int((data_dir / "scheduler.lock").read_text().strip() or 0) == other.proc.pid)
    takeover_s = time.monotonic() - t0
    wait_for(lambda: any(r["started_at"] and r["started_at"] > _iso(killed_at) for r in db_runs(data_dir, "cleanup")))
    first_run_s = time.monotonic() - t0
    time.sleep(1.5)
    assert other.stop() == 0
    rows = db_runs(data_dir, "cleanup")
    assert_once_per_tick(rows)
    assert_no_overlap([r for r in rows if r["state"] == "completed"])
    print(f"\n[measure] two processes on one data dir: {len(rows)} cleanup runs, no tick twice; after kill -9 "
          f"of the holder the other took the lock in {takeover_s:.2f} s and ran the job {first_run_s:.2f} s after")
    assert takeover_s < 3


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1000):03d}Z"


def test_kill9_during_a_run_is_recovered_at_restart(start_server: StartServer, upstream: ReplayUpstream,
                                                    tmp_path: Path) -> None:
    env = jobs_env(rankings_updater="0 0 1 1 *")
    data_dir = tmp_path / "data"
    upstream.set_fault(r"/player/top/", "slow", seconds=20)
    server = start_server("--workers", "1", data_dir=data_dir, env=env)
    resp = server.admin("POST", "/api/admin/jobs/rankings-updater/run")
    assert resp.status_code == 202 and resp.json()["data"]["state"] == "waiting"
    run_id = resp.json()["data"]["id"]
    wait_for(lambda: db_runs(data_dir, "rankings-updater")[0]["state"] == "active")
    server.stop(signal.SIGKILL)
    upstream.clear_faults()
    t0 = time.monotonic()
    again = start_server("--workers", "1", data_dir=data_dir, env=env)
    ready_s = time.monotonic() - t0

    def recovered() -> dict | None:
        rows = db_runs(data_dir, "rankings-updater")
        return rows[0] if rows[0]["state"] == "failed" else None

    row = wait_for(recovered)
    recovered_s = time.monotonic() - t0
    assert row["id"] == run_id and row["error"].startswith("interrupted")  # type: ignore[index]
    retry = wait_for(lambda: [r for r in db_runs(data_dir, "rankings-updater")
                              if r["retry_of"] == run_id and r["state"] == "completed"])
    assert retry[0]["trigger"] == "retry" and retry[0]["attempt"] == 2  # type: ignore[index]
    body = again.admin("GET", "/api/admin/jobs").json()["data"]
    failed = [r for r in body["failed"] if r["id"] == run_id]
    assert failed and failed[0]["error"].startswith("interrupted")
    print(f"\n[measure] kill -9 during a run: server ready {ready_s:.2f} s after restart, "
          f"run marked failed (interrupted) {recovered_s:.2f} s after restart")


def test_sigterm_waits_then_records_unfinished_run_and_exits_0(start_server: StartServer,
                                                               upstream: ReplayUpstream) -> None:
    env = jobs_env(rankings_updater="0 0 1 1 *")
    upstream.set_fault(r"/player/top/", "slow", seconds=20)
    server = start_server("--workers", "1", env=env)
    assert server.admin("POST", "/api/admin/jobs/rankings-updater/run").status_code == 202
    wait_for(lambda: db_runs(server.data_dir, "rankings-updater")[0]["state"] == "active")
    t0 = time.monotonic()
    assert server.stop(signal.SIGTERM) == 0
    assert time.monotonic() - t0 < 8
    rows = db_runs(server.data_dir, "rankings-updater")
    assert (rows[0]["state"], rows[0]["error"]) == ("failed", "interrupted: shutdown before it finished")
    assert rows[1]["trigger"] == "retry" and rows[1]["state"] == "waiting"  # done at the next start


def test_admin_job_routes(start_server: StartServer, upstream: ReplayUpstream, tmp_path: Path) -> None:
    env = {**jobs_env(), "CHESSSTATS_SCHEDULER_MAX_ATTEMPTS": "1"}
    server = start_server("--workers", "1", env=env)
    assert server.client.get("/api/admin/jobs").status_code == 401
    assert server.client.get("/api/admin/jobs", headers={"Authorization": "Bearer wrong"}).status_code == 401
    resp = server.admin("POST", "/api/admin/jobs/cleanup/run")
    assert resp.status_code == 202
    run = resp.json()["data"]
    assert set(run) == {"id", "job", "state", "trigger", "attempt", "queuedAt", "startedAt", "finishedAt",
                        "durationMs", "summary", "error"}
    assert (run["job"], run["trigger"], run["attempt"]) == ("cleanup", "manual", 1)
    wait_for(lambda: server.admin("GET", "/api/admin/jobs").json()["data"]["counts"]["completed"] == 1)
    data = server.admin("GET", "/api/admin/jobs").json()["data"]
    assert data["timezone"] == "UTC" and data["completed"][0]["summary"].startswith("deleted 0 snapshots")
    jobs = {j["name"]: j for j in data["jobs"]}
    assert set(jobs) == set(REGISTRY)
    assert "Chess.com" not in str(jobs["titled-tuesday"]["disabledReason"])  # disabled by this config only
    assert jobs["cleanup"]["lastRun"]["state"] == "completed"
    health = server.client.get("/health").json()
    assert health["jobs"]["completed"] == 1 and health["checks"]["scheduler"]["lockHolder"] is True

    assert server.admin("POST", "/api/admin/jobs/nope/run").json()["code"] == "not_found"
    assert server.admin("POST", "/api/admin/jobs/abc/retry").status_code == 400
    assert server.admin("POST", "/api/admin/jobs/99999/retry").status_code == 404
    assert server.admin("POST", f"/api/admin/jobs/{run['id']}/retry").status_code == 400  # completed

    upstream.set_fault(r"/fide/", "html500", status=502, times=2)  # the community API, then the official site
    fide = server.admin("POST", "/api/admin/jobs/fide-ratings/run").json()["data"]
    wait_for(lambda: db_runs(server.data_dir, "fide-ratings")[0]["state"] == "failed")
    error = db_runs(server.data_dir, "fide-ratings")[0]["error"]
    assert error == "UpstreamError: fide GET /fide/top_players/: HTTP 502"
    retry = server.admin("POST", f"/api/admin/jobs/{fide['id']}/retry")
    data = retry.json()["data"]
    assert retry.status_code == 202 and (data["trigger"], data["attempt"]) == ("retry", 2)
    wait_for(lambda: db_runs(server.data_dir, "fide-ratings")[-1]["state"] == "completed")
    assert db_runs(server.data_dir, "fide-ratings")[-1]["summary"] == (
        "stored 100 FIDE players (100 new, 0 updated), skipped 0 rows without a FIDE ID")


def test_admin_job_routes_closed_without_token_and_off_without_jobs(start_server: StartServer,
                                                                    tmp_path: Path) -> None:
    closed = start_server(env={"CHESSSTATS_ADMIN_TOKEN": ""}, data_dir=tmp_path / "a")
    assert closed.client.get("/api/admin/jobs", headers={"Authorization": "Bearer x"}).status_code == 401
    assert closed.client.post("/api/admin/jobs/cleanup/run").status_code == 401
    off = start_server("--no-jobs", data_dir=tmp_path / "b", env={"ENABLE_BACKGROUND_JOBS": "true"})
    assert off.client.get("/health").json()["checks"]["scheduler"]["status"] == "disabled"
    resp = off.admin("POST", "/api/admin/jobs/cleanup/run")
    assert resp.status_code == 400 and "jobs run" in resp.json()["error"]
    env_off = start_server("--workers", "1", data_dir=tmp_path / "c", env={"ENABLE_BACKGROUND_JOBS": "false"})
    assert env_off.client.get("/health").json()["checks"]["scheduler"]["status"] == "disabled"


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    import os

    full = {k: v for k, v in os.environ.items() if not k.startswith(("CHESSSTATS_", "LICHESS_"))}
    full.update({"PYTHONPATH": str(ROOT), **env})
    return subprocess.run([sys.executable, "-m", "chessstats", *args], cwd=ROOT, env=full, capture_output=True,
                          text=True, timeout=60)


def test_cli_jobs_list_and_run(tmp_path: Path, upstream: ReplayUpstream) -> None:
    env = {"CHESSSTATS_DATA_DIR": str(tmp_path / "data"), "FIDE_API_URL": upstream.url + "/fide",
           "LICHESS_API_URL": upstream.lichess_url}
    done = cli("jobs", "run", "fide-ratings", "--init", env=env)
    assert done.returncode == 0, done.stderr
    assert "fide-ratings: run 1 completed in " in done.stdout and "stored 100 FIDE players" in done.stdout
    listed = cli("jobs", "list", env=env)
    assert listed.returncode == 0
    line = next(ln for ln in listed.stdout.splitlines() if ln.startswith("fide-ratings"))
    assert "0 3 * * *" in line and "completed" in line and "stored 100 FIDE players" in line
    assert "time zone: UTC" in listed.stdout
    upstream.set_fault(r"/fide/", "500")
    failed = cli("jobs", "run", "fide-ratings", env=env)
    assert failed.returncode == 1 and "failed" in failed.stdout
    unknown = cli("jobs", "run", "nope", env=env)
    assert unknown.returncode == 2 and "no job named 'nope'" in unknown.stderr
    bad = cli("jobs", "list", env={**env, "CHESSSTATS_JOBS_NOPE_ENABLED": "false"})
    assert bad.returncode == 2 and "jobs.nope: unknown job" in bad.stderr


@pytest.mark.parametrize(("key", "value", "message"), [
    ("CHESSSTATS_JOBS_NOPE_ENABLED", "false", "jobs.nope: unknown job"),
    ("CHESSSTATS_JOBS_CLEANUP_SCHEDULE", "61 * * * *",
     "CHESSSTATS_JOBS_CLEANUP_SCHEDULE=61 * * * *: invalid cron expression '61 * * * *' (sets jobs.cleanup.schedule)"),
    ("TOURNAMENT_MONITOR_INTERVAL", "0", "TOURNAMENT_MONITOR_INTERVAL: expected a whole number of minutes"),
    ("CHESSSTATS_SCHEDULER_TIMEZONE", "Mars/Olympus", "unknown time zone"),
])
def test_serve_refuses_bad_job_config(tmp_path: Path, key: str, value: str, message: str) -> None:
    result = cli("serve", "--port", "0", env={"CHESSSTATS_DATA_DIR": str(tmp_path / "d"), key: value})
    assert result.returncode == 2 and message in result.stderr, result.stderr
