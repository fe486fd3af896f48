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

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from finetune_core.data import Example, read_examples
from finetune_core.errors import FinetuneError
from finetune_core.transfer.discriminator import (
    calibration_margins,
    check_real_recall,
    filter_threshold,
    load_discriminator,
    read_info,
)
from finetune_core.transfer.hooks import Hooks, TransferStopped
from finetune_core.transfer.phases import Models, timed_phase
from finetune_core.transfer.report import evaluate_chat, format_table
from finetune_core.transfer.resume import Saved, write_json
from finetune_core.transfer.sampling import (
    SamplingResult,
    item_token_budget,
    no_accepted_message,
    synthesize,
)
from finetune_core.transfer.seeds import load_seeds, task_input
from finetune_core.transfer.source import run_adapter, run_config, run_splits
from finetune_core.transfer.student import (
    answer_confidence,
    confident_pairs,
    teacher_answers,
    teacher_filter,
    train_student,
    with_source_shape,
)

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
    # A stricter filter than p(yes) > p(no): accept only candidates scoring above what this
    # share of held-out real inputs scored when the discriminator was trained (e.g. 0.9).
    real_recall: float | None = None
    ablations: tuple[str, ...] = ()  # extra students: "unfiltered", "seeds_only"
    temperature: float = 1.0
    top_p: float = 0.95
    sample_batch: int = 8
    # Tokens per synthetic input; None: twice the longest seed's (item_token_budget).
    sample_max_new_tokens: int | None = None
    teacher_max_new_tokens: int = 64
    include_seeds: bool = True  # the seeds (real answers) join the distillation set
    # Distil only this share of the teacher's answers, those it is surest of (1.0: all, as
    # the paper does); its wrong answers are mostly its least sure (transfer/README.md).
    teacher_keep: float = 1.0
    # "sequence": train on the teacher's text (any tokenizers); "logits": also match the
    # teacher's top-k token distributions (KL), only when source and target share one.
    distillation: str = "sequence"
    logit_alpha: float = 0.5
    logit_temperature: float = 2.0
    # Student. Rank and targets left None take the source adapter's own: the paper's q, v
    # at rank 8 left the student far under the source (bench-transfer; transfer/README.md).
    epochs: int = 12
    max_steps: int | None = None
    learning_rate: float = 5e-4
    lora_r: int | None = None
    target_modules: list[str] | str | None = None
    # Small: short examples pack many to a 256-token row, and the optimizer needs the steps.
    batch_size: int = 2
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
        check_real_recall(self.real_recall)
        if not 0 < self.teacher_keep <= 1:
            raise FinetuneError(f"teacher_keep is a share in (0, 1], got {self.teacher_keep}")
        if not self.temperature > 0:
            raise FinetuneError("sampling needs temperature > 0")
        if self.distillation not in ("sequence", "logits"):
            raise FinetuneError(
                f"distillation must be sequence or logits, not {self.distillation!r}"
            )


def eval_examples(cfg: TransferConfig) -> list[Example]:
    if cfg.eval_data:
        examples = list(read_examples(cfg.eval_data))
    else:
        examples = run_splits(cfg.run)[1]
    if not examples:
        raise FinetuneError("no held-out examples to evaluate on: give an eval file")
    return examples[: cfg.eval_limit] if cfg.eval_limit else examples


def transfer(
    cfg: TransferConfig,
    log: Callable[[str], None] | None = None,
    hooks: Hooks | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Run every phase; write `<output_dir>/report.json` and return the report.
    `log` hears each phase's start and duration; `hooks` see progress and may stop it.
    `resume` reuses what an earlier attempt in `output_dir` finished (resume.py)."""
    cfg.validate()
    hooks = hooks or Hooks()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    run = Path(cfg.run)
    source_config = run_config(run)
    cfg = with_source_shape(cfg, source_config)
    source = source_config["model"]
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
    settings = {k: v for k, v in asdict(cfg).items() if k != "output_dir"}
    saved = Saved(out, settings, resume)
    times: dict[str, float] = saved.times()
    accuracy: dict[str, Any] = saved.accuracy()
    partial: dict[str, Any] = {"phase_seconds": times, "accuracy": accuracy}
    quant = cfg.quantization
    models = Models(cfg, source, source_adapter)

    def phase(name: str) -> Any:
        return timed_phase(times, name, log, on_end=saved.save_times)

    def stop_if_asked(phase: str) -> None:
        if hooks.should_stop():
            write_json(out / "partial.json", partial)
            raise TransferStopped(phase, partial)

    def evaluate(name: str, chat: Callable[[], Any]) -> None:
        if name in accuracy:  # an earlier attempt scored it
            saved.reused.append(f"eval_{name}")
            n = len(held_out)
            hooks.progress("evaluate", n, n, {"model": name})
            return
        with phase(f"eval_{name}"):
            accuracy[name] = evaluate_chat(
                chat(),
                held_out,
                max_new_tokens=cfg.eval_max_new_tokens,
                on_batch=lambda done, total: hooks.progress(
                    "evaluate", done, total, {"model": name}
                ),
            )
        saved.save_accuracy(accuracy)

    def sample(discriminator: Any, seed: int, key: str) -> SamplingResult:
        def report(result: SamplingResult) -> None:
            partial[key] = result.to_dict()
            info = {"accepted": len(result.accepted), "wanted": cfg.n_synthetic, "key": key}
            hooks.progress("generate", result.attempts, result.budget, info)

        def on_batch(result: SamplingResult) -> None:
            # Saved as stopped after each batch: after a crash, a resume continues from here.
            saved.save_sampling(key, replace(result, stopped=True))
            report(result)

        earlier = saved.sampling(key)
        if earlier is not None and not earlier.stopped:
            saved.reused.append(key)
            report(earlier)
            return earlier
        budget = cfg.max_attempts if cfg.max_attempts is not None else 4 * cfg.n_synthetic
        done = earlier.attempts if earlier else 0  # a stopped attempt's samples count
        info = {"accepted": len(earlier.accepted) if earlier else 0, "wanted": cfg.n_synthetic}
        hooks.progress("generate", done, budget, info | {"key": key})  # started, before a batch
        target = models.target()
        result = synthesize(
            target,
            seed_inputs,
            cfg.n_synthetic,
            discriminator=discriminator() if discriminator else None,
            shots=len(seed_inputs),
            max_attempts=cfg.max_attempts,
            batch_size=cfg.sample_batch,
            max_new_tokens=cfg.sample_max_new_tokens
            or item_token_budget(target.tokenizer, seed_inputs),
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            seed=seed,
            on_batch=on_batch,
            should_stop=hooks.should_stop,
            start=earlier,
        )
        partial[key] = result.to_dict()
        saved.save_sampling(key, result)
        if result.stopped:
            stop_if_asked(key)
        return result

    # 1. The target writes candidates; the discriminator (on the source base) filters.
    filtered = unfiltered = None
    if cfg.filtered:
        with phase("synthesize"):
            filtered = sample(
                lambda: load_discriminator(
                    run / "discriminator", quantization=quant, real_recall=cfg.real_recall
                ),
                cfg.seed,
                "synthesis",
            )
    if need_unfiltered:
        with phase("synthesize_unfiltered"):
            key = "synthesis_unfiltered" if cfg.filtered else "synthesis"
            unfiltered = sample(None, cfg.seed + 1, key)
    main = filtered if cfg.filtered else unfiltered
    assert main is not None
    if not main.accepted:
        raise FinetuneError(no_accepted_message(main, cfg.target))
    stop_if_asked("evaluate")
    evaluate("target_base", models.target)
    models.drop_target()

    # 2. The teacher (source base + adapter) answers; it is evaluated while loaded.
    stop_if_asked("teacher")
    answered = saved.teacher()
    if answered is not None:
        saved.reused.append("teacher")
        answers, extra = answered
        confidence = saved.confidence()
        hooks.progress("teacher", len(answers), len(answers), {})
    else:
        with phase("teacher"):
            try:
                answers, sure = teacher_answers(
                    models.teacher(), main.accepted, cfg.teacher_max_new_tokens, hooks=hooks
                )
                extra, extra_sure = [], []
                if cfg.filtered and unfiltered is not None:
                    extra, extra_sure = teacher_answers(
                        models.teacher(),
                        unfiltered.accepted,
                        cfg.teacher_max_new_tokens,
                        hooks=hooks,
                    )
            except TransferStopped as stopped:
                partial.update(stopped.partial)
                stop_if_asked("teacher")
                raise
        confidence = {"main": sure, "extra": extra_sure}
        saved.save_teacher(answers, extra, confidence)
    if confidence is None and cfg.teacher_keep < 1:
        # Answers saved before the teacher measured its confidence while writing.
        with phase("teacher_confidence"):
            teacher = models.teacher()
            confidence = {
                "main": answer_confidence(teacher, main.accepted, answers, hooks=hooks),
                "extra": answer_confidence(teacher, unfiltered.accepted, extra, hooks=hooks)
                if extra and unfiltered is not None
                else [],
            }
        saved.save_confidence(confidence)
    confidence = confidence or {"main": [0.0] * len(answers), "extra": [0.0] * len(extra)}
    evaluate("source_adapter", models.teacher)
    models.drop_teacher()

    # 3. Students on the target, then their evaluation.
    kept = seeds if cfg.include_seeds else []
    keep = cfg.teacher_keep
    students = {
        "transferred": confident_pairs(main.accepted, answers, confidence["main"], keep, kept)
    }
    if cfg.filtered and unfiltered is not None:
        students["ablation_unfiltered"] = confident_pairs(
            unfiltered.accepted, extra, confidence["extra"], keep, kept
        )
    if "seeds_only" in cfg.ablations:
        students["ablation_seeds_only"] = list(seeds)
    pairs = students["transferred"]
    partial["distillation_pairs"] = len(pairs)
    partial["teacher_filter"] = teacher_filter(main.accepted, answers, confidence["main"], keep)
    partial["sample_pairs"] = [
        {"input": e.messages[0].content, "teacher": e.messages[1].content} for e in pairs[:5]
    ]
    adapters: dict[str, str] = {}
    partial["adapters"] = adapters
    for name, examples in students.items():
        stop_if_asked(f"train_{name}")
        done = saved.student(name)
        if done is not None:
            saved.reused.append(f"train_{name}")
            adapters[name] = str(done)
            hooks.progress("train", 1, 1, {"student": name})
        else:
            with phase(f"train_{name}"):
                try:
                    adapters[name] = str(
                        train_student(
                            cfg,
                            examples,
                            out / name,
                            hooks,
                            name,
                            teacher_of,
                            resume=saved.student_started(name),
                        )
                    )
                except TransferStopped:
                    stop_if_asked(f"train_{name}")
                    raise
        evaluate(name, lambda a=adapters[name]: models.student(a))

    report = {
        "source_model": source,
        "source_adapter": source_adapter,
        "target_model": cfg.target,
        "task": read_info(run / "discriminator")["task"] if cfg.filtered else None,
        "adapter": adapters["transferred"],
        "adapters": adapters,
        "accuracy": {k: accuracy[k] for k in ORDER if k in accuracy},
        "synthesis": main.to_dict() | {"filter": filter_rule(run, cfg)},
        "synthesis_unfiltered": unfiltered.to_dict() if unfiltered and cfg.filtered else None,
        "distillation_pairs": len(pairs),
        "teacher_filter": partial["teacher_filter"],
        "sample_pairs": partial["sample_pairs"],
        "seeds": seed_inputs,
        "eval_examples": len(held_out),
        "phase_seconds": times,
        "attempts": saved.attempts,
        "reused": saved.reused,
        "config": asdict(cfg),
    }
    write_json(out / "report.json", report)
    return report


def filter_rule(run: Path, cfg: TransferConfig) -> dict[str, Any] | None:
    """What the discriminator accepted: the margin it had to beat, and the share of
    held-out real inputs that beat it."""
    if not cfg.filtered:
        return None
    info = read_info(run / "discriminator")
    margins = calibration_margins(info)
    threshold = filter_threshold(run / "discriminator", info, cfg.real_recall)
    passed = sum(m > threshold for m in margins) / len(margins) if margins else None
    return {"threshold": threshold, "real_recall": cfg.real_recall, "real_passing": passed}


__all__ = [
    "ABLATIONS",
    "Hooks",
    "TransferConfig",
    "TransferStopped",
    "format_table",
    "transfer",
]
