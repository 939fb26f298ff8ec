"""``chessstats backup`` / ``restore``: a backup taken while the real server imports restores to an
intact database; restore refuses while the service runs and refuses a damaged file; the old WAL is
never applied to the restored database."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chessstats import backup as backup_mod
from chessstats.config import load_config
from tests.conftest import ROOT, Server, imported
from tests.replay import ReplayUpstream

#: SQLite online backup and restore of the data dir's file; on PostgreSQL the CLI points to pg_dump
#: (tests/test_store_config.py).
pytestmark = pytest.mark.sqlite_only

BIG = "bkpArena"


def cli(*args: str, data_dir: Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHESSSTATS_", "LICHESS_"))}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "chessstats", *args, "--data-dir", str(data_dir)],
                          capture_output=True, text=True, env=env, cwd=str(cwd or ROOT), timeout=120)


def check_consistent(db: Path) -> dict[str, int]:
    """integrity_check ok, foreign keys hold, and every complete import has all its rows."""
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        complete = {}
        for tid, stored in conn.execute(
                "SELECT external_id, stored_games FROM imports WHERE state = 'complete'").fetchall():
            games = conn.execute("SELECT count(*) FROM games g JOIN tournaments t ON g.tournament_id = t.id "
                                 "WHERE t.external_id = ?", (tid,)).fetchone()[0]
            assert games == stored, (tid, games, stored)
            complete[tid] = games
        return complete
    finally:
        conn.close()


def test_a_backup_taken_during_an_import_restores_to_an_intact_database(
        start_server, upstream: ReplayUpstream, tmp_path: Path) -> None:
    upstream._generate({"id": BIG, "nbPlayers": 1500, "nbGames": 6000})
    # 3 s: longer than the 1.5 s a request waits for the import (a faster import, e.g. with the cache
    # on Redis, would otherwise be complete before the first backup)
    upstream.set_fault(f"/tournament/{BIG}/games", "slow", seconds=3)
    server: Server = start_server()
    assert server.client.get("/api/tournaments/sH24g2zH").status_code == 200
    imported(server, "sH24g2zH")
    assert server.client.get(f"/api/tournaments/{BIG}").status_code == 200  # starts the import
    backups: list[tuple[Path, str]] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = server.client.get(f"/api/tournaments/{BIG}").json()["data"]["importState"]
        target = tmp_path / f"backup-{len(backups)}.db"
        done = cli("backup", str(target), data_dir=server.data_dir)
        assert done.returncode == 0, done.stderr
        assert "backed up" in done.stdout
        backups.append((target, state))
        if state == "complete" and len(backups) >= 3:
            break
    states = [s for _, s in backups]
    assert "importing" in states or "queued" in states, states  # some were taken while it ran
    for path, _ in backups:
        assert not Path(f"{path}-wal").exists()  # a single self-contained file
        assert backup_mod.integrity_problems(path) == []
    refused = cli("restore", str(backups[0][0]), data_dir=server.data_dir)
    assert refused.returncode == 1 and "running" in refused.stderr, refused.stderr
    assert server.stop() == 0
    for path, state in backups:
        done = cli("restore", str(path), data_dir=server.data_dir)
        assert done.returncode == 0, done.stderr
        assert "restored" in done.stdout
        complete = check_consistent(server.data_dir / "chessstats.db")
        assert complete.get("sH24g2zH") == 1463
        if state == "complete":
            assert complete.get(BIG) == 6000
    upstream.clear_faults()
    again: Server = start_server(data_dir=server.data_dir)
    assert again.client.get("/health").json()["checks"]["database"]["status"] == "ok"
    games = again.client.get(f"/api/tournaments/{BIG}/games?limit=1")
    assert games.status_code == 200 and games.json()["pagination"]["total"] == 6000


def _db_with(path: Path, value: str, *, leave_wal: bool = False) -> None:
    """A chessstats-looking database holding ``value``; with ``leave_wal`` its last write stays in a
    WAL that was never checkpointed (the writer was killed)."""
    code = f"""
import os, sqlite3
c = sqlite3.connect({str(path)!r}, isolation_level=None)
c.execute("PRAGMA journal_mode=WAL"); c.execute("PRAGMA wal_autocheckpoint=0")
c.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT, applied_at TEXT)")
c.execute("CREATE TABLE IF NOT EXISTS t (v TEXT)")
c.execute("INSERT INTO t VALUES (?)", ({value!r},))
{"os._exit(0)" if leave_wal else "c.close()"}
"""
    subprocess.run([sys.executable, "-c", code], check=True)


def test_restore_drops_the_old_wal_and_keeps_the_previous_database(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    _db_with(data / "chessstats.db", "old")
    _db_with(data / "chessstats.db", "old-in-wal", leave_wal=True)
    assert (data / "chessstats.db-wal").stat().st_size > 0
    _db_with(tmp_path / "new.db", "new")
    done = cli("restore", str(tmp_path / "new.db"), data_dir=data)
    assert done.returncode == 0, done.stderr
    conn = sqlite3.connect(data / "chessstats.db")
    assert [r[0] for r in conn.execute("SELECT v FROM t")] == ["new"]
    conn.close()
    kept = sqlite3.connect(data / "chessstats.db.pre-restore")
    assert [r[0] for r in kept.execute("SELECT v FROM t")] == ["old", "old-in-wal"]
    kept.close()


def test_restore_refuses_a_damaged_or_foreign_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    _db_with(data / "chessstats.db", "mine")
    before = (data / "chessstats.db").read_bytes()
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database" * 1000)
    done = cli("restore", str(garbage), data_dir=data)
    assert done.returncode == 1 and "not a usable SQLite database" in done.stderr
    foreign = tmp_path / "foreign.db"
    sqlite3.connect(foreign).execute("CREATE TABLE x (y)").connection.close()
    done = cli("restore", str(foreign), data_dir=data)
    assert done.returncode == 1 and "not a chessstats database" in done.stderr
    damaged = tmp_path / "damaged.db"
    conn = sqlite3.connect(damaged)
    conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY)")
    conn.execute("CREATE TABLE t (v TEXT)")
    conn.execute("CREATE INDEX t_v ON t (v)")
    conn.executemany("INSERT INTO t VALUES (?)", [(f"value {i}" * 20,) for i in range(3000)])
    conn.commit()
    conn.close()
    raw = bytearray(damaged.read_bytes())
    page = 4096
    raw[page * 5 + 100: page * 5 + 400] = b"\xff" * 300  # scribble over a b-tree page
    damaged.write_bytes(bytes(raw))
    done = cli("restore", str(damaged), data_dir=data)
    assert done.returncode == 1 and "integrity" in done.stderr, done.stderr
    assert (data / "chessstats.db").read_bytes() == before  # nothing changed
    assert cli("restore", str(tmp_path / "missing.db"), data_dir=data).returncode == 1


def test_backup_prints_progress_for_a_large_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    data.mkdir()
    conn = sqlite3.connect(data / "chessstats.db")
    conn.execute("CREATE TABLE t (v BLOB)")
    conn.executemany("INSERT INTO t VALUES (randomblob(3000))", [()] * 400)
    conn.commit()
    conn.close()
    monkeypatch.setattr(backup_mod, "PROGRESS_MIN_PAGES", 10)
    config = load_config(env={}, flags={"storage": {"data_dir": str(data)}})
    assert backup_mod.backup(config, tmp_path / "out.db", step_pages=50) == 0
    err = capsys.readouterr().err.splitlines()
    assert err and err[-1].startswith("backup: 100% (")
    with pytest.raises(backup_mod.BackupError):
        backup_mod.backup(config, data / "chessstats.db")
    empty = load_config(env={}, flags={"storage": {"data_dir": str(tmp_path / "none")}})
    with pytest.raises(backup_mod.BackupError, match="no database"):
        backup_mod.backup(empty, tmp_path / "x.db")
