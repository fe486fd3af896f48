"""A small disk of the test's own: a tmpfs mounted on a folder (as root), and a ballast
file that fills it to the last byte, so the next write fails with ENOSPC as on a full disk."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

BALLAST = ".ballast"


@contextmanager
def small_tmpfs(folder: Path, size_kb: int) -> Iterator[Path]:
    """`folder` as a tmpfs of `size_kb` KiB for the block; skips the test, saying why,
    where this process may not mount one."""
    if shutil.which("mount") is None:
        pytest.skip("needs mount(8) to make a small tmpfs")
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs (a full disk of the test's own)")
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k,mode=0755", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False, capture_output=True)


def fill(folder: Path) -> Path:
    """Write a ballast file in `folder` until its disk refuses the next byte; returns it."""
    ballast = folder / BALLAST
    chunk = b"\0" * 65536
    with ballast.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
        try:  # the last pages of a chunk that did not fit whole
            while True:
                f.write(b"\0" * 512)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    assert shutil.disk_usage(folder).free < 4096
    return ballast


@contextmanager
def kept_full(ballast: Path) -> Iterator[Path]:
    """The ballast's disk kept full for the block: whatever a writer frees there meanwhile
    (a pruned checkpoint) is taken again within milliseconds, as other writers would."""
    stop = threading.Event()

    def grow() -> None:
        with ballast.open("ab", buffering=0) as f:
            while not stop.wait(0.002):
                with contextlib.suppress(OSError):  # ENOSPC: full, as it should be
                    while True:
                        f.write(b"\0" * 4096)

    keeper = threading.Thread(target=grow, name="kept-full", daemon=True)
    keeper.start()
    try:
        yield ballast
    finally:
        stop.set()
        keeper.join(timeout=10)
