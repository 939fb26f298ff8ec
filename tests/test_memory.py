"""What a serving process keeps in memory at idle (issue 13: idle RSS of the executable <= 55 MiB).

The RSS itself is measured by ``scripts/bench`` (idle RSS per process rows); these tests pin the
choices behind it, each of which a later edit could silently undo:

* python-chess (about 3 MiB) is not imported by a server that has not exported any games yet;
* redis-py (61 modules, about 6.4 MiB) is not imported by a server without ``[cache] url``;
* the upstream clients share one TLS context (each context holds its own parsed copy of the CA
  bundle, about 0.8 MiB);
* a serving process caps glibc's malloc arenas (unless the operator set ``MALLOC_ARENA_MAX``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

# Build the app and open every resource as a worker does before it serves (database, cache,
# upstream clients, services), then report what is loaded and which TLS contexts the clients hold.
_SERVE_AND_REPORT = """
import asyncio, json, sys
from chessstats.config import load_config
from chessstats.app import create_app
from chessstats.resources import Resources
import chessstats.cli, chessstats.commands
from chessstats.ratelimit import open_limiter

config = load_config(None, env={"CHESSSTATS_DATA_DIR": sys.argv[1]})
app = create_app(config)

def context(client):
    return id(client._client._transport._pool._ssl_context)

async def main():
    res = await Resources.open(config)
    try:
        contexts = [context(c) for c in (res.lichess, res.fide, res.chesscom)]
        limiter = open_limiter(config, None)  # as a worker opens it before it serves
        limiter.close()
    finally:
        await res.aclose()
    return contexts

contexts = asyncio.run(main())
print(json.dumps({"modules": sorted(m for m in sys.modules if m == "chess" or m.startswith("chess.")),
                  "redis": sorted(m for m in sys.modules if m == "redis" or m.startswith("redis.")),
                  "contexts": contexts}))
"""


def _serve_and_report(tmp_path: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", _SERVE_AND_REPORT, str(tmp_path / "data")], cwd=str(ROOT),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_an_idle_server_has_not_imported_python_chess(tmp_path: Path) -> None:
    report = _serve_and_report(tmp_path)
    assert report["modules"] == [], report["modules"]


def test_a_server_without_redis_has_not_imported_redis_py(tmp_path: Path) -> None:
    """No ``[cache] url``: the app, every resource and the rate limiter are opened without redis-py
    (the Redis engines import it when a URL names a server: tests/test_redis.py)."""
    report = _serve_and_report(tmp_path)
    assert report["redis"] == [], report["redis"][:5]


def test_the_upstream_clients_share_one_tls_context(tmp_path: Path) -> None:
    contexts = _serve_and_report(tmp_path)["contexts"]
    assert len(contexts) == 3 and len(set(contexts)) == 1, contexts


def test_python_chess_is_imported_by_the_games_paths() -> None:
    """The deferred imports still resolve: the functions that need python-chess find it."""
    from chessstats.models import Game, GamePlayer
    from chessstats.services.tournaments import game_to_pgn

    game = Game(id="g1", platform="lichess", url="https://lichess.org/g1", tournament_id="t1", perf_type="blitz",
                rated=True, variant="standard", status="mate", result="1-0", winner="white",
                white=GamePlayer(username="a", rating=2000), black=GamePlayer(username="b", rating=1990),
                moves="e4 e5 Qh5 Nc6 Bc4 Nf6 Qxf7#")
    pgn = game_to_pgn(game)
    assert "1. e4 e5 2. Qh5 Nc6 3. Bc4 Nf6 4. Qxf7# 1-0" in pgn and '[White "a"]' in pgn


def _arena_cap(env: dict[str, str]) -> str:
    code = "from chessstats.commands import _limit_malloc_arenas as f; print(f())"
    out = subprocess.run([sys.executable, "-c", code], cwd=str(ROOT), env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_malloc_arenas_are_capped_unless_the_operator_chose() -> None:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    if sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION"):
        assert _arena_cap(env) == "True"
    assert _arena_cap({**env, "MALLOC_ARENA_MAX": "4"}) == "False"
