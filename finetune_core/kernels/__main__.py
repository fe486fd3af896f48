"""Build or check the compiled NF4 kernels (image builds, operators).

python -m finetune_core.kernels build [--cuda]
    compile csrc/cpu (and with --cuda csrc/cuda: nvcc, no GPU needed) into the build
    cache under FINETUNE_CORE_CACHE, where workers load them; exit 1 on any failure
python -m finetune_core.kernels check
    print the NF4 path this machine takes; exit 1 when its compiled kernels failed
"""

from __future__ import annotations

import argparse
import sys

from finetune_core.kernels import ops
from finetune_core.kernels.paths import nf4_path


def build(cuda: bool) -> int:
    if not ops.load_extension():
        print(f"CPU kernels failed: {ops.load_failure('cpu')}", file=sys.stderr)
        return 1
    print(f"CPU kernels built in {ops.build_dir('cpu')}")
    if cuda:
        try:
            ops.build_cuda_extension()
        except Exception as exc:  # noqa: BLE001 - reported, and the build fails
            print(f"CUDA kernels failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        print(f"CUDA kernels built in {ops.build_dir('cuda')}")
    return 0


def check() -> int:
    found = nf4_path()
    print(f"NF4 path: {found.describe()}")
    if found.fell_back:
        print(f"compiled kernels failed: {found.problem}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m finetune_core.kernels", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    build_cmd = commands.add_parser("build", help="compile csrc/ into the build cache")
    build_cmd.add_argument("--cuda", action="store_true", help="csrc/cuda too (needs nvcc)")
    commands.add_parser("check", help="print the NF4 path this machine takes")
    args = parser.parse_args(argv)
    return build(args.cuda) if args.command == "build" else check()


if __name__ == "__main__":
    sys.exit(main())
