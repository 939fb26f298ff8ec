"""The CLI and the service agree: one configuration (flags > environment > config file > defaults) for
every command; no command but ``serve`` silently starts a new data dir; a bad environment value names
the variable; ``Accept-Encoding: gzip;q=0`` gets no gzip; answers that depend on ``Origin`` say so."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from chessstats.api.envelope import gzip_accepted, wants_gzip
from tests.conftest import ROOT, Server, imported
from tests.pg_server import engine
from tests.replay import ReplayUpstream

TEAM_BATTLE = "sH24g2zH"


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("CHESSSTATS_", "LICHESS_"))}
    full.update({"PYTHONPATH": str(ROOT), **(env or {})})
    return subprocess.run([sys.executable, "-m", "chessstats", *args], cwd=cwd, env=full, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("args", [("jobs", "list"), ("jobs", "run", "cleanup"), ("cache", "stats"),
                                  ("cache", "clear"), ("migrate",), ("backup", "out.db"), ("restore", "in.db")])
def test_a_command_never_silently_starts_a_new_data_dir(tmp_path: Path, args: tuple[str, ...]) -> None:
    done = cli(*args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "--data-dir" in done.stderr and "--init" in done.stderr and str(tmp_path / "data") in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "data").exists()


def test_commands_read_the_service_configuration(tmp_path: Path) -> None:
    data = tmp_path / "service-data"
    config = tmp_path / "chessstats.toml"
    config.write_text(f'[storage]\ndata_dir = "{data}"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert cli("migrate", "--init", "--config", str(config), cwd=elsewhere).returncode == 0
    assert (data / "chessstats.db").exists() or engine() == "postgresql" and data.is_dir()
    # the same data dir through the config file ($CHESSSTATS_CONFIG), the environment and a flag
    for args, env in ((("jobs", "list"), {"CHESSSTATS_CONFIG": str(config)}),
                      (("cache", "stats"), {"CHESSSTATS_DATA_DIR": str(data)}),
                      (("jobs", "list", "--data-dir", str(data)), {"CHESSSTATS_DATA_DIR": str(tmp_path / "nope")})):
        done = cli(*args, cwd=elsewhere, env=env)
        assert done.returncode == 0, (args, done.stderr)
    assert not (elsewhere / "data").exists()
    # the environment beats the file, a flag beats the environment
    done = cli("backup", str(tmp_path / "b.db"), cwd=elsewhere,
               env={"CHESSSTATS_CONFIG": str(config), "CHESSSTATS_DATA_DIR": str(tmp_path / "nope")})
    assert done.returncode == 2 and str(tmp_path / "nope") in done.stderr


def test_serve_says_it_starts_a_new_data_dir(start_server, tmp_path: Path) -> None:
    server: Server = start_server(data_dir=tmp_path / "fresh")
    assert "started a new, empty data dir" in server.log()


@pytest.mark.parametrize(("env", "line"), [
    ({"PORT": "abc"}, "PORT=abc: not an integer (sets server.port)"),
    ({"CACHE_ENABLED": "maybe"}, "CACHE_ENABLED=maybe: not a boolean (true or false) (sets cache.enabled)"),
    ({"CHESSSTATS_SERVER_WORKERS": "0"}, "CHESSSTATS_SERVER_WORKERS=0: Expected `int` >= 1 (sets server.workers)"),
])
def test_a_bad_environment_value_names_the_variable(tmp_path: Path, env: dict[str, str], line: str) -> None:
    for args in (("serve",), ("config", "check"), ("jobs", "list")):
        done = cli(*args, cwd=tmp_path, env=env)
        assert done.returncode == 2
        assert done.stderr.strip() == f"chessstats: configuration error: {line}"


def test_gzip_q0_and_vary_origin(server: Server, upstream: ReplayUpstream) -> None:
    url = f"/api/tournaments/{TEAM_BATTLE}/results?limit=100"
    server.client.get(f"/api/tournaments/{TEAM_BATTLE}")
    imported(server, TEAM_BATTLE)
    for accept, gzipped in (("gzip", True), ("gzip;q=0", False), ("gzip; q=0.0, deflate", False),
                            ("br;q=1, gzip;q=0.5", True), ("*;q=0", False), ("identity", False),
                            ("*, gzip;q=0", False)):
        for path in (url, f"/api/tournaments/{TEAM_BATTLE}/games?limit=50&format=pgn"):  # JSON and PGN
            resp = server.client.get(path, headers={"Accept-Encoding": accept})
            assert resp.status_code == 200
            assert (resp.headers.get("content-encoding") == "gzip") is gzipped, (accept, path)
    for origin in (None, "https://front.example"):
        headers = {"Origin": origin} if origin else {}
        for path in (url, "/api/tournaments/nosuchid", f"/api/tournaments/{TEAM_BATTLE}/games?limit=5&format=pgn",
                     "/api/openapi.json"):
            resp = server.client.get(path, headers=headers)
            assert "origin" in resp.headers.get("vary", "").lower(), (path, origin, resp.headers)
            if origin:
                assert resp.headers["access-control-allow-origin"] == "*"
    preflight = server.client.options(url, headers={"Origin": "https://front.example",
                                                    "Access-Control-Request-Method": "GET"})
    assert "Origin" in preflight.headers["vary"]


def test_accept_encoding_parsing() -> None:
    assert wants_gzip("gzip, deflate, br") and wants_gzip("br;q=1.0, gzip;q=0.8")
    assert not wants_gzip("gzip;q=0") and not wants_gzip("gzip;q=0.000") and not wants_gzip("deflate")
    assert gzip_accepted("*") and not gzip_accepted("*;q=0") and not gzip_accepted("gzip;q=0, *")
    assert gzip_accepted("x-gzip") and not gzip_accepted("gzip;q=abc")
