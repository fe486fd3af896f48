"""Write requirements/production.lock: the production set (base + web) pinned (`make lock`).

uv resolves pyproject.toml's [project] dependencies and its `web` extra for the images'
platform (CPython 3.11, x86_64 Linux), with torch held at TORCH_PIN. The lock names torch
without a build label (`torch==2.13.0`) and leaves out torch's CUDA stack (nvidia-*,
cuda-*, triton), which each torch build pins exactly itself. So one lock serves both kinds
of host: a CPU host installs torch 2.13.0's CPU build first (as the Makefile does), which
the lock's torch line then accepts, and a GPU host gets the CUDA build with its own CUDA
libraries. For that reason the lock carries no hashes (the builds' hashes differ).

    python scripts/lock.py [--out requirements/production.lock]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "production.lock"
TORCH_PIN = "torch==2.13.0"
EXTRAS = ("web",)
PLATFORM = ("--python-version", "3.11", "--python-platform", "x86_64-manylinux_2_28")
# Shipped inside each torch build's own requirements, per build (CPU builds have none).
CUDA_STACK = re.compile(r"^(nvidia-[a-z0-9-]+|cuda-[a-z0-9-]+|triton)==", re.MULTILINE)
HEADER = f"""\
# The production dependency set (pyproject.toml: [project] dependencies + the web extra),
# pinned for CPython 3.11 on x86_64 Linux. Refresh with `make lock`; tests/test_dependencies.py
# checks it names every declared dependency. Install torch first, the build for the host:
#   CPU: pip install {TORCH_PIN} from PyTorch's CPU wheel index (its "+cpu" build)
#   GPU: pip install {TORCH_PIN}   (PyPI's CUDA build, with the CUDA libraries it pins)
# then: pip install -r requirements/production.lock && pip install --no-deps .
# The torch line carries no build label and torch's CUDA stack is left out, so this file
# never forces a CUDA build on a CPU host; for the same reason it carries no hashes.
"""


def uv() -> str:
    found = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if not found:
        sys.exit("make lock needs uv (the dev extra has it: make setup)")
    return found


def compile_lock(constraints: Path, excludes: Path | None) -> str:
    command = [
        uv(),
        "pip",
        "compile",
        "pyproject.toml",
        "-q",
        "--no-header",
        "-c",
        str(constraints),
    ]
    command += [arg for extra in EXTRAS for arg in ("--extra", extra)]
    out = constraints.with_name("out.txt")
    command += [*PLATFORM, "--output-file", str(out)]
    if excludes:
        command += ["--excludes", str(excludes)]
    subprocess.run(command, cwd=ROOT, check=True)
    return out.read_text().replace(f"-c {constraints}", "-c torch pin (scripts/lock.py)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=LOCK)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        constraints, excludes = Path(tmp, "torch.txt"), Path(tmp, "cuda-stack.txt")
        constraints.write_text(TORCH_PIN + "\n")
        full = compile_lock(constraints, None)
        cuda = [m.group(1) for m in CUDA_STACK.finditer(full)]
        excludes.write_text("".join(f"{name}\n" for name in cuda))
        lock = compile_lock(constraints, excludes if cuda else None)
    if CUDA_STACK.search(lock) or not re.search(rf"^{re.escape(TORCH_PIN)}$", lock, re.M):
        sys.exit(
            "the lock still names torch's CUDA stack, or not torch itself: see scripts/lock.py"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(HEADER + lock)
    pins = len(re.findall(r"^[A-Za-z0-9].*==", lock, re.M))
    print(f"{args.out}: {pins} pins; left to torch's build: {', '.join(cuda)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
