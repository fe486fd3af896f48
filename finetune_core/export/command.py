"""`python -m finetune_core export RUN --format merged|gguf|adapter --type T --out DIR`."""

from __future__ import annotations

import argparse
import sys

from finetune_core.contracts.layout import EXPORT_FORMATS, EXPORT_TYPES


def add_parser(sub: argparse._SubParsersAction) -> None:
    types = sorted({t for ts in EXPORT_TYPES.values() for t in ts})
    e = sub.add_parser(
        "export",
        help="export a finished run: merged weights, GGUF (llama.cpp, Ollama) or the adapter",
        description="Export a finished run. Types: "
        + "; ".join(f"{f}: {', '.join(t)} (default {t[0]})" for f, t in EXPORT_TYPES.items()),
    )
    e.add_argument("run", help="the run's output folder")
    e.add_argument("--format", dest="fmt", required=True, choices=EXPORT_FORMATS)
    e.add_argument("--type", dest="type_", choices=types, help="weight type (see above)")
    e.add_argument("--out", help="folder to write (default: RUN/exports/FORMAT-TYPE)")
    e.add_argument(
        "--no-measure",
        action="store_true",
        help="merged: skip the comparison with the model as trained",
    )
    e.add_argument("--prompts", type=int, default=50, help="merged: prompts for the comparison")


def run(args: argparse.Namespace) -> int:
    from finetune_core.contracts.hooks import Hooks
    from finetune_core.export import export_run

    def progress(phase: str, percent: int, total: int | None, info: dict) -> None:
        print(f"[{percent:3d}%] {info['stage']}", file=sys.stderr, flush=True)

    manifest = export_run(
        args.run, fmt=args.fmt, type_=args.type_, out=args.out, hooks=Hooks(progress=progress),
        measure=not args.no_measure, n_prompts=args.prompts,
    )  # fmt: skip
    print(
        f"{manifest['format']} {manifest['type']} in {manifest['folder']} ({manifest['seconds']} s)"
    )
    for f in manifest["files"]:
        print(f"  {f['name']:40} {f['bytes']:>12,} bytes  sha256 {f['sha256']}")
    if "fidelity" in manifest:
        fig = manifest["fidelity"]
        print(
            f"  as trained vs merged: mean KL {fig['mean_kl']:.5f}, greedy token agreement "
            f"{fig['greedy_token_agreement']:.1%} on {fig['prompts']} prompts"
        )
    for warning in manifest["warnings"]:
        print(f"  warning: {warning}")
    return 0
