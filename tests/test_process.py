"""The server process's edges: how fast it stops, and that it never outlives its launcher.

Each test runs the real server (``python -m chessstats serve`` as a subprocess on a socket).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Server

StartServer = Callable[..., Server]


def children(pid: int) -> set[int]:
    """Every descendant process of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_bytes()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rpartition(b")")[2].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rpartition(b")")[2].split()[0]
    except OSError:
        return False
    return state != b"Z"


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_until(predicate: Callable[[], bool], timeout_s: float) -> float:
    """Seconds until ``predicate()`` holds; fails after ``timeout_s``."""
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout_s:
            raise AssertionError(f"not within {timeout_s} s")
        time.sleep(0.02)
    return time.monotonic() - t0


@pytest.mark.parametrize("workers", [1, 2, 3, 3, 2])
def test_sigterm_exits_0_within_3_s(start_server: StartServer, workers: int) -> None:
    """With jobs on, right after start (some workers may not have acknowledged yet) and after requests."""
    for when in ("at once", "after requests"):
        server = start_server("--workers", str(workers))
        if when == "after requests":
            for _ in range(3):
                assert server.client.get("/health").status_code == 200
            assert server.client.get("/api/tournaments/sH24g2zH").status_code == 200
        descendants = children(server.proc.pid)
        t0 = time.monotonic()
        code = server.stop(timeout_s=10)
        elapsed = time.monotonic() - t0
        print(f"\n[measure] SIGTERM with {workers} worker(s), {when}: exit {code} in {elapsed:.2f} s")
        assert code == 0 and elapsed < 3, (code, elapsed, server.log())
        assert "Traceback" not in server.log()
        wait_until(lambda left=descendants: not any(alive(pid) for pid in left), 2)  # nothing left behind


def test_sigterm_with_a_request_in_flight_exits_within_3_s(start_server: StartServer, upstream) -> None:  # noqa: ANN001
    """A request stuck on a slow upstream gets ``server.shutdown_timeout_s`` (2 s), then is cut."""
    import threading

    import httpx

    upstream.set_fault(r"/api/tournament/", "slow", seconds=30)
    server = start_server("--workers", "2", "--no-jobs")

    def call() -> None:
        try:
            httpx.get(server.url + "/api/tournaments/sH24g2zH", timeout=60)
        except httpx.HTTPError:
            pass

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    time.sleep(1)
    t0 = time.monotonic()
    code = server.stop(timeout_s=10)
    elapsed = time.monotonic() - t0
    print(f"\n[measure] SIGTERM with a request in flight (2 workers): exit {code} in {elapsed:.2f} s")
    assert code == 0 and elapsed < 3.5, (code, elapsed, server.log())
    assert "Traceback" not in server.log()


def test_kill_9_of_the_manager_takes_the_workers_down(start_server: StartServer, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    server = start_server("--workers", "2")
    assert server.client.get("/health").status_code == 200
    workers = children(server.proc.pid)
    assert len(workers) >= 3  # two workers and Sanic's shared-state process
    t0 = time.monotonic()
    server.proc.kill()
    server.proc.wait()
    freed_s = wait_until(lambda: port_free(server.port), 5)
    gone_s = wait_until(lambda: not any(alive(pid) for pid in workers), 5)
    print(f"\n[measure] kill -9 of the manager (2 workers): port free in {freed_s:.2f} s, "
          f"every child gone in {gone_s:.2f} s")
    monkeypatch.setattr("tests.conftest.free_port", lambda: server.port)
    again = start_server("--workers", "2", data_dir=server.data_dir)
    assert again.port == server.port and again.client.get("/health").status_code == 200
    print(f"[measure] a new server answers on the same port {time.monotonic() - t0:.2f} s after the kill")
    assert again.stop() == 0


def test_no_contact_warns_once_at_start(start_server: StartServer) -> None:
    server = start_server("--workers", "2", "--no-jobs")
    assert server.stop() == 0
    lines = [line for line in server.log().splitlines() if "no contact configured" in line]
    assert len(lines) == 1 and " WARNING " in lines[0], server.log()
    assert "Chess.com" in lines[0] and "CHESSSTATS_CONTACT" in lines[0] and "[upstream] contact" in lines[0]
    quiet = start_server("--no-jobs", env={"CHESSSTATS_CONTACT": "ops@example.org"})
    assert quiet.stop() == 0
    assert "no contact configured" not in quiet.log()
