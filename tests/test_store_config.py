"""``[store] url`` selects the engine (``DATABASE_URL`` is its alias); backup/restore on PostgreSQL
point to pg_dump / pg_restore; the CLI works on a PostgreSQL store (``migrate``, ``jobs``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from chessstats.config import load_config
from chessstats.errors import ConfigError
from chessstats.resources import DataDir, database_for
from chessstats.store import Database
from chessstats.store.postgres import PostgresDatabase, redact
from tests.conftest import ROOT
from tests.pg_store import pg_server


def test_store_url_selects_the_engine_and_database_url_is_its_alias(tmp_path: Path) -> None:
    default = load_config(env={"CHESSSTATS_DATA_DIR": str(tmp_path)})
    assert default.store.url == "" and default.store.engine == "sqlite"
    db = database_for(default, DataDir(default.data_dir))
    assert isinstance(db, Database) and db.path == tmp_path / "chessstats.db"
    assert load_config(env={"CHESSSTATS_STORE_URL": "sqlite://"}).store.engine == "sqlite"
    url = "postgresql://cs:secret@db.example.org:5433/chess"
    cfg = load_config(env={"DATABASE_URL": url, "CHESSSTATS_STORE_POOL_SIZE": "4"})
    assert cfg.store.url == url and cfg.store.engine == "postgresql" and cfg.store.pool_size == 4
    pg = database_for(cfg, DataDir(cfg.data_dir))
    assert isinstance(pg, PostgresDatabase) and pg.pool_size == 4 and "secret" not in pg.path
    assert redact(url) == "postgresql://cs:***@db.example.org:5433/chess"
    assert load_config(env={"DATABASE_URL": "postgres://h/db"}).store.engine == "postgresql"


@pytest.mark.parametrize(("value", "message"), [
    ("mysql://h/db", "expected sqlite:// or postgresql://"),
    ("sqlite:///elsewhere/x.db", "always <data dir>/chessstats.db"),
])
def test_a_bad_store_url_is_refused_naming_the_variable(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(env={"DATABASE_URL": value})
    assert message in caught.value.message and "DATABASE_URL" in caught.value.message


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CHESSSTATS_", "DATABASE_URL"))}
    return subprocess.run([sys.executable, "-m", "chessstats", *args], capture_output=True, text=True, timeout=120,
                          cwd=str(ROOT), env={**base, "PYTHONPATH": str(ROOT), **env})


def test_cli_on_postgresql_migrates_lists_jobs_and_points_backup_to_pg_dump(tmp_path: Path) -> None:
    url = pg_server().new_database()
    env = {"DATABASE_URL": url, "CHESSSTATS_DATA_DIR": str(tmp_path / "data")}
    migrated = _cli("migrate", "--init", env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert "0001_initial: applied " in migrated.stdout and "applied now: " in migrated.stdout
    assert not (tmp_path / "data" / "chessstats.db").exists()  # nothing of the store in the data dir
    again = _cli("migrate", env=env)
    assert again.returncode == 0 and "applied now: 0" in again.stdout, again.stderr
    assert (tmp_path / "data").is_dir()  # the data dir still holds the cache and the locks
    listed = _cli("jobs", "list", env=env)
    assert listed.returncode == 0 and "fide-ratings" in listed.stdout, listed.stderr
    for command in ("backup", "restore"):
        refused = _cli(command, str(tmp_path / "x.db"), env=env)
        assert refused.returncode == 2 and "pg_dump" in refused.stderr and "pg_restore" in refused.stderr
    gone = _cli("migrate", env={**env, "DATABASE_URL": url.replace("/t", "/nosuchdb_t", 1)})  # no such database
    assert gone.returncode == 1 and "the database cannot be used" in gone.stderr and "Traceback" not in gone.stderr
    config = _cli("config", "check", env=env)
    assert config.returncode == 0 and '"url": "postgresql://postgres@' in config.stdout
