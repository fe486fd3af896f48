"""`python -m finetune_core`: models, validate, stats, train, resume, final, generate, export."""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from finetune_core.contracts.settings import Setting, add_flags, given_flags, scalar_settings
from finetune_core.contracts.train import train_settings
from finetune_core.errors import FinetuneError

TRAINING_METHODS = next(s.choices for s in train_settings() if s.name == "training_method")


def _train_flags() -> list[Setting]:
    return scalar_settings(train_settings(), skip=("target_modules",))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m finetune_core", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("models", help="list base models: parameters, architecture, context, cached")
    pr = sub.add_parser(
        "prepare", help="convert built-in models into the cache now (later loads take seconds)"
    )
    pr.add_argument("names", nargs="+", help="model names, e.g. smollm2-135m-instruct gemma-3-270m")

    for name, helptext in (
        ("validate", "check a data file; errors carry line numbers and codes"),
        ("stats", "token statistics with a model's tokenizer"),
    ):
        s = sub.add_parser(name, help=helptext, description=helptext)
        s.add_argument("path")
        s.add_argument("--format", dest="fmt", help="force a format instead of detecting it")
        s.add_argument("--column-map", help="CSV columns, e.g. prompt=question,completion=answer")
        s.add_argument(
            "--model",
            default=None if name == "validate" else "smollm2-135m-instruct",
            help="tokenizer for length checks" + ("" if name == "stats" else " (optional)"),
        )
        s.add_argument("--max-length", type=int, default=512)
        s.add_argument("--json", action="store_true", help="print JSON")

    t = sub.add_parser(
        "train",
        help="QLoRA fine-tune; flags or --config FILE",
        description="Fine-tune with QLoRA. Flags override values from --config. --method takes "
        "an adapter method (lora, dora) or a training method (supervised, dpo, simpo): "
        "--method dpo --data prefs.jsonl is --training-method dpo.",
    )
    t.add_argument("--config", help="YAML or JSON file of the options below")
    add_flags(t, _train_flags())
    t.add_argument("--target-modules", help="comma-separated module names, or all-linear")
    t.add_argument("--no-packing", action="store_true", help="one example per row")
    t.add_argument(
        "--no-gradient-checkpointing", action="store_true", help="--gradient-checkpointing off"
    )

    r = sub.add_parser("resume", help="continue a stopped run from its last checkpoint")
    r.add_argument("output_dir")

    f = sub.add_parser("final", help="choose the final adapter: last, best or a step number")
    f.add_argument("output_dir")
    f.add_argument("which")

    g = sub.add_parser("generate", help="chat with a base model, optionally with an adapter")
    g.add_argument("--model", default="smollm2-135m-instruct")
    g.add_argument("--adapter", help="PEFT adapter folder")
    g.add_argument(
        "--prompt", action="append", required=True, help="a user message; repeat to batch"
    )
    g.add_argument("--system", help="a system message for every prompt")
    g.add_argument("--max-new-tokens", type=int, default=128)
    g.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--seed", type=int)
    g.add_argument("--quantization", default="nf4", choices=["nf4", "none"])
    g.add_argument("--no-stream", action="store_true")

    from finetune_core.evaluate.command import add_parser as add_evaluate_parser

    add_evaluate_parser(sub)

    from finetune_core.transfer.command import add_parsers as add_transfer_parsers

    add_transfer_parsers(sub)

    from finetune_core.export.command import add_parser as add_export_parser

    add_export_parser(sub)
    return p


def _column_map(text: str | None) -> dict[str, str] | None:
    if not text:
        return None
    try:
        return dict(part.split("=", 1) for part in text.split(","))
    except ValueError:
        raise FinetuneError(f"--column-map wants key=column pairs, got {text!r}") from None


def cmd_models(args: argparse.Namespace) -> int:
    from finetune_core.models.catalog import describe_all

    rows = describe_all()
    print(f"{'name':24} {'parameters':>11} {'architecture':20} {'context':>8}  cached  description")
    for r in rows:
        params = f"{r['parameters'] / 1e6:.1f}M" if r.get("parameters") else "?"
        print(
            f"{r['name']:24} {params:>11} {r.get('architecture') or '?':20} "
            f"{r.get('context_length') or '?':>8}  {'yes' if r['cached'] else 'no':6}  {r['description']}"
        )
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from finetune_core.models import prepare

    for name in args.names:
        print(f"{name}: {prepare(name)}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from finetune_core.data import validate_file

    tokenizer = None
    if args.model:
        from finetune_core.models import load_tokenizer

        tokenizer = load_tokenizer(args.model)
    report = validate_file(
        args.path,
        fmt=args.fmt,
        column_map=_column_map(args.column_map),
        tokenizer=tokenizer,
        max_length=args.max_length if tokenizer else None,
    )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(
            f"{args.path}: format {report.format}, {report.n_examples} examples, {len(report.issues)} problem(s)"
        )
        for issue in report.issues:
            print(f"  line {issue.line}: [{issue.code}] {issue.message}")
    return 0 if report.ok else 1


def cmd_stats(args: argparse.Namespace) -> int:
    from finetune_core.data import dataset_stats, read_examples
    from finetune_core.models import load_tokenizer

    examples = list(read_examples(args.path, fmt=args.fmt, column_map=_column_map(args.column_map)))
    stats = dataset_stats(examples, load_tokenizer(args.model), args.max_length)
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        for key, value in stats.items():
            print(f"{key:28} {value}")
    return 0


def _train_config(args: argparse.Namespace) -> Any:
    from finetune_core.train.config import TrainConfig, load_config

    given = given_flags(args, _train_flags())
    if given.get("method") in TRAINING_METHODS:  # the choices are disjoint: --method dpo
        given["training_method"] = given.pop("method")
    if args.target_modules:
        mods = args.target_modules
        given["target_modules"] = mods if mods == "all-linear" else mods.split(",")
    if args.no_packing:
        given["packing"] = False
    if args.no_gradient_checkpointing:
        given["gradient_checkpointing"] = "off"
    if args.config:
        return load_config(args.config, **given)
    cfg = TrainConfig(**given)
    cfg.validate()
    return cfg


def _run_training(cfg: Any, resume: bool, between: Callable[[], None] | None = None) -> int:
    """`between` runs at each stop check: a host's manners (benchmarks/train_yielding.py)."""
    from finetune_core.contracts.hooks import Hooks
    from finetune_core.train import TqdmBar, train

    stop = {"asked": False}

    def on_sigint(signum: int, frame: object) -> None:
        # First Ctrl-C: save a checkpoint and stop after this step. Second: abort.
        if stop["asked"]:
            raise KeyboardInterrupt
        stop["asked"] = True
        print(
            "\nstopping after this step and saving a checkpoint (Ctrl-C again to abort)",
            file=sys.stderr,
        )

    signal.signal(signal.SIGINT, on_sigint)

    def should_stop() -> bool:
        if between is not None:
            between()
        return stop["asked"]

    hooks = Hooks(progress=TqdmBar(), should_stop=should_stop)
    result = train(cfg, hooks=hooks, resume=resume)
    print(
        f"{result.status}: {result.steps}/{result.total_steps} steps, adapter in {Path(cfg.output_dir) / 'adapter'}"
    )
    if result.status == "cancelled":
        print(f"resume with: python -m finetune_core resume {cfg.output_dir}")
    return 0 if result.status == "succeeded" else 3


def cmd_train(args: argparse.Namespace) -> int:
    return _run_training(_train_config(args), resume=False)


def cmd_resume(args: argparse.Namespace) -> int:
    from finetune_core.train.config import load_config

    saved = Path(args.output_dir) / "config.json"
    if not saved.exists():
        raise FinetuneError(f"{args.output_dir} holds no config.json: not a training run folder")
    return _run_training(load_config(saved), resume=True)


def cmd_final(args: argparse.Namespace) -> int:
    from finetune_core.train.outputs import select_final

    print(f"final adapter: {select_final(args.output_dir, args.which)}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from finetune_core.infer import generate, load_chat_model

    chat = load_chat_model(args.model, adapter=args.adapter, quantization=args.quantization)
    system = [{"role": "system", "content": args.system}] if args.system else []
    conversations = [system + [{"role": "user", "content": p}] for p in args.prompt]
    stream = not args.no_stream and len(conversations) == 1
    on_text = (lambda row, text: print(text, end="", flush=True)) if stream else None
    results = generate(
        chat,
        conversations,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        on_text=on_text,
    )
    for prompt, result in zip(args.prompt, results, strict=True):
        if stream:
            print()
        else:
            print(f"> {prompt}\n{result.text}\n")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from finetune_core.evaluate.command import run

    return run(args)


def cmd_export(args: argparse.Namespace) -> int:
    from finetune_core.export.command import run

    return run(args)


def _transfer_command(name: str, args: argparse.Namespace) -> int:
    from finetune_core.transfer import command

    return getattr(command, name)(args)


COMMANDS = {
    "models": cmd_models,
    "prepare": cmd_prepare,
    "validate": cmd_validate,
    "stats": cmd_stats,
    "train": cmd_train,
    "resume": cmd_resume,
    "final": cmd_final,
    "generate": cmd_generate,
    "evaluate": cmd_evaluate,
    "discriminator": lambda args: _transfer_command("cmd_discriminator", args),
    "transfer": lambda args: _transfer_command("cmd_transfer", args),
    "export": cmd_export,
}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except FinetuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (TypeError, ValueError) as exc:
        if dataclasses.is_dataclass(exc):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
