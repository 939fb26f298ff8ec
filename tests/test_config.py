"""Configuration: the example file, precedence, environment names, and bad input at start-up."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import msgspec
import pytest

from chessstats.config import Config, ConfigError, load_config
from chessstats.store.migrations import MIGRATIONS
from tests.pg_server import engine

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config.example.toml"


def test_example_decodes_and_documents_every_key() -> None:
    config = load_config(EXAMPLE, env={})
    assert config.server.port == 4000 and config.jobs["tournament-monitor"].schedule == "*/2 * * * *"
    example = tomllib.loads(EXAMPLE.read_text())
    defaults = msgspec.to_builtins(Config())
    for table, values in defaults.items():
        if table == "jobs":
            continue
        assert table in example, f"[{table}] missing from config.example.toml"
        assert set(values) == set(example[table]), f"[{table}] keys differ from config.example.toml"
        for key, value in values.items():
            assert example[table][key] == value, f"{table}.{key}: example shows a value that is not the default"


def test_precedence_flags_over_env_over_file_over_defaults(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[server]\nport = 5000\nhost = "0.0.0.0"\n[cache]\ndefault_ttl_s = 60\n')
    assert load_config(path, env={}).server.port == 5000
    config = load_config(path, env={"PORT": "6000", "CHESSSTATS_CACHE_DEFAULT_TTL_S": "90"})
    assert (config.server.port, config.server.host, config.cache.default_ttl_s) == (6000, "0.0.0.0", 90)
    config = load_config(path, env={"PORT": "6000"}, flags={"server": {"port": 7000}})
    assert config.server.port == 7000
    assert load_config(None, env={}).server.port == 4000


def test_original_environment_names_keep_working() -> None:
    config = load_config(None, env={
        "LICHESS_API_URL": "http://127.0.0.1:1/api", "CHESS_COM_API_URL": "http://c", "FIDE_API_URL": "http://f",
        "CACHE_ENABLED": "false", "CACHE_DEFAULT_TTL": "42", "ENABLE_BACKGROUND_JOBS": "false",
        "TOURNAMENT_MONITOR_INTERVAL": "5", "TOURNAMENT_DISCOVERY_INTERVAL": "15", "LOG_LEVEL": "debug",
        "LICHESS_TOKEN": "lip_x", "CHESSSTATS_DATA_DIR": "/tmp/x", "CHESSSTATS_ADMIN_TOKEN": "s",
        "CHESSSTATS_CONTACT": "me@example.org", "CHESSSTATS_SERVER_CORS_ORIGINS": "https://a, https://b",
    })
    assert config.lichess.url == "http://127.0.0.1:1/api" and config.lichess.token == "lip_x"
    assert (config.chesscom.url, config.fide.url) == ("http://c", "http://f")
    assert (config.cache.enabled, config.cache.default_ttl_s, config.scheduler.enabled) == (False, 42, False)
    assert config.jobs["tournament-monitor"].schedule == "*/5 * * * *"
    assert config.jobs["tournament-discovery"].schedule == "*/15 * * * *"
    assert (config.log.level, str(config.data_dir), config.admin.token) == ("debug", "/tmp/x", "s")
    assert config.upstream.contact == "me@example.org"
    assert config.server.cors_origins == ["https://a", "https://b"]


@pytest.mark.parametrize("env, fragment", [
    ({"PORT": "http"}, "server.port"),
    ({"PORT": "70000"}, "server.port"),
    ({"CHESSSTATS_SERVER_WORKERS": "0"}, "server.workers"),
    ({"CHESSSTATS_SERVER_PROT": "1"}, "CHESSSTATS_SERVER_PROT"),
    ({"CHESSSTATS_NOPE": "1"}, "CHESSSTATS_NOPE"),
    ({"LOG_LEVEL": "loud"}, "log"),
    ({"CACHE_ENABLED": "maybe"}, "cache.enabled"),
    ({"TOURNAMENT_MONITOR_INTERVAL": "0"}, "TOURNAMENT_MONITOR_INTERVAL"),
    ({"TOURNAMENT_MONITOR_INTERVAL": "two"}, "TOURNAMENT_MONITOR_INTERVAL"),
    ({"CHESSSTATS_JOBS_CLEANUP_SCHEDULE": "every day"}, "cron"),
    ({"CHESSSTATS_SCHEDULER_TIMEZONE": "Mars/Olympus"}, "time zone"),
    ({"LICHESS_API_URL": "ftp://lichess.org/api"}, "lichess"),
    ({"FIDE_API_URL": "not a url"}, "fide"),
    ({"CHESSSTATS_LICHESS_RATE": "fast"}, "CHESSSTATS_LICHESS_RATE=fast: expected requests per window"),
    ({"CHESSSTATS_LICHESS_RATE": "0/1s"}, "(sets lichess.rate)"),
    ({"CHESSSTATS_FIDE_RATE": "2/fortnight"}, "(sets fide.rate)"),
    ({"PORT": "abc"}, "PORT=abc: not an integer (sets server.port)"),
    ({"CHESSSTATS_SERVER_PORT": "-1"}, "CHESSSTATS_SERVER_PORT=-1: Expected `int` >= 0 (sets server.port)"),
    ({"CHESSSTATS_SCHEDULER_TIMEZONE": "Mars/Olympus"}, "(sets scheduler.timezone)"),
    ({"CHESSSTATS_CHESSCOM_MAX_IN_FLIGHT": "0"}, "chesscom.max_in_flight"),
    ({"CHESSSTATS_LICHESS_TIMEOUT_S": "0"}, "lichess.timeout_s"),
    ({"CHESSSTATS_LICHESS_MAX_REQUESTS_PER_S": "lots"}, "lichess.max_requests_per_s"),
])
def test_bad_environment_values_name_the_key(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, env=env)
    assert fragment in err.value.message


@pytest.mark.parametrize("text, fragment", [
    ("[server]\nprot = 1\n", "prot"),
    ("[sever]\nport = 1\n", "sever"),
    ("[server]\nport = \"x\"\n", "server.port"),
    ("[server\n", "not valid TOML"),
])
def test_bad_file_names_the_key(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert fragment in err.value.message


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CHESSSTATS_")}
    full_env.update({"PYTHONPATH": str(ROOT), **(env or {})})
    return subprocess.run([sys.executable, "-m", "chessstats", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd or ROOT, timeout=60)


def test_bad_configuration_stops_start_up_with_exit_2_and_one_line(tmp_path: Path) -> None:
    proc = run_cli("serve", "--data-dir", str(tmp_path / "d"), env={"PORT": "abc"})
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "server.port" in lines[0]
    assert not (tmp_path / "d").exists()
    proc = run_cli("config", "check", "--config", str(tmp_path / "missing.toml"))
    assert proc.returncode == 2 and "not found" in proc.stderr


def test_help_and_version_never_open_the_database(tmp_path: Path) -> None:
    for args in (("--help",), ("version",), ("serve", "--help"), ("jobs", "--help")):
        proc = run_cli(*args, cwd=tmp_path, env={"CHESSSTATS_DATA_DIR": str(tmp_path / "data")})
        assert proc.returncode == 0, proc.stderr
    assert "chessstats 0." in run_cli("version").stdout
    assert not (tmp_path / "data").exists()


def test_config_check_masks_secrets_and_migrate_applies(tmp_path: Path) -> None:
    proc = run_cli("config", "check", env={"CHESSSTATS_ADMIN_TOKEN": "hunter2"})
    assert proc.returncode == 0 and "hunter2" not in proc.stdout and '"token": "********"' in proc.stdout
    proc = run_cli("migrate", "--init", "--data-dir", str(tmp_path / "d"))
    assert proc.returncode == 0 and "0001_initial: applied" in proc.stdout and "0002_" in proc.stdout
    assert f"applied now: {len(MIGRATIONS)}" in proc.stdout
    proc = run_cli("migrate", "--data-dir", str(tmp_path / "d"))
    assert "applied now: 0" in proc.stdout


def test_unusable_start_up_conditions_are_one_line_and_exit_1(tmp_path: Path) -> None:
    import socket

    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "chessstats.db").write_bytes(os.urandom(10_000))
    corrupt_cases = (("migrate", "--data-dir", str(corrupt)), ("serve", "--data-dir", str(corrupt), "--port", "0"),
                     ("jobs", "list", "--data-dir", str(corrupt)))
    for args in corrupt_cases if engine() == "sqlite" else ():  # a corrupt SQLite file (PostgreSQL: test_store_config)
        proc = run_cli(*args)  # a hang here would be the timeout of run_cli
        assert proc.returncode == 1, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr, proc.stderr
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    proc = run_cli("serve", "--data-dir", str(a_file / "sub"))
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run_cli("serve", "--data-dir", str(tmp_path / "d"), "--port", str(port))
    assert proc.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = run_cli("config", "check", "--config", str(tmp_path))
    assert proc.returncode == 2 and "cannot be read" in proc.stderr and "Traceback" not in proc.stderr


def test_upstream_tables_have_one_shape_and_sensible_defaults() -> None:
    config = load_config(None, env={})
    extras = {"token", "titled_tuesday_players"}  # each upstream's own keys, beyond the shared shape
    shapes = [set(msgspec.structs.asdict(t)) - extras for t in (config.lichess, config.chesscom, config.fide)]
    assert shapes[0] == shapes[1] == shapes[2] >= {
        "url", "timeout_s", "stream_timeout_s", "max_in_flight", "rate", "pause_after_429_s", "max_pause_s",
        "max_queue_wait_s", "breaker_failures", "breaker_open_s"}
    lichess, chesscom, fide = config.lichess, config.chesscom, config.fide
    assert (lichess.max_in_flight, lichess.rate, lichess.pause_after_429_s, lichess.max_pause_s) == (1, "2/1s", 60, 900)
    assert (lichess.stream_timeout_s, lichess.max_queue_wait_s, lichess.breaker_failures) == (600, 2, 5)
    assert (chesscom.max_in_flight, chesscom.rate) == (1, "3/1s") and (fide.max_in_flight, fide.rate) == (2, "2/1s")


@pytest.mark.parametrize("rate", ["2/1s", "10/60s", "10 per 60 s", "30/min", "2/s"])
def test_rate_forms_are_accepted(rate: str) -> None:
    assert load_config(None, env={"CHESSSTATS_LICHESS_RATE": rate}).lichess.rate == rate


def test_round_one_keys_still_load(tmp_path: Path) -> None:
    path = tmp_path / "old.toml"
    path.write_text("[upstream]\ncontact = \"me@example.org\"\ntimeout_s = 7.5\n[lichess]\nmax_requests_per_s = 4\n")
    config = load_config(path, env={})
    assert (config.lichess.rate, config.lichess.timeout_s, config.fide.timeout_s) == ("4/1s", 7.5, 7.5)
    assert config.upstream.contact == "me@example.org"
    env = {"CHESSSTATS_LICHESS_MAX_REQUESTS_PER_S": "0.5", "CHESSSTATS_UPSTREAM_TIMEOUT_S": "3"}
    config = load_config(path, env=env)
    assert (config.lichess.rate, config.chesscom.timeout_s) == ("0.5/1s", 3.0)
    # the new key wins over the old one of the same layer, and a later layer wins over an earlier one
    config = load_config(path, env={"CHESSSTATS_LICHESS_RATE": "1/5s", "CHESSSTATS_LICHESS_TIMEOUT_S": "9"})
    assert (config.lichess.rate, config.lichess.timeout_s, config.fide.timeout_s) == ("1/5s", 9.0, 7.5)


def test_bad_rate_in_a_file_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[chesscom]\nrate = "3 per fortnight"\n')
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert err.value.message.startswith("chesscom.rate: ")


def test_cache_url_is_empty_or_redis_and_redis_url_is_its_alias() -> None:
    assert load_config(env={}).cache.url == ""
    config = load_config(env={"REDIS_URL": "redis://:secret@10.0.0.5:6379/2"})
    assert config.cache.url == "redis://:secret@10.0.0.5:6379/2"
    assert load_config(env={"CHESSSTATS_CACHE_URL": "unix:///run/redis.sock?db=1"}).cache.url.startswith("unix://")
    with pytest.raises(ConfigError, match=r"REDIS_URL=http://x: .*redis://.*\(sets cache.url\)"):
        load_config(env={"REDIS_URL": "http://x"})
    with pytest.raises(ConfigError, match="cache.lock_lease_s"):
        load_config(env={"CHESSSTATS_CACHE_LOCK_LEASE_S": "0"})
