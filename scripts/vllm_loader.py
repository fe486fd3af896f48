"""vLLM's own LoRA adapter loader, for tests/core/test_export_servers.py, from PyPI.

Puts vLLM's Python source, unpacked from its wheel, in `.cache/vllm-VERSION/src` and the
small packages its LoRA modules import in `.cache/vllm-VERSION/deps`. This is not a vLLM
install: the wheel pins torch==2.14.0 (CUDA) and transformers<5.23, which would replace
the CPU torch and the transformers in .venv, and its compiled kernels need a GPU. The
loader's code (`vllm/lora/peft_helper.py`, `vllm/lora/lora_model.py`) is plain Python and
runs on our torch, in a subprocess with these two folders on PYTHONPATH.

    .venv/bin/python scripts/vllm_loader.py   # once: a 240 MB wheel and ~80 MB of deps
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

VLLM_VERSION = "0.34.0"
ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / ".cache" / f"vllm-{VLLM_VERSION}"

# What `import vllm.lora.lora_model` needs that .venv lacks, found by importing it on 0.34.0.
# vLLM's own pins where its wheel pins one (xgrammar, apache-tvm-ffi, llguidance), else the
# versions this was tried with. Installed without their deps: each one's deps are here too
# or already in .venv.
DEPS = [
    "aiohappyeyeballs==2.7.1",
    "aiohttp==3.14.5",
    "aiosignal==1.4.0",
    "apache-tvm-ffi==0.1.11",
    "cachetools==8.0.2",
    "cbor2==6.3.0",
    "cloudpickle==3.1.3",
    "einops==0.8.2",
    "frozenlist==1.8.0",
    "llguidance==1.7.6",
    "msgspec==0.23.0",
    "multidict==7.2.1",
    "pillow==13.0.0",
    "propcache==0.5.4",
    "py-cpuinfo==9.0.0",
    "pybase64==1.5.1",
    "pyzmq==27.3.0",
    "uvloop==0.23.0",
    "xgrammar==0.2.8",
    "yarl==1.25.1",
]


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "-q", *args], check=True)


def build(target: Path = TARGET) -> Path:
    if (target / "src" / "vllm" / "lora" / "peft_helper.py").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Staged beside the target and renamed, so a failed run leaves nothing half-made.
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".vllm-") as tmp:
        stage = Path(tmp)
        pip("download", f"vllm=={VLLM_VERSION}", "--no-deps", "-d", str(stage / "wheel"))
        wheel = next((stage / "wheel").glob("vllm-*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            # Only the Python source: the compiled kernels cannot load without a GPU.
            names = [n for n in archive.namelist() if n.startswith("vllm/") and n.endswith(".py")]
            archive.extractall(stage / "build" / "src", names)
        pip("install", "--no-deps", "--target", str(stage / "build" / "deps"), *DEPS)
        shutil.rmtree(target, ignore_errors=True)
        (stage / "build").rename(target)
    return target


if __name__ == "__main__":
    print(build())
