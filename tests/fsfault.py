"""Real storage faults for tests: a small tmpfs (full disk, read-only remount) and open-fd counting.

Mounting needs root (or CAP_SYS_ADMIN); tests that use :func:`tmpfs` are skipped with the reason
when the kernel refuses.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=False)


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "2m") -> Iterator[Path]:
    """Mount a tmpfs of ``size`` on ``path`` (created) for the block; unmounted after (lazily if busy).

    Skips the test when mounting is not permitted.
    """
    path.mkdir(parents=True, exist_ok=True)
    done = _run("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root / CAP_SYS_ADMIN): {done.stderr.strip() or done.returncode}")
    try:
        yield path
    finally:
        if _run("umount", str(path)).returncode != 0:
            _run("umount", "-l", str(path))


def remount(path: Path, mode: str) -> bool:
    """Remount the tmpfs at ``path`` ``ro`` or ``rw``; False when the kernel refuses (files open for writing)."""
    return _run("mount", "-o", f"remount,{mode}", str(path)).returncode == 0


def fill(directory: Path, name: str = "filler") -> Path:
    """Write a file in ``directory`` until the file system is full (ENOSPC); returns its path."""
    path = directory / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for chunk in (1 << 16, 1 << 12, 1 << 9):
            block = b"\0" * chunk
            while True:
                try:
                    os.write(fd, block)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return path


def open_fds(pid: int | str = "self") -> int:
    """How many file descriptors process ``pid`` has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def lock_is_free(path: Path) -> bool:
    """Whether nobody holds the flock on ``path`` (checked with a non-blocking flock of our own)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing releases our probe lock
    return True
