"""Storage faults against real files: full and read-only file systems (a small tmpfs), file locks and
descriptor leaks. HTTP-level faults through the real server are in ``test_storage_server.py``."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from chessstats.locks import FileLock, hold
from tests.fsfault import fill, lock_is_free, open_fds, remount, tmpfs


def test_lock_on_full_disk_is_held_consistently_and_never_leaks(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "mnt", "2m") as mnt:
        (mnt / "locks").mkdir()
        fill(mnt)
        path = mnt / "locks" / "tournament-lichess-x.lock"
        before = open_fds()
        for _ in range(20):
            lock, other = FileLock(path), FileLock(path)
            assert lock.acquire() is True and lock.held  # the pid write failed (ENOSPC): still held
            assert other.acquire() is False and not other.held
            assert not lock_is_free(path)
            lock.release()
            assert not lock.held and lock_is_free(path)
            lock.release()  # idempotent
        assert path.read_bytes() == b""  # the pid could not be written
        assert open_fds() == before


def test_lock_pid_is_written_when_there_is_space(tmp_path: Path) -> None:
    path = tmp_path / "locks" / "a.lock"
    lock = FileLock(path)
    assert lock.acquire()
    assert path.read_text() == f"{os.getpid()}\n"
    lock.release()
    path.write_text("99999999999\n")  # a longer old pid is replaced, not left as a suffix
    assert lock.acquire()
    assert path.read_text() == f"{os.getpid()}\n"
    lock.release()


def test_lock_on_read_only_file_system(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "mnt", "2m") as mnt:
        (mnt / "locks").mkdir()
        if not remount(mnt, "ro"):
            pytest.skip("cannot remount the tmpfs read-only")
        try:
            before = open_fds()
            lock = FileLock(mnt / "locks" / "a.lock")
            with pytest.raises(OSError):
                lock.acquire()
            assert not lock.held and open_fds() == before

            async def run() -> bool:
                async with hold(mnt / "locks" / "a.lock", timeout_s=5) as held:
                    return held

            assert asyncio.run(run()) is False  # runs unlocked at once, never fails the caller
            assert open_fds() == before
        finally:
            remount(mnt, "rw")


def test_hold_on_full_disk_releases_after_the_block(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "mnt", "2m") as mnt:
        fill(mnt)
        path = mnt / "locks" / "b.lock"

        async def run() -> None:
            async with hold(path, timeout_s=1) as held:
                assert held and not lock_is_free(path)
            assert lock_is_free(path)
            with pytest.raises(RuntimeError):
                async with hold(path, timeout_s=1):
                    raise RuntimeError("the block failed")
            assert lock_is_free(path)

        before = open_fds()
        asyncio.run(run())
        assert open_fds() == before
