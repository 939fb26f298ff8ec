"""Command-line messages: a missing command, ``serve --init``, a backup to a missing folder, and a data
dir whose database cannot be opened (one line, no traceback from aiosqlite's threads)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, free_port


def cli(*args: str, cwd: Path | None = None, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "chessstats", *args], cwd=str(cwd or ROOT), env=env,
                          capture_output=True, text=True, timeout=timeout_s)


def test_no_command_prints_the_usage_and_exits_2() -> None:
    bare = cli()
    assert bare.returncode == 2, bare
    assert bare.stderr.startswith("usage: chessstats") and "a command is required" in bare.stderr
    assert bare.stdout == ""
    assert cli("jobs").returncode == 2
    assert cli("version").returncode == 0


def test_serve_refuses_init(tmp_path: Path) -> None:
    done = cli("serve", "--init", "--data-dir", str(tmp_path / "d"), "--port", str(free_port()))
    assert done.returncode == 2, done
    assert "--init is not needed" in done.stderr
    assert not (tmp_path / "d").exists()


def test_a_backup_into_a_missing_folder_blames_the_folder(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert cli("migrate", "--init", "--data-dir", str(data)).returncode == 0
    done = cli("backup", "--data-dir", str(data), str(tmp_path / "nonexistent" / "dir" / "x.db"))
    assert done.returncode == 1, done
    assert f"the folder {tmp_path / 'nonexistent' / 'dir'} does not exist" in done.stderr, done.stderr
    assert "chessstats.db" not in done.stderr


def test_serve_on_an_unusable_database_prints_one_line(tmp_path: Path) -> None:
    (tmp_path / "data" / "chessstats.db").mkdir(parents=True)  # cannot be opened as a database
    for _ in range(3):  # aiosqlite's thread raced the closing loop: most runs printed its traceback
        done = cli("serve", "--data-dir", str(tmp_path / "data"), "--port", str(free_port()), "--no-jobs")
        assert done.returncode == 1, done
        assert done.stderr.strip() == (f"chessstats: the database in {tmp_path / 'data'} cannot be used: "
                                       "unable to open database file"), done.stderr
