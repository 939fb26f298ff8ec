"""Deep ``/health`` on the real server: corrupted pages (background quick_check), a read-only data dir
(the write probe), an upstream paused after a 429 (``degraded``), cache evictions in the admin stats."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from chessstats.api.health_monitor import HealthMonitor, fs_write_probe, quick_check
from tests.conftest import Server, imported
from tests.pg_server import engine
from tests.replay import ReplayUpstream

TEAM_BATTLE = "sH24g2zH"


def wait_for(server: Server, predicate, timeout_s: float = 20) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        resp = server.client.get("/health")
        assert resp.status_code in (200, 503)
        body = resp.json()
        body["_status"] = resp.status_code
        if predicate(body) or time.monotonic() > deadline:
            return body
        time.sleep(0.2)


def corrupt_middle_page(db: Path) -> None:
    conn = sqlite3.connect(db)
    page_size, pages = conn.execute("PRAGMA page_size").fetchone()[0], conn.execute("PRAGMA page_count").fetchone()[0]
    conn.close()
    raw = bytearray(db.read_bytes())
    start = (pages // 2 - 1) * page_size
    raw[start: start + 64] = b"\xff" * 64  # the b-tree page header and cell pointers
    db.write_bytes(bytes(raw))


def test_health_is_ok_with_version_uptime_and_every_part(server: Server) -> None:
    body = wait_for(server, lambda b: b["checks"]["database"]["quickCheck"]["status"] != "pending")
    assert body["_status"] == 200 and body["status"] == "ok"
    assert body["uptimeS"] >= 0 and body["version"]
    assert body["checks"]["database"]["quickCheck"]["status"] == ("ok" if engine() == "sqlite" else "skipped")
    assert set(body["checks"]) >= {"database", "storage", "cache", "lichess", "chesscom", "fide", "scheduler"}
    assert body["checks"]["chesscom"]["status"] == "unknown"  # no Chess.com request yet
    assert body["checks"]["storage"]["freeBytes"] > 0


@pytest.mark.sqlite_only
def test_corrupted_pages_show_in_health(start_server, upstream: ReplayUpstream) -> None:
    server: Server = start_server()
    server.client.get(f"/api/tournaments/{TEAM_BATTLE}")
    imported(server, TEAM_BATTLE)
    assert server.stop() == 0
    corrupt_middle_page(server.data_dir / "chessstats.db")
    again: Server = start_server(data_dir=server.data_dir)
    body = wait_for(again, lambda b: b["checks"]["database"].get("quickCheck", {}).get("status") == "corrupt")
    assert body["_status"] == 503 and body["status"] == "error"
    database = body["checks"]["database"]
    assert database["status"] == "error" and database["quickCheck"]["status"] == "corrupt"
    assert database["error"].startswith("corrupted pages: ") and database["quickCheck"]["problems"]


def test_a_read_only_data_dir_shows_in_health(server: Server) -> None:
    data = server.data_dir
    if subprocess.run(["mount", "--bind", str(data), str(data)], capture_output=True).returncode != 0:
        pytest.skip("cannot bind-mount (needs root / CAP_SYS_ADMIN)")
    try:
        # the server's open files stay writable (they belong to the mount below); new files cannot be made
        done = subprocess.run(["mount", "-o", "remount,bind,ro", str(data)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        body = wait_for(server, lambda b: b["checks"]["storage"]["status"] == "error", timeout_s=15)
        assert body["_status"] == 503 and body["status"] == "error"
        assert body["checks"]["storage"]["error"] == "read-only"
    finally:
        subprocess.run(["umount", str(data)], capture_output=True)
    body = wait_for(server, lambda b: b["checks"]["storage"]["status"] == "ok", timeout_s=15)
    assert body["_status"] == 200


def test_a_paused_upstream_makes_health_degraded(server: Server, upstream: ReplayUpstream) -> None:
    upstream.set_fault("/tournament/", "429-retry", seconds=120)
    assert server.client.get("/api/tournaments/abcdefgh").status_code == 503
    body = wait_for(server, lambda b: b["status"] == "degraded")
    assert body["_status"] == 200 and body["status"] == "degraded"
    assert body["checks"]["lichess"]["status"] == "paused" and body["checks"]["lichess"]["pausedForS"] > 60
    calls = upstream.total()
    for _ in range(5):
        server.client.get("/health")
    assert upstream.total() == calls  # health never calls a paused upstream


def test_admin_cache_stats_has_evictions(start_server, upstream: ReplayUpstream) -> None:
    server: Server = start_server(env={"CHESSSTATS_CACHE_MEMORY_ENTRIES": "1"})
    for _ in range(2):
        for limit in (5, 6, 7):
            assert server.client.get(f"/api/tournaments?limit={limit}").status_code == 200
    stats = server.admin("GET", "/api/admin/cache/stats").json()["data"]
    assert stats["evictions"] >= 2 and "expiredRemoved" in stats and stats["sizeLimitBytes"] > 0


def test_quick_check_and_probes_units(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t (v TEXT)")
    conn.execute("CREATE INDEX t_v ON t (v)")
    conn.executemany("INSERT INTO t VALUES (?)", [(f"value {i}" * 30,) for i in range(2000)])
    conn.commit()
    conn.close()
    assert quick_check(db)["status"] == "ok"
    corrupt_middle_page(db)
    assert quick_check(db)["status"] == "corrupt"
    assert quick_check(tmp_path / "missing.db")["status"] == "unavailable"
    assert fs_write_probe(tmp_path) is None and list(tmp_path.glob(".write-probe-*")) == []

    async def probes() -> list[bool]:
        monitor = HealthMonitor(db, tmp_path)
        calls = []

        async def probe() -> None:
            calls.append(1)

        failing_long = {"status": "degraded", "lastOutcomeAgoS": 75.0}
        out = [monitor.maybe_probe_upstream("lichess", {"status": "ok", "lastOutcomeAgoS": 500.0}, probe),
               monitor.maybe_probe_upstream("lichess", {"status": "degraded", "lastOutcomeAgoS": 5.0}, probe),
               monitor.maybe_probe_upstream("lichess", failing_long, probe),
               monitor.maybe_probe_upstream("lichess", failing_long, probe),  # within the minute: no
               monitor.maybe_probe_upstream("fide", {"status": "open", "lastOutcomeAgoS": 61.0}, probe)]
        await asyncio.sleep(0.01)
        await monitor.stop()
        assert len(calls) == 2
        # across processes: two monitors sharing a stamp dir probe an upstream once a minute
        (tmp_path / "locks").mkdir()
        first, second = (HealthMonitor(db, tmp_path, stamp_dir=tmp_path / "locks") for _ in range(2))
        out.append(first.maybe_probe_upstream("lichess", failing_long, probe))
        out.append(second.maybe_probe_upstream("lichess", failing_long, probe))
        await asyncio.sleep(0.01)
        await first.stop()
        await second.stop()
        assert len(calls) == 3
        return out

    assert asyncio.run(probes()) == [False, False, True, False, True, True, False]
