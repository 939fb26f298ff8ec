"""Storage faults through the real server (``python -m chessstats serve`` on a socket): a full
disk (the data dir on a small tmpfs), a corrupt ``cache/cache.db`` at start, the cache dir deleted
while running. Statuses and codes are asserted, not the detailed service flow."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server
from tests.fsfault import fill, lock_is_free, open_fds, tmpfs
from tests.replay import ReplayUpstream

WARM, FULL = "warmArna", "fullArna"  # generated finished arenas (small enough for a 4 MiB tmpfs)


def generate(upstream: ReplayUpstream, tid: str, games: int = 120) -> None:
    resp = httpx.post(upstream.url + "/_replay/generate", json={"id": tid, "nbPlayers": 30, "nbGames": games})
    assert resp.status_code == 200, resp.text


def server_fds(server: Server) -> int:
    return open_fds(server.proc.pid)


def wait_health(server: Server, status: int, timeout_s: float = 20) -> tuple[float, dict]:
    started = time.monotonic()
    while True:
        resp = server.client.get("/health")
        if resp.status_code == status or time.monotonic() - started > timeout_s:
            return time.monotonic() - started, resp.json()
        time.sleep(0.1)


@pytest.mark.sqlite_only  # the data dir's disk holds SQLite's file (PostgreSQL: tests/test_store_postgres.py)
def test_full_disk_answers_503_then_recovers_without_restart(
    start_server: object, upstream: ReplayUpstream, tmp_path: Path
) -> None:
    generate(upstream, WARM)
    generate(upstream, FULL)
    with tmpfs(tmp_path / "mnt", "4m") as data:
        server: Server = start_server(data_dir=data)  # type: ignore[operator]
        assert server.client.get(f"/api/tournaments/{WARM}").status_code == 200  # imported and cached
        assert server.client.get(f"/api/tournaments/{WARM}/results?page=1&limit=10").status_code == 200
        assert server.client.get("/health").status_code == 200
        filler = fill(data)

        def all_locks_free() -> bool:
            """Every striped fetch/import lock is free (none leaked by a failed write)."""
            return all(lock_is_free(p) for p in (data / "locks").glob("*.lock"))

        resp = server.client.get(f"/api/tournaments/{FULL}")  # an import: must be written
        assert resp.status_code == 503, resp.text
        assert resp.json() == {"success": False, "code": "storage_unavailable", "error": resp.json()["error"]}
        assert "disk full" in resp.json()["error"] and int(resp.headers["retry-after"]) >= 1
        assert all_locks_free()  # the fetch lock was taken (pid not written) and released
        fds = server_fds(server)
        for _ in range(3):
            assert server.client.get(f"/api/tournaments/{FULL}").status_code == 503
            assert all_locks_free()
        assert server_fds(server) <= fds  # no descriptor leak per failed request

        # what needs no write answers normally: from the cache, or from the database
        cached = server.client.get(f"/api/tournaments/{WARM}")
        assert cached.status_code == 200 and cached.json()["cached"] is True
        from_db = server.client.get(f"/api/tournaments/{WARM}/results?page=2&limit=10")
        assert from_db.status_code == 200 and from_db.json()["source"] in ("database", "cache")
        health = server.client.get("/health")
        assert health.status_code == 503
        storage = health.json()["checks"]["storage"]
        assert health.json()["status"] == "error"
        assert (storage["status"], storage["error"]) == ("error", "disk full") and storage["freeBytes"] < 256 * 1024
        # the cache can still be cleared (its files are deleted and recreated)
        assert server.admin("POST", "/api/admin/cache/clear").status_code == 200
        assert server.admin("POST", "/api/admin/cache/invalidate", json={"pattern": "tournament:*"}).status_code == 200
        assert server.client.get(f"/api/tournaments/{WARM}").status_code == 200  # from the database now

        filler.unlink()  # space comes back: no restart
        started = time.monotonic()
        ok = server.client.get(f"/api/tournaments/{FULL}")
        assert ok.status_code == 200, ok.text
        recovered_s = time.monotonic() - started
        waited_s, body = wait_health(server, 200)
        assert body["status"] == "ok" and body["checks"]["storage"]["status"] == "ok", body
        assert all_locks_free()
        assert server_fds(server) <= fds + 2
        print(f"\nrecovery: first request after space returned answered 200 in {recovered_s:.2f} s; "
              f"/health ok {waited_s:.2f} s later")


@pytest.mark.files_only("the diskcache dir itself")
def test_corrupt_cache_db_at_start(start_server: object, upstream: ReplayUpstream, tmp_path: Path) -> None:
    generate(upstream, WARM, games=20)
    data = tmp_path / "data"
    (data / "cache").mkdir(parents=True)
    (data / "cache" / "cache.db").write_bytes(b"\x00garbage, not a SQLite file\xff" * 1000)
    server: Server = start_server(data_dir=data)  # type: ignore[operator]
    assert server.client.get("/health").status_code == 200
    first = server.client.get(f"/api/tournaments/{WARM}")
    assert first.status_code == 200, first.text
    again = server.client.get(f"/api/tournaments/{WARM}")
    assert again.status_code == 200 and again.json()["cached"] is True
    assert (data / "cache" / "cache.db").read_bytes()[:16] == b"SQLite format 3\x00"


@pytest.mark.files_only("the diskcache dir itself")
def test_cache_dir_deleted_while_running(start_server: object, upstream: ReplayUpstream, tmp_path: Path) -> None:
    generate(upstream, WARM, games=20)
    server: Server = start_server()  # type: ignore[operator]
    cache_dir = server.data_dir / "cache"
    assert server.client.get(f"/api/tournaments/{WARM}").status_code == 200
    assert server.client.get(f"/api/tournaments/{WARM}").json()["cached"] is True
    shutil.rmtree(cache_dir)
    assert server.client.get(f"/api/tournaments/{WARM}").status_code == 200
    assert server.client.get(f"/api/tournaments/{WARM}/results").status_code == 200
    clear = server.admin("POST", "/api/admin/cache/clear")
    assert clear.status_code == 200, clear.text
    shutil.rmtree(cache_dir)
    for body in ({"key": f"tournament:lichess:{WARM}"}, {"pattern": "results:*"}):
        resp = server.admin("POST", "/api/admin/cache/invalidate", json=body)
        assert resp.status_code == 200, resp.text
    shutil.rmtree(cache_dir)
    assert server.admin("GET", "/api/admin/cache/stats").status_code == 200
    time.sleep(0.15)
    assert server.client.get(f"/api/tournaments/{WARM}").status_code == 200  # from the database
    assert server.client.get(f"/api/tournaments/{WARM}").json()["cached"] is True  # cached again
    assert (cache_dir / "cache.db").exists()
    health = server.client.get("/health")
    assert health.status_code == 200 and health.json()["checks"]["cache"]["status"] == "ok", health.text


def test_starts_on_an_almost_full_disk(start_server: object, upstream: ReplayUpstream, tmp_path: Path) -> None:
    """With 128 KiB free the server starts, serves what is stored and reports ``disk full``. (With 0 bytes
    free it cannot: SQLite needs 32 KiB for the WAL index of the database; ``serve`` then exits with a
    message naming the data dir.)"""
    generate(upstream, WARM, games=20)
    with tmpfs(tmp_path / "mnt", "4m") as data:
        first: Server = start_server(data_dir=data)  # type: ignore[operator]
        assert first.client.get(f"/api/tournaments/{WARM}").status_code == 200
        assert first.stop() == 0
        filler = fill(data)
        os.truncate(filler, filler.stat().st_size - 128 * 1024)
        server: Server = start_server(data_dir=data)  # type: ignore[operator]
        health = server.client.get("/health")
        assert health.status_code == 503 and health.json()["checks"]["storage"]["error"] == "disk full"
        resp = server.client.get(f"/api/tournaments/{WARM}")  # stored: served from the database
        assert resp.status_code == 200 and resp.json()["source"] in ("database", "cache"), resp.text
        filler.unlink()
        _, body = wait_health(server, 200)
        assert body["status"] == "ok", body
