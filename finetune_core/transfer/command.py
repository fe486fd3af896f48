"""CLI subcommands `discriminator` and `transfer` (wired into finetune_core.cli)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


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
    t.add_argument("--synthetic", type=int, default=250, help="synthetic inputs to accept")
    t.add_argument("--max-attempts", type=int, help="candidates sampled at most (default 4N)")
    t.add_argument("--unfiltered", action="store_true", help="no discriminator filter")
    t.add_argument(
        "--real-recall", type=float,
        help="stricter filter: accept only above the margin this share of held-out real "
        "inputs reached (e.g. 0.9); default: the paper's p(yes) > p(no)",
    )  # fmt: skip
    t.add_argument(
        "--teacher-keep", type=float, default=1.0,
        help="distil only this share of the teacher's answers, those it is surest of "
        "(e.g. 0.8); default 1.0, all of them, as the paper",
    )  # fmt: skip
    t.add_argument(
        "--ablation", action="append", default=[], choices=["unfiltered", "seeds_only"],
        help="also train and report an ablation student; repeatable",
    )  # fmt: skip
    t.add_argument("--temperature", type=float, default=1.0)
    t.add_argument("--top-p", type=float, default=0.95)
    t.add_argument("--teacher-max-new-tokens", type=int, default=64)
    t.add_argument("--epochs", type=int, default=12, help="student epochs (paper: up to 20)")
    t.add_argument("--max-steps", type=int)
    t.add_argument("--learning-rate", type=float, default=5e-4, help="student (paper: 2e-5..2e-4)")
    t.add_argument("--lora-r", type=int, help="student rank (default: the source adapter's)")
    t.add_argument(
        "--target-modules",
        help="comma list or all-linear (default: the source adapter's; the paper: q_proj,v_proj)",
    )
    t.add_argument("--batch-size", type=int, default=2)
    t.add_argument("--eval-data", help="held-out examples (default: the source run's val split)")
    t.add_argument("--eval-limit", type=int)
    t.add_argument("--no-seeds-in-student", action="store_true")
    t.add_argument(
        "--distillation", default="sequence", choices=["sequence", "logits"],
        help="logits: also match the teacher's token distributions (same tokenizer only)",
    )  # fmt: skip
    t.add_argument("--quantization", default="nf4", choices=["nf4", "none"])
    t.add_argument("--seed", type=int, default=0)
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
            n_synthetic=args.synthetic,
            max_attempts=args.max_attempts,
            filtered=not args.unfiltered,
            real_recall=args.real_recall,
            teacher_keep=args.teacher_keep,
            ablations=tuple(args.ablation),
            temperature=args.temperature,
            top_p=args.top_p,
            teacher_max_new_tokens=args.teacher_max_new_tokens,
            include_seeds=not args.no_seeds_in_student,
            distillation=args.distillation,
            epochs=args.epochs,
            max_steps=args.max_steps,
            learning_rate=args.learning_rate,
            lora_r=args.lora_r,
            target_modules=parse_target_modules(args.target_modules),
            batch_size=args.batch_size,
            quantization=args.quantization,
            eval_data=args.eval_data,
            eval_limit=args.eval_limit,
            seed=args.seed,
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
