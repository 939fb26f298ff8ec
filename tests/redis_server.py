"""A throwaway ``redis-server`` (the system package) for the tests: unix socket in a temporary dir,
no persistence, stopped at exit.

``TEST_CACHE=redis`` runs the cache tests and every server started through
``tests/conftest.py`` on it (``REDIS_URL`` set); without it only the Redis-specific tests use it,
and they are skipped when ``redis-server`` is not installed.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import redis

#: Whether the whole suite runs with the cache (and locks, gates, rate limits) on Redis.
#: (Not a ``CHESSSTATS_*`` name: CLI runs under test inherit the environment, and read those as config keys.)
ON_REDIS = os.environ.get("TEST_CACHE", "").lower() == "redis"


class RedisServer:
    """One ``redis-server`` on a unix socket: ``url`` (``unix://...``), ``client()``, ``flush()``, ``stop()``,
    ``kill()``/``restart()`` (for the fault tests)."""

    def __init__(self, parent: Path | None = None) -> None:
        """Start it in a new temporary dir (under ``parent`` if given, e.g. the bench's run dir)."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server is not installed (apt-get install redis-server)")
        self.binary = binary
        self.dir = Path(tempfile.mkdtemp(prefix="chessstats-redis-", dir=parent))
        self.socket = self.dir / "redis.sock"
        self.url = f"unix://{self.socket}?db=0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700",
             "--save", "", "--appendonly", "no", "--dir", str(self.dir), "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with self.client() as c:
                    c.ping()
                return
            except redis.RedisError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {self.proc.returncode}") from None
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def client(self) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self.socket))

    def flush(self) -> None:
        with self.client() as c:
            c.flushall()

    def kill(self) -> None:
        """Stop the server now (a fault: clients see connection errors)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.socket.unlink(missing_ok=True)

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


_server: RedisServer | None = None


def redis_server() -> RedisServer:
    """The session's server (started on first use, stopped at exit).

    Raises:
        FileNotFoundError: ``redis-server`` is not installed.
    """
    global _server
    if _server is None:
        _server = RedisServer()
        atexit.register(_server.stop)
    elif _server.proc is None or _server.proc.poll() is not None:
        _server.start()  # a fault test killed it
    return _server
