"""CLI subcommands `discriminator` and `transfer` (wired into finetune_core.cli)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from finetune_core.contracts.settings import Setting, add_flags, given_flags, scalar_settings
from finetune_core.contracts.transfer import ABLATIONS, transfer_settings

# Set by their own flags: the source, the target, the output and the switches.
OWN_FLAGS = ("run", "target", "output_dir", "target_modules")


def _transfer_flags() -> list[Setting]:
    return scalar_settings(transfer_settings(), skip=OWN_FLAGS)


def add_parsers(sub: Any) -> None:
    d = sub.add_parser(
        "discriminator",
        help="Trans-LoRA, beside a source adapter: keep k seeds, train the real/synthetic discriminator",
    )
    d.add_argument("run", help="the source training run folder (config.json, adapter/)")
    d.add_argument("--task", help="dataset name in the question (default: data file stem)")
    d.add_argument("--seeds", type=int, default=5, help="real examples kept for transfer")
    d.add_argument("--real", type=int, default=100, help="real inputs (and as many synthetic)")
    d.add_argument("--epochs", type=int, default=6)
    d.add_argument("--learning-rate", type=float, default=1e-3)
    d.add_argument("--quantization", default="nf4", choices=["nf4", "none"])
    d.add_argument("--seed", type=int, default=0)

    t = sub.add_parser(
        "transfer", help="Trans-LoRA: move a source adapter to a new base model from its seeds"
    )
    t.add_argument("run", help="the source run (with transfer/seeds.jsonl and discriminator/)")
    t.add_argument("--target", required=True, help="the new base model")
    t.add_argument("--output-dir", required=True)
    add_flags(t, _transfer_flags(), aliases={"n_synthetic": "--synthetic"})
    t.add_argument("--unfiltered", action="store_true", help="no discriminator filter")
    t.add_argument(
        "--ablation", action="append", default=[], choices=list(ABLATIONS),
        help="also train and report an ablation student; repeatable",
    )  # fmt: skip
    t.add_argument(
        "--target-modules",
        help="comma list or all-linear (default: the source adapter's; the paper: q_proj,v_proj)",
    )
    t.add_argument("--no-seeds-in-student", action="store_true")
    t.add_argument("--json", action="store_true", help="print the report as JSON")
    t.add_argument(
        "--resume",
        action="store_true",
        help="reuse what a stopped attempt in --output-dir finished (same settings only)",
    )


def cmd_discriminator(args: argparse.Namespace) -> int:
    from finetune_core.transfer.source import DiscriminatorConfig, train_discriminator

    summary = train_discriminator(
        DiscriminatorConfig(
            run=args.run,
            task=args.task,
            n_seeds=args.seeds,
            n_real=args.real,
            epochs=args.epochs,
            learning_rate=args.learning_rate,
            quantization=args.quantization,
            seed=args.seed,
        )
    )
    print(json.dumps(summary, indent=2))
    return 0


class PhaseBars:
    """Hooks.progress as one tqdm bar per phase and model (stderr)."""

    def __init__(self) -> None:
        self.key: tuple[str, str] | None = None
        self.bar: Any = None

    def __call__(self, phase: str, current: int, total: int | None, info: dict[str, Any]) -> None:
        from tqdm.auto import tqdm

        key = (phase, str(info.get("model") or info.get("student") or info.get("key") or ""))
        if key != self.key:
            if self.bar is not None:
                self.bar.close()
            self.key, self.bar = key, tqdm(total=total, desc=" ".join(filter(None, key)))
        self.bar.total = total
        self.bar.n = current
        post = {k: info[k] for k in ("accepted", "train_loss") if info.get(k) is not None}
        self.bar.set_postfix(post, refresh=False)
        self.bar.refresh()


def cmd_transfer(args: argparse.Namespace) -> int:
    from finetune_core.transfer.hooks import Hooks
    from finetune_core.transfer.pipeline import TransferConfig, transfer
    from finetune_core.transfer.report import format_table
    from finetune_core.transfer.student import parse_target_modules

    report = transfer(
        TransferConfig(
            run=args.run,
            target=args.target,
            output_dir=args.output_dir,
            filtered=not args.unfiltered,
            ablations=tuple(args.ablation),
            include_seeds=not args.no_seeds_in_student,
            target_modules=parse_target_modules(args.target_modules),
            **given_flags(args, _transfer_flags()),
        ),
        log=lambda line: print(line, file=sys.stderr, flush=True),
        hooks=Hooks(progress=PhaseBars()),
        resume=args.resume,
    )
    if report["reused"]:
        print(f"reused from earlier attempts: {', '.join(report['reused'])}", file=sys.stderr)
    print(json.dumps(report, indent=2, ensure_ascii=False) if args.json else format_table(report))
    print(f"transferred adapter: {report['adapter']}")
    return 0
