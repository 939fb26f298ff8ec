"""The one-file executable: the spec's lazy-import list is right, and a built binary works.

The list lives in :mod:`chessstats._frozen` (``chessstats.spec`` reads it). Each name must import
from source, so a typo or a renamed module fails here. When a binary exists (``$CHESSSTATS_BINARY``
or ``dist/chessstats``, built by ``scripts/build``), it must pass ``selfcheck`` (every listed
module and bundled data file is inside it), answer ``version`` without a data dir, and serve
``/health``. The full smoke test (``scripts/smoke``) runs in CI after the build.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import subprocess
from pathlib import Path

import pytest

from chessstats import __version__
from chessstats._frozen import DATA_FILES, DATA_PACKAGES, LAZY_IMPORTS, METADATA_PACKAGES, selfcheck
from tests.conftest import ROOT

BINARY = Path(os.environ.get("CHESSSTATS_BINARY") or ROOT / "dist" / "chessstats")
needs_binary = pytest.mark.skipif(
    not BINARY.is_file(), reason=f"no executable at {BINARY} (run scripts/build)"
)


@pytest.mark.parametrize("name", LAZY_IMPORTS)
def test_lazy_import_exists(name: str) -> None:
    importlib.import_module(name)


def test_data_and_metadata_packages_exist() -> None:
    from importlib.metadata import version

    for package in DATA_PACKAGES:
        importlib.import_module(package)
    for dist in METADATA_PACKAGES:
        assert version(dist)
    for package, files in DATA_FILES.items():  # data-only packages: found, not imported
        spec = importlib.util.find_spec(package)
        assert spec is not None and spec.submodule_search_locations, package
        for name in files:
            assert (Path(spec.submodule_search_locations[0]) / name).is_file(), (package, name)


def test_spec_uses_the_list() -> None:
    """The spec is a one-file build named chessstats, upx off, and takes its hiddenimports from the list."""
    spec = (ROOT / "chessstats.spec").read_text()
    ast.parse(spec)
    assert "from chessstats._frozen import DATA_FILES, DATA_PACKAGES, LAZY_IMPORTS, METADATA_PACKAGES" in spec
    assert "for package, files in DATA_FILES.items()" in spec
    assert "*LAZY_IMPORTS" in spec and 'name="chessstats"' in spec and "upx=False" in spec
    assert "COLLECT(" not in spec  # one-file: no COLLECT step
    assert os.access(ROOT / "scripts" / "build", os.X_OK) and os.access(ROOT / "scripts" / "smoke", os.X_OK)


def test_selfcheck_from_source(capsys: pytest.CaptureFixture[str]) -> None:
    assert selfcheck() == 0
    assert "selfcheck OK (frozen: False)" in capsys.readouterr().out


@needs_binary
def test_binary_selfcheck_and_version(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHESSSTATS_", "LICHESS_"))}
    env["CHESSSTATS_DATA_DIR"] = str(tmp_path / "data")
    out = subprocess.run(
        [str(BINARY), "selfcheck"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "selfcheck OK (frozen: True)" in out.stdout
    out = subprocess.run(
        [str(BINARY), "version"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and out.stdout.strip() == f"chessstats {__version__}"
    assert list(tmp_path.iterdir()) == []  # no data dir, no database


@needs_binary
def test_binary_serves_and_stops_cleanly(start_server, upstream) -> None:  # noqa: ANN001
    server = start_server("--no-jobs", command=[str(BINARY)])
    assert server.client.get("/health").status_code == 200
    response = server.client.get("/api/tournaments/sH24g2zH")
    assert response.status_code == 200 and response.json()["source"] == "api"
    assert server.stop() == 0
    assert "Traceback" not in server.log()


@needs_binary
def test_binary_runs_the_scheduler_exactly_once_with_two_workers(start_server) -> None:  # noqa: ANN001
    """The frozen ``--workers 2``: one run per tick of a job due every second, not one per worker."""
    import time

    from tests.test_scheduler_server import assert_no_overlap, assert_once_per_tick, db_runs, jobs_env

    started = time.monotonic()
    server = start_server("--workers", "2", env=jobs_env(cleanup="* * * * * *"), command=[str(BINARY)])
    time.sleep(4)
    assert server.stop() == 0
    lived = time.monotonic() - started
    rows = db_runs(server.data_dir, "cleanup")
    assert_once_per_tick(rows)
    assert_no_overlap(rows)
    assert 2 <= len(rows) <= lived + 1, (len(rows), lived)
    assert "Traceback" not in server.log()


@needs_binary
def test_binary_sigterm_exits_0_within_3_s(start_server) -> None:  # noqa: ANN001
    """SIGTERM to the bootloader (what a supervisor sends): forwarded to the server, which stops its workers."""
    import time

    from tests.test_process import alive, children, wait_until

    server = start_server("--workers", "2", command=[str(BINARY)])
    descendants = children(server.proc.pid)
    t0 = time.monotonic()
    code = server.stop(timeout_s=10)
    elapsed = time.monotonic() - t0
    print(f"\n[measure] frozen, 2 workers: SIGTERM -> exit {code} in {elapsed:.2f} s")
    assert code == 0 and elapsed < 3, (code, elapsed, server.log())
    wait_until(lambda: not any(alive(pid) for pid in descendants), 2)
    assert "Traceback" not in server.log()


@needs_binary
@pytest.mark.parametrize("workers", [1, 2])
def test_binary_kill_9_of_the_bootloader_takes_the_server_down(start_server, monkeypatch, workers) -> None:  # noqa: ANN001
    """kill -9 of the pid a supervisor knows (PyInstaller's bootloader): the Python process below it,
    and its workers, go too; the port is free and a new server starts on it."""
    from tests.test_process import alive, children, port_free, wait_until

    server = start_server("--workers", str(workers), command=[str(BINARY)])
    descendants = children(server.proc.pid)
    assert len(descendants) >= (1 if workers == 1 else 4)  # Python process (+ 2 workers, Sanic's shared state)
    server.proc.kill()
    server.proc.wait()
    freed_s = wait_until(lambda: port_free(server.port), 5)
    gone_s = wait_until(lambda: not any(alive(pid) for pid in descendants), 5)
    print(f"\n[measure] frozen, {workers} worker(s), kill -9 of the bootloader: port free in {freed_s:.2f} s, "
          f"every process gone in {gone_s:.2f} s")
    monkeypatch.setattr("tests.conftest.free_port", lambda: server.port)
    again = start_server("--workers", str(workers), data_dir=server.data_dir, command=[str(BINARY)])
    assert again.port == server.port and again.client.get("/health").status_code == 200
    assert again.stop() == 0
