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
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from finetune_core.contracts.layout import DISCRIMINATOR_DIR, SEEDS_DIR, TRANSFER_REPORT
from finetune_core.data import Example
from finetune_core.errors import FinetuneError
from finetune_core.transfer.config import (
    ABLATIONS,
    ORDER,
    TransferConfig,
    eval_examples,
    filter_rule,
)
from finetune_core.transfer.discriminator import load_discriminator, read_info
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
from finetune_core.transfer.source import run_adapter, run_config
from finetune_core.transfer.student import (
    answer_confidence,
    confident_pairs,
    teacher_answers,
    teacher_filter,
    train_student,
    with_source_shape,
)


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
    run = TransferRun(cfg, log, hooks or Hooks(), resume)

    # 1. The target writes candidates; the discriminator (on the source base) filters.
    main, unfiltered = run.synthesize()
    run.stop_if_asked("evaluate")
    run.evaluate("target_base", run.models.target)
    run.models.drop_target()

    # 2. The teacher (source base + adapter) answers; it is evaluated while loaded.
    run.stop_if_asked("teacher")
    answers, extra, confidence = run.answer(main, unfiltered)
    run.evaluate("source_adapter", run.models.teacher)
    run.models.drop_teacher()

    # 3. Students on the target, then their evaluation.
    students = run.students(main, unfiltered, answers, extra, confidence)
    adapters = run.train(students)
    return run.report(main, unfiltered, adapters)


class TransferRun:
    """One transfer's state between its phases: what is saved for a resume, the phase
    times, the accuracies, and what a stop hands back as done so far."""

    def __init__(
        self, cfg: TransferConfig, log: Callable[[str], None] | None, hooks: Hooks, resume: bool
    ) -> None:
        self.out = Path(cfg.output_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.path = Path(cfg.run)
        source_config = run_config(self.path)
        self.cfg = cfg = with_source_shape(cfg, source_config)
        self.source = source_config["model"]
        self.source_adapter = cfg.adapter or str(run_adapter(self.path))
        if cfg.distillation == "logits":
            from finetune_core.transfer.distill import shares_tokenizer

            if not shares_tokenizer(self.source, cfg.target):  # before hours of sampling
                raise FinetuneError(
                    f"logit distillation needs one tokenizer: {self.source} and {cfg.target} "
                    "have different vocabularies; use sequence-level distillation"
                )
        self.seeds = load_seeds(self.path / SEEDS_DIR)
        self.seed_inputs = [task_input(s) for s in self.seeds]
        self.held_out = eval_examples(cfg)
        self.log, self.hooks = log, hooks
        settings = {k: v for k, v in asdict(cfg).items() if k != "output_dir"}
        self.saved = Saved(self.out, settings, resume)
        self.times: dict[str, float] = self.saved.times()
        self.accuracy: dict[str, Any] = self.saved.accuracy()
        self.partial: dict[str, Any] = {"phase_seconds": self.times, "accuracy": self.accuracy}
        self.models = Models(cfg, self.source, self.source_adapter)

    def phase(self, name: str) -> Any:
        return timed_phase(self.times, name, self.log, on_end=self.saved.save_times)

    def stop_if_asked(self, phase: str) -> None:
        if self.hooks.should_stop():
            write_json(self.out / "partial.json", self.partial)
            raise TransferStopped(phase, self.partial)

    def evaluate(self, name: str, chat: Callable[[], Any]) -> None:
        n = len(self.held_out)
        if name in self.accuracy:  # an earlier attempt scored it
            self.saved.reused.append(f"eval_{name}")
            self.hooks.progress("evaluate", n, n, {"model": name})
            return
        with self.phase(f"eval_{name}"):
            self.accuracy[name] = evaluate_chat(
                chat(),
                self.held_out,
                max_new_tokens=self.cfg.eval_max_new_tokens,
                on_batch=lambda done, total: self.hooks.progress(
                    "evaluate", done, total, {"model": name}
                ),
            )
        self.saved.save_accuracy(self.accuracy)

    def synthesize(self) -> tuple[SamplingResult, SamplingResult | None]:
        """The main run's synthetic inputs, and the unfiltered ablation's when asked."""
        cfg, filtered, unfiltered = self.cfg, None, None
        if cfg.filtered:
            with self.phase("synthesize"):
                filtered = self.sample(
                    lambda: load_discriminator(
                        self.path / DISCRIMINATOR_DIR,
                        quantization=cfg.quantization,
                        real_recall=cfg.real_recall,
                    ),
                    cfg.seed,
                    "synthesis",
                )
        if not cfg.filtered or "unfiltered" in cfg.ablations:
            with self.phase("synthesize_unfiltered"):
                key = "synthesis_unfiltered" if cfg.filtered else "synthesis"
                unfiltered = self.sample(None, cfg.seed + 1, key)
        main = filtered if cfg.filtered else unfiltered
        assert main is not None
        if not main.accepted:
            raise FinetuneError(no_accepted_message(main, cfg.target))
        return main, unfiltered if cfg.filtered else None

    def sample(self, discriminator: Any, seed: int, key: str) -> SamplingResult:
        cfg, saved = self.cfg, self.saved

        def report(result: SamplingResult) -> None:
            self.partial[key] = result.to_dict()
            info = {"accepted": len(result.accepted), "wanted": cfg.n_synthetic, "key": key}
            self.hooks.progress("generate", result.attempts, result.budget, info)

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
        self.hooks.progress("generate", done, budget, info | {"key": key})  # before a batch
        target = self.models.target()
        result = synthesize(
            target,
            self.seed_inputs,
            cfg.n_synthetic,
            discriminator=discriminator() if discriminator else None,
            shots=len(self.seed_inputs),
            max_attempts=cfg.max_attempts,
            batch_size=cfg.sample_batch,
            max_new_tokens=cfg.sample_max_new_tokens
            or item_token_budget(target.tokenizer, self.seed_inputs),
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            seed=seed,
            on_batch=on_batch,
            should_stop=self.hooks.should_stop,
            start=earlier,
        )
        self.partial[key] = result.to_dict()
        saved.save_sampling(key, result)
        if result.stopped:
            self.stop_if_asked(key)
        return result

    def answer(
        self, main: SamplingResult, unfiltered: SamplingResult | None
    ) -> tuple[list[str], list[str], dict[str, list[float]]]:
        """The teacher's answers to the main and the unfiltered inputs, and how sure it was
        of each (measured while it wrote them)."""
        cfg, saved = self.cfg, self.saved
        answered = saved.teacher()
        if answered is not None:
            saved.reused.append("teacher")
            answers, extra = answered
            confidence = saved.confidence()
            self.hooks.progress("teacher", len(answers), len(answers), {})
        else:
            with self.phase("teacher"):
                answers, extra, confidence = self.teacher_answers(main, unfiltered)
            saved.save_teacher(answers, extra, confidence)
        if confidence is None and cfg.teacher_keep < 1:
            # Answers saved before the teacher measured its confidence while writing.
            with self.phase("teacher_confidence"):
                teacher = self.models.teacher()
                confidence = {
                    "main": answer_confidence(teacher, main.accepted, answers, hooks=self.hooks),
                    "extra": answer_confidence(
                        teacher, unfiltered.accepted, extra, hooks=self.hooks
                    )
                    if extra and unfiltered is not None
                    else [],
                }
            saved.save_confidence(confidence)
        # With the teacher filter off, the confidences are never read.
        confidence = confidence or {"main": [0.0] * len(answers), "extra": [0.0] * len(extra)}
        return answers, extra, confidence

    def teacher_answers(
        self, main: SamplingResult, unfiltered: SamplingResult | None
    ) -> tuple[list[str], list[str], dict[str, list[float]]]:
        limit, hooks = self.cfg.teacher_max_new_tokens, self.hooks
        try:
            answers, sure = teacher_answers(
                self.models.teacher(), main.accepted, limit, hooks=hooks
            )
            extra, extra_sure = [], []
            if unfiltered is not None:
                extra, extra_sure = teacher_answers(
                    self.models.teacher(), unfiltered.accepted, limit, hooks=hooks
                )
        except TransferStopped as stopped:
            self.partial.update(stopped.partial)
            self.stop_if_asked("teacher")
            raise
        return answers, extra, {"main": sure, "extra": extra_sure}

    def students(
        self,
        main: SamplingResult,
        unfiltered: SamplingResult | None,
        answers: list[str],
        extra: list[str],
        confidence: dict[str, list[float]],
    ) -> dict[str, list[Example]]:
        """Each student's distillation set: the transferred one, then the ablations."""
        cfg, keep = self.cfg, self.cfg.teacher_keep
        kept = self.seeds if cfg.include_seeds else []
        pairs = confident_pairs(main.accepted, answers, confidence["main"], keep, kept)
        students = {"transferred": pairs}
        if unfiltered is not None:
            students["ablation_unfiltered"] = confident_pairs(
                unfiltered.accepted, extra, confidence["extra"], keep, kept
            )
        if "seeds_only" in cfg.ablations:
            students["ablation_seeds_only"] = list(self.seeds)
        self.partial["distillation_pairs"] = len(pairs)
        self.partial["teacher_filter"] = teacher_filter(
            main.accepted, answers, confidence["main"], keep
        )
        self.partial["sample_pairs"] = [
            {"input": e.messages[0].content, "teacher": e.messages[1].content} for e in pairs[:5]
        ]
        return students

    def train(self, students: dict[str, list[Example]]) -> dict[str, str]:
        """Train (or reuse) each student on the target and score it; its adapter paths."""
        adapters: dict[str, str] = {}
        self.partial["adapters"] = adapters
        teacher_of = (self.source, self.source_adapter)
        for name, examples in students.items():
            self.stop_if_asked(f"train_{name}")
            done = self.saved.student(name)
            if done is not None:
                self.saved.reused.append(f"train_{name}")
                adapters[name] = str(done)
                self.hooks.progress("train", 1, 1, {"student": name})
            else:
                with self.phase(f"train_{name}"):
                    try:
                        adapters[name] = str(
                            train_student(
                                self.cfg,
                                examples,
                                self.out / name,
                                self.hooks,
                                name,
                                teacher_of,
                                resume=self.saved.student_started(name),
                            )
                        )
                    except TransferStopped:
                        self.stop_if_asked(f"train_{name}")
                        raise
            self.evaluate(name, lambda a=adapters[name]: self.models.student(a))
        return adapters

    def report(
        self, main: SamplingResult, unfiltered: SamplingResult | None, adapters: dict[str, str]
    ) -> dict[str, Any]:
        cfg, partial = self.cfg, self.partial
        report = {
            "source_model": self.source,
            "source_adapter": self.source_adapter,
            "target_model": cfg.target,
            "task": read_info(self.path / DISCRIMINATOR_DIR)["task"] if cfg.filtered else None,
            "adapter": adapters["transferred"],
            "adapters": adapters,
            "accuracy": {k: self.accuracy[k] for k in ORDER if k in self.accuracy},
            "synthesis": main.to_dict() | {"filter": filter_rule(self.path, cfg)},
            "synthesis_unfiltered": unfiltered.to_dict() if unfiltered else None,
            "distillation_pairs": partial["distillation_pairs"],
            "teacher_filter": partial["teacher_filter"],
            "sample_pairs": partial["sample_pairs"],
            "seeds": self.seed_inputs,
            "eval_examples": len(self.held_out),
            "phase_seconds": self.times,
            "attempts": self.saved.attempts,
            "reused": self.saved.reused,
            "config": asdict(cfg),
        }
        write_json(self.out / TRANSFER_REPORT, report)
        return report


__all__ = [
    "ABLATIONS",
    "Hooks",
    "TransferConfig",
    "TransferStopped",
    "format_table",
    "transfer",
]
