"""Shared fixtures: the replay upstream (in-process thread) and the real server (a subprocess on a socket).

The service under test is ``python -m chessstats serve`` on a free port with a real SQLite file
and cache dir in a temporary data dir; only the upstreams are replaced (by ``tests/replay.py``).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.redis_server import ON_REDIS, RedisServer, redis_server
from tests.replay import ReplayUpstream

ROOT = Path(__file__).resolve().parent.parent
ADMIN_TOKEN = "test-admin-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A running ``chessstats serve`` subprocess: ``url``, ``data_dir``, ``client`` (httpx), ``stop()``."""

    def __init__(self, data_dir: Path, env: dict[str, str], args: list[str], command: list[str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir.parent / f"server-{self.port}.log"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("CHESSSTATS_", "LICHESS_"))}
        full_env.update({"PYTHONPATH": str(ROOT), "CHESSSTATS_ADMIN_TOKEN": ADMIN_TOKEN, **env})
        base = command or [sys.executable, "-m", "chessstats"]
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [*base, "serve", "--port", str(self.port), "--data-dir", str(data_dir), *args],
            cwd=str(ROOT), env=full_env, stdout=self._log, stderr=subprocess.STDOUT,
        )
        self.client = httpx.Client(base_url=self.url, timeout=30)
        self.workers = int(args[args.index("--workers") + 1]) if "--workers" in args[:-1] else 1
        self.wait_ready()

    def wait_ready(self, timeout_s: float = 30) -> None:
        """Wait until ``/health`` answers and, with several workers, every worker has logged that it is
        ready (a test that spreads requests over the workers needs them all accepting)."""
        deadline = time.monotonic() + timeout_s
        healthy_at = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if healthy_at is None and httpx.get(self.url + "/health", timeout=1).status_code in (200, 503):
                    healthy_at = time.monotonic()
            except httpx.HTTPError:
                pass
            if healthy_at is not None and (self.workers == 1 or self.log().count("Worker ready") >= self.workers
                                           or time.monotonic() - healthy_at > 15):  # (a log level above INFO)
                return
            time.sleep(0.05)
        raise RuntimeError(f"server did not start:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def admin(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        return self.client.request(method, path, headers=headers, **kwargs)  # type: ignore[arg-type]

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.client.close()
        self._log.close()
        return self.proc.returncode


@pytest.fixture(scope="session")
def replay() -> Iterator[ReplayUpstream]:
    with ReplayUpstream() as upstream:
        yield upstream


@pytest.fixture
def upstream(replay: ReplayUpstream) -> Iterator[ReplayUpstream]:
    """The replay upstream with counts reset and no faults."""
    replay.reset()
    replay.clear_faults()
    yield replay
    replay.clear_faults()


@pytest.fixture
def start_server(tmp_path: Path, replay: ReplayUpstream) -> Iterator[object]:
    """Start servers on fresh (or given) data dirs, pointed at the replay upstream; all stopped after."""
    servers: list[Server] = []
    if ON_REDIS:
        redis_server().flush()

    def start(*args: str, data_dir: Path | None = None, env: dict[str, str] | None = None,
              command: list[str] | None = None) -> Server:
        server_env = {"LICHESS_API_URL": replay.lichess_url, "FIDE_API_URL": replay.url + "/fide",
                      "CHESS_COM_API_URL": replay.url + "/chesscom/pub", **(env or {})}
        server_env.setdefault("CHESSSTATS_LICHESS_RATE", "100000/1s")
        # the inbound limits are tested on their own (tests/test_ratelimit.py); other tests send
        # hundreds of requests from one address
        server_env.setdefault("CHESSSTATS_RATELIMIT_ENABLED", "false")
        server_env.setdefault("CHESSSTATS_CHESSCOM_RATE", "100000/1s")
        if ON_REDIS:  # TEST_CACHE=redis: cache, locks, gates and rate limits on the test Redis
            server_env.setdefault("REDIS_URL", redis_server().url)
            server_env.setdefault("CHESSSTATS_CACHE_LOCK_LEASE_S", "3")  # a kill -9 holder's locks free in 3 s
        server = Server(data_dir or tmp_path / "data", server_env, list(args) or ["--no-jobs"], command)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(start_server: object, upstream: ReplayUpstream) -> Server:
    """A fresh server (no jobs) on a fresh data dir, with the upstream counts reset."""
    srv = start_server()  # type: ignore[operator]
    upstream.reset()
    return srv


def imported(server: Server, tid: str, *, timeout_s: float = 60, states: tuple[str, ...] = ("complete",)) -> dict:
    """Poll ``GET /api/tournaments/{tid}`` until its background import reaches one of ``states``
    (``complete`` by default); returns the last body. Fails the test on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        resp = server.client.get(f"/api/tournaments/{tid}")
        assert resp.status_code == 200, resp.text
        body = resp.json()
        if body["data"].get("importState") in states:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"import of {tid} still {body['data'].get('importState')} after {timeout_s} s")
        time.sleep(0.1)


@pytest.fixture
def forget_added_routes(replay: ReplayUpstream) -> Iterator[None]:
    """Routes a test registers on the (session-wide) replay are removed after it."""
    before = set(replay.routes)
    yield
    for path in set(replay.routes) - before:
        replay.routes.pop(path, None)


def ok(resp: httpx.Response) -> dict:
    """The body of a successful API answer (asserts 200 and ``success: true``)."""
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["success"] is True
    return body


def err(resp: httpx.Response, status: int, code: str) -> dict:
    """The body of an API error answer (asserts ``status`` and the error envelope's ``code``)."""
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert (body["success"], body["code"]) == (False, code), body
    return body


def add_json(upstream: ReplayUpstream, path: str, body: object) -> None:
    """Register a JSON body for ``path`` on the replay."""
    upstream.add(path, json.dumps(body).encode(), "application/json")


# --- store engine (issue 12): TEST_STORE=postgresql runs the suite on PostgreSQL (tests/pg_store.py)
from tests.pg_store import configure as _store_configure  # noqa: E402
from tests.pg_store import modify_items as _store_modify_items  # noqa: E402
from tests.pg_store import stop_pg_server as _stop_pg_server  # noqa: E402
from tests.pg_store import store_engine_env  # noqa: E402,F401


def pytest_configure(config: pytest.Config) -> None:
    _store_configure(config)
    config.addinivalue_line("markers", "files_only(reason): tests the data dir's own files (diskcache dir, "
                            "lock files, gate files); skipped when TEST_CACHE=redis")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    _store_modify_items(items)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _stop_pg_server()


# --- Redis (issue 12): TEST_CACHE=redis runs the cache and route tests on Redis --------

# (the files_only marker is registered in pytest_configure above)


def pytest_runtest_setup(item: pytest.Item) -> None:
    marker = item.get_closest_marker("files_only")
    if ON_REDIS and marker is not None:
        pytest.skip("on Redis (TEST_CACHE=redis): " + (marker.args[0] if marker.args else
                    "tests the data dir's own files, which Redis replaces"))


@pytest.fixture
def redis() -> RedisServer:
    """The session's throwaway redis-server (unix socket, no persistence), emptied for this test;
    the test is skipped when redis-server is not installed."""
    try:
        server = redis_server()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    server.flush()
    return server
