"""The kernels' build and start-up check as the images and workers run them
(`python -m finetune_core.kernels build | check`, finetune_core/kernels/paths.py): the path
this machine takes, and a build that fails said with the compiler's reason."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# What torch's extension builder needs (the check itself needs neither).
needs_build_tools = pytest.mark.skipif(
    not (shutil.which("ninja") and shutil.which(os.environ.get("CXX", "c++"))),
    reason="no C++ compiler or no ninja on PATH: the kernels cannot compile here",
)


def kernels(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "finetune_core.kernels", *args],
        cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


@needs_build_tools
def test_the_image_build_step_compiles_what_the_check_then_loads() -> None:
    built = kernels("build")  # the shared build cache: compiled once, reused here
    assert built.returncode == 0, built.stderr
    folder = Path(built.stdout.split("CPU kernels built in ", 1)[1].split()[0])
    assert list(folder.glob("tunebook_nf4_cpu*.so"))

    checked = kernels("check")
    assert checked.returncode == 0, checked.stderr
    assert "NF4 path: compiled CPU kernels (compiled-cpu) on cpu" in checked.stdout


@needs_build_tools
def test_a_source_that_does_not_compile_is_reported_with_the_compilers_reason(
    tmp_path: Path,
) -> None:
    broken = tmp_path / "csrc" / "cpu"
    broken.mkdir(parents=True)
    (broken / "ops.cpp").write_text("#error tunebook-broken-on-purpose\n")
    env = {"TUNEBOOK_CSRC": str(tmp_path / "csrc"), "FINETUNE_CORE_CACHE": str(tmp_path)}

    checked = kernels("check", **env)
    assert checked.returncode == 1
    assert "NF4 path: pure-PyTorch reference (reference) on cpu" in checked.stdout
    assert "compiled kernels failed:" in checked.stderr
    assert "tunebook-broken-on-purpose" in checked.stderr  # the compiler's own words

    assert kernels("build", **env).returncode == 1  # an image build stops here


def test_a_backend_asked_for_is_taken_without_building(tmp_path: Path) -> None:
    env = {"TUNEBOOK_NF4_BACKEND": "reference", "TUNEBOOK_CSRC": str(tmp_path)}
    checked = kernels("check", **env)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.strip() == (
        "NF4 path: pure-PyTorch reference (reference) on cpu, TUNEBOOK_NF4_BACKEND=reference"
    )
