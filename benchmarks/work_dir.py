"""The benches' --work-dir: keep every phase in the folder given (run again and only what
is missing is done), else in a temporary folder removed afterwards."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def in_work_dir(work_dir: str | None, run: Callable[[Path], T]) -> T:
    if work_dir:
        Path(work_dir).mkdir(parents=True, exist_ok=True)
        return run(Path(work_dir))
    with tempfile.TemporaryDirectory() as tmp:
        return run(Path(tmp))
