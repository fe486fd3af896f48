"""Trans-LoRA transfer (Wang et al., NeurIPS 2024): move a LoRA adapter to a new base
model without the customer's data, from the k seeds and the discriminator kept beside
the source adapter.

    seeds -> target model writes candidate inputs (few-shot list prompt, sampled)
          -> discriminator keeps those it calls real
          -> source base + adapter answers each (greedy): the teacher outputs
          -> a new QLoRA adapter on the target learns (input, teacher answer)
          -> exact match of source, target base and transferred adapter

Distillation is sequence-level (train on the teacher's text), so it works across
tokenizers; `distillation="logits"` adds KL to the teacher's token distributions when
source and target share one (distill.py). `hooks` report each phase's progress and can stop the run between batches:
`TransferStopped` then carries what was done so far (also in `<output_dir>/partial.json`).
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from finetune_core.data import Example, Message, read_examples, to_chat_jsonl
from finetune_core.errors import FinetuneError
from finetune_core.transfer.discriminator import load_discriminator, read_info
from finetune_core.transfer.hooks import Hooks, TransferStopped
from finetune_core.transfer.report import evaluate_chat, format_table
from finetune_core.transfer.sampling import SamplingResult, no_accepted_message, synthesize
from finetune_core.transfer.seeds import load_seeds, task_input
from finetune_core.transfer.source import QV, run_adapter, run_config, run_splits

ABLATIONS = ("unfiltered", "seeds_only")
ORDER = (
    "source_adapter",
    "target_base",
    "transferred",
    "ablation_unfiltered",
    "ablation_seeds_only",
)


@dataclass
class TransferConfig:
    run: str  # source training run: config.json, adapter/, transfer/seeds.jsonl, discriminator/
    target: str  # the new base model
    output_dir: str
    adapter: str | None = None  # the teacher's adapter; default <run>/adapter (or a checkpoint)
    n_synthetic: int = 250
    max_attempts: int | None = None  # candidates sampled at most; default 4 * n_synthetic
    filtered: bool = True  # False: no discriminator (the "unfiltered" ablation as main run)
    ablations: tuple[str, ...] = ()  # extra students: "unfiltered", "seeds_only"
    temperature: float = 1.0
    top_p: float = 0.95
    sample_batch: int = 8
    sample_max_new_tokens: int = 96
    teacher_max_new_tokens: int = 64
    include_seeds: bool = True  # the seeds (real answers) join the distillation set
    # "sequence": train on the teacher's text (any tokenizers); "logits": also match the
    # teacher's top-k token distributions (KL), only when source and target share one.
    distillation: str = "sequence"
    logit_alpha: float = 0.5
    logit_temperature: float = 2.0
    # Student: the paper's LoRA on q, v.
    epochs: int = 3
    max_steps: int | None = None
    learning_rate: float = 2e-4
    lora_r: int = 8
    target_modules: list[str] | str = field(default_factory=lambda: list(QV))
    batch_size: int = 8
    max_length: int = 256
    quantization: str = "nf4"
    # Evaluation: a file of held-out examples, else the source run's validation split.
    eval_data: str | None = None
    eval_limit: int | None = None
    eval_max_new_tokens: int = 32
    seed: int = 0

    def validate(self) -> None:
        unknown = sorted(set(self.ablations) - set(ABLATIONS))
        if unknown:
            raise FinetuneError(f"unknown ablation(s) {unknown}; known: {', '.join(ABLATIONS)}")
        if self.n_synthetic < 1:
            raise FinetuneError(f"n_synthetic must be at least 1, got {self.n_synthetic}")
        if not self.temperature > 0:
            raise FinetuneError("sampling needs temperature > 0")
        if self.distillation not in ("sequence", "logits"):
            raise FinetuneError(
                f"distillation must be sequence or logits, not {self.distillation!r}"
            )


@contextmanager
def _phase(
    times: dict[str, float], name: str, log: Callable[[str], None] | None = None
) -> Iterator[None]:
    started = time.monotonic()
    if log:
        log(f"{name} ...")
    try:
        yield
    finally:
        times[name] = round(time.monotonic() - started, 2)
        gc.collect()  # each phase drops its models before the next loads
        if log:
            log(f"{name}: {times[name]:.1f}s")


def eval_examples(cfg: TransferConfig) -> list[Example]:
    if cfg.eval_data:
        examples = list(read_examples(cfg.eval_data))
    else:
        examples = run_splits(cfg.run)[1]
    if not examples:
        raise FinetuneError("no held-out examples to evaluate on: give an eval file")
    return examples[: cfg.eval_limit] if cfg.eval_limit else examples


def distillation_examples(
    inputs: list[str], answers: list[str], seeds: list[Example] | None = None
) -> list[Example]:
    """(synthetic input -> teacher answer) chat pairs; empty answers teach nothing."""
    pairs = [
        Example(messages=(Message("user", x), Message("assistant", a)), line=i + 1)
        for i, (x, a) in enumerate(zip(inputs, answers, strict=True))
        if a.strip()
    ]
    return pairs + list(seeds or [])


def teacher_answers(
    chat: Any,
    inputs: list[str],
    max_new_tokens: int,
    batch_size: int = 8,
    hooks: Hooks | None = None,
) -> list[str]:
    """Greedy answers of the teacher; stopping between batches raises TransferStopped."""
    from finetune_core.infer import generate

    hooks = hooks or Hooks()
    out: list[str] = []
    hooks.progress("teacher", 0, len(inputs), {})
    for start in range(0, len(inputs), batch_size):
        if hooks.should_stop():
            raise TransferStopped("teacher", {"teacher_answered": len(out)})
        batch = [[{"role": "user", "content": x}] for x in inputs[start : start + batch_size]]
        out += [g.text.strip() for g in generate(chat, batch, max_new_tokens=max_new_tokens)]
        hooks.progress("teacher", len(out), len(inputs), {})
    return out


def _train_student(
    cfg: TransferConfig,
    examples: list[Example],
    folder: Path,
    hooks: Hooks,
    name: str,
    teacher: tuple[str, str],
) -> Path:
    from finetune_core.train import TrainConfig, train

    if cfg.distillation == "logits":
        from finetune_core.transfer.distill import train_logit_student

        model, adapter = teacher
        train_logit_student(
            cfg,
            examples,
            teacher_model=model,
            teacher_adapter=adapter,
            folder=folder,
            hooks=hooks,
            name=name,
            alpha=cfg.logit_alpha,
            temperature=cfg.logit_temperature,
        )
        return folder / "adapter"
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "distill.jsonl"
    to_chat_jsonl(examples, data)

    def on_event(event: Any) -> None:
        info = {"student": name, "train_loss": event.train_loss}
        hooks.progress("train", event.step, event.total_steps, info)

    result = train(
        TrainConfig(
            model=cfg.target,
            data=str(data),
            data_format="chat",
            output_dir=str(folder),
            quantization=cfg.quantization,  # type: ignore[arg-type]
            target_modules=cfg.target_modules,
            lora_r=cfg.lora_r,
            lora_alpha=2 * cfg.lora_r,
            learning_rate=cfg.learning_rate,
            epochs=cfg.epochs,
            max_steps=cfg.max_steps,
            batch_size=cfg.batch_size,
            max_length=cfg.max_length,
            val_fraction=0.0,  # no real data to validate on; the report evaluates
            seed=cfg.seed,
        ),
        callback=on_event,
        should_stop=hooks.should_stop,
    )
    if result.status == "cancelled":
        raise TransferStopped(f"train_{name}", {})
    return folder / "adapter"


def transfer(
    cfg: TransferConfig,
    log: Callable[[str], None] | None = None,
    hooks: Hooks | None = None,
) -> dict[str, Any]:
    """Run every phase; write `<output_dir>/report.json` and return the report.
    `log` hears each phase's start and duration; `hooks` see progress and may stop it."""
    from finetune_core.infer import load_chat_model

    cfg.validate()
    hooks = hooks or Hooks()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    run = Path(cfg.run)
    source = run_config(run)["model"]
    source_adapter = cfg.adapter or str(run_adapter(run))
    teacher_of = (source, source_adapter)
    if cfg.distillation == "logits":
        from finetune_core.transfer.distill import shares_tokenizer

        if not shares_tokenizer(source, cfg.target):  # say so before hours of sampling
            raise FinetuneError(
                f"logit distillation needs one tokenizer: {source} and {cfg.target} have "
                "different vocabularies; use sequence-level distillation"
            )
    seeds = load_seeds(run / "transfer")
    seed_inputs = [task_input(s) for s in seeds]
    held_out = eval_examples(cfg)
    need_unfiltered = not cfg.filtered or "unfiltered" in cfg.ablations
    times: dict[str, float] = {}
    accuracy: dict[str, Any] = {}
    partial: dict[str, Any] = {"phase_seconds": times, "accuracy": accuracy}
    quant = cfg.quantization

    def stop_if_asked(phase: str) -> None:
        if hooks.should_stop():
            _write_json(out / "partial.json", partial)
            raise TransferStopped(phase, partial)

    def scorer(name: str) -> Callable[[int, int], None]:
        return lambda done, total: hooks.progress("evaluate", done, total, {"model": name})

    def sample(chat: Any, discriminator: Any, seed: int, key: str) -> SamplingResult:
        def on_batch(result: SamplingResult) -> None:
            partial[key] = result.to_dict()
            info = {"accepted": len(result.accepted), "wanted": cfg.n_synthetic, "key": key}
            hooks.progress("generate", result.attempts, result.budget, info)

        budget = cfg.max_attempts if cfg.max_attempts is not None else 4 * cfg.n_synthetic
        info = {"accepted": 0, "wanted": cfg.n_synthetic, "key": key}
        hooks.progress("generate", 0, budget, info)  # shown as started before the first batch
        result = synthesize(
            chat,
            seed_inputs,
            cfg.n_synthetic,
            discriminator=discriminator,
            shots=len(seed_inputs),
            max_attempts=cfg.max_attempts,
            batch_size=cfg.sample_batch,
            max_new_tokens=cfg.sample_max_new_tokens,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            seed=seed,
            on_batch=on_batch,
            should_stop=hooks.should_stop,
        )
        partial[key] = result.to_dict()
        _write_json(out / f"{key}.json", {"accepted": result.accepted, **result.to_dict()})
        if result.stopped:
            stop_if_asked(key)
        return result

    # 1. The target writes candidates; the discriminator (on the source base) filters.
    try:
        target_chat = load_chat_model(cfg.target, quantization=quant)
    except FinetuneError:
        raise
    except Exception as exc:  # a model that does not load as a causal LM cannot write inputs
        raise FinetuneError(
            f"the target model {cfg.target} cannot generate: it does not load as a text "
            f"generation model ({type(exc).__name__}: {str(exc)[:300]})"
        ) from exc
    filtered = unfiltered = None
    if cfg.filtered:
        with _phase(times, "synthesize", log):
            disc = load_discriminator(run / "discriminator", quantization=quant)
            filtered = sample(target_chat, disc, cfg.seed, "synthesis")
            del disc
    if need_unfiltered:
        with _phase(times, "synthesize_unfiltered", log):
            key = "synthesis_unfiltered" if cfg.filtered else "synthesis"
            unfiltered = sample(target_chat, None, cfg.seed + 1, key)
    main = filtered if cfg.filtered else unfiltered
    assert main is not None
    if not main.accepted:
        raise FinetuneError(no_accepted_message(main, cfg.target))
    stop_if_asked("evaluate")
    with _phase(times, "eval_target_base", log):
        accuracy["target_base"] = evaluate_chat(
            target_chat,
            held_out,
            max_new_tokens=cfg.eval_max_new_tokens,
            on_batch=scorer("target_base"),
        )
        del target_chat

    # 2. The teacher (source base + adapter) answers; it is evaluated while loaded.
    stop_if_asked("teacher")
    with _phase(times, "teacher", log):
        teacher = load_chat_model(source, adapter=source_adapter, quantization=quant)
        try:
            answers = teacher_answers(
                teacher, main.accepted, cfg.teacher_max_new_tokens, hooks=hooks
            )
            extra = []
            if cfg.filtered and unfiltered is not None:
                extra = teacher_answers(
                    teacher, unfiltered.accepted, cfg.teacher_max_new_tokens, hooks=hooks
                )
        except TransferStopped as stopped:
            partial.update(stopped.partial)
            stop_if_asked("teacher")
            raise
    with _phase(times, "eval_source", log):
        accuracy["source_adapter"] = evaluate_chat(
            teacher,
            held_out,
            max_new_tokens=cfg.eval_max_new_tokens,
            on_batch=scorer("source_adapter"),
        )
        del teacher

    # 3. Students on the target, then their evaluation.
    kept = seeds if cfg.include_seeds else []
    students = {"transferred": distillation_examples(main.accepted, answers, kept)}
    if cfg.filtered and unfiltered is not None:
        students["ablation_unfiltered"] = distillation_examples(unfiltered.accepted, extra, kept)
    if "seeds_only" in cfg.ablations:
        students["ablation_seeds_only"] = list(seeds)
    pairs = students["transferred"]
    partial["distillation_pairs"] = len(pairs)
    partial["sample_pairs"] = [
        {"input": e.messages[0].content, "teacher": e.messages[1].content} for e in pairs[:5]
    ]
    adapters: dict[str, str] = {}
    partial["adapters"] = adapters
    for name, examples in students.items():
        stop_if_asked(f"train_{name}")
        with _phase(times, f"train_{name}", log):
            try:
                adapters[name] = str(
                    _train_student(cfg, examples, out / name, hooks, name, teacher_of)
                )
            except TransferStopped:
                stop_if_asked(f"train_{name}")
                raise
        with _phase(times, f"eval_{name}", log):
            chat = load_chat_model(cfg.target, adapter=adapters[name], quantization=quant)
            accuracy[name] = evaluate_chat(
                chat, held_out, max_new_tokens=cfg.eval_max_new_tokens, on_batch=scorer(name)
            )
            del chat

    report = {
        "source_model": source,
        "source_adapter": source_adapter,
        "target_model": cfg.target,
        "task": read_info(run / "discriminator")["task"] if cfg.filtered else None,
        "adapter": adapters["transferred"],
        "adapters": adapters,
        "accuracy": {k: accuracy[k] for k in ORDER if k in accuracy},
        "synthesis": main.to_dict(),
        "synthesis_unfiltered": unfiltered.to_dict() if unfiltered and cfg.filtered else None,
        "distillation_pairs": len(pairs),
        "sample_pairs": partial["sample_pairs"],
        "seeds": seed_inputs,
        "eval_examples": len(held_out),
        "phase_seconds": times,
        "config": asdict(cfg),
    }
    _write_json(out / "report.json", report)
    return report


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False))


__all__ = [
    "ABLATIONS",
    "Hooks",
    "TransferConfig",
    "TransferStopped",
    "format_table",
    "transfer",
]
