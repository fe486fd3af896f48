"""Calls into finetune_core. Imported only by workers; finetune_core (and torch behind it)
is imported inside each function, so merely loading the task modules stays cheap."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from finetune_core.contracts.hooks import Hooks

PREVIEW_ROWS = 5
PREVIEW_CHARS = 600
# Without a model's tokenizer, English BPE text averages about 4 characters per token.
CHARS_PER_TOKEN = 4.0


def device_kind() -> str:
    """The device this worker trains on, as the engine picks it: "cuda" or "cpu"."""
    from finetune_core.models.loading import default_device

    return default_device().type


def _is_pair(example: Any) -> bool:
    """A preference pair (finetune_core's PreferenceExample), without importing the engine."""
    return hasattr(example, "rejected")


def _approx_tokens(chars: int) -> int:
    """Estimated tokens of a text `chars` characters long."""
    return math.ceil(chars / CHARS_PER_TOKEN)


def _approx(lengths: list[int]) -> dict[str, Any]:
    """Estimated tokens of texts `lengths` characters long: min, median, p95, max, total."""
    tokens = sorted(_approx_tokens(n) for n in lengths)
    return {
        "min": tokens[0],
        "median": int(statistics.median(tokens)),
        "p95": tokens[math.ceil(0.95 * len(tokens)) - 1],
        "max": tokens[-1],
        "total": sum(tokens),
    }


def _char_stats(examples: list[Any]) -> dict[str, Any]:
    """Estimated token statistics; preference pairs' prompt and answers apart too, as the
    engine's exact statistics have them."""
    from finetune_core.data.stats import split_lengths

    if not examples:
        return {"rows": 0}
    chars = [sum(len(m.content) for m in e.messages) for e in examples]
    stats = {
        "rows": len(examples),
        "approx_tokens": _approx(chars),
        "chars_per_token": CHARS_PER_TOKEN,
        "split_lengths": split_lengths(examples, [_approx_tokens(n) for n in chars]),
    }
    if _is_pair(examples[0]):
        prompts = [sum(len(m.content) for m in e.prompt) for e in examples]
        stats["prompt_tokens"] = _approx(prompts)
        stats["chosen_tokens"] = _approx([len(e.chosen.content) for e in examples])
        stats["rejected_tokens"] = _approx([len(e.rejected.content) for e in examples])
    return stats


def _preview_row(example: Any) -> dict[str, Any]:
    """An example's first characters; a preference pair's non-preferred answer beside it."""
    row: dict[str, Any] = {
        "line": example.line,
        "messages": [_shown(m) for m in example.messages],
    }
    if _is_pair(example):
        row["rejected"] = _shown(example.rejected)
    return row


def _shown(m: Any) -> dict[str, Any]:
    return {"role": m.role, "content": m.content[:PREVIEW_CHARS], "weight": m.weight}


def _template_segments(tokenizer: Any, messages: list[Any]) -> list[dict[str, Any]]:
    """The conversation as the chat template renders it, cut into template text and each
    message's content, so the page can show which part is which."""
    rendered = tokenizer.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in messages], tokenize=False
    )
    segments: list[dict[str, Any]] = []
    cursor = 0
    for m in messages:
        at = rendered.find(m.content, cursor) if m.content else -1
        if at < 0:
            continue  # the template rewrote this content; it stays inside template text
        if at > cursor:
            segments.append({"role": "template", "text": rendered[cursor:at]})
        text = m.content if len(m.content) <= PREVIEW_CHARS else m.content[:PREVIEW_CHARS] + "…"
        segments.append({"role": m.role, "text": text, "weight": m.weight})
        cursor = at + len(m.content)
    if cursor < len(rendered):
        segments.append({"role": "template", "text": rendered[cursor:]})
    return segments


def _model_view(examples: list[Any], model: str, preview: list[dict[str, Any]]) -> dict[str, Any]:
    """Exact token statistics and the templated preview under the chosen base model."""
    from finetune_core.data.stats import dataset_stats
    from finetune_core.models.loading import load_tokenizer
    from finetune_core.train.config import TrainConfig

    tokenizer = load_tokenizer(model)
    stats = dataset_stats(examples, tokenizer, TrainConfig.max_length)
    for row, example in zip(preview, examples, strict=False):
        row["segments"] = _template_segments(tokenizer, list(example.messages))
        if _is_pair(example):  # both answers, each after the prompt
            rejected = [*example.prompt, example.rejected]
            row["rejected_segments"] = _template_segments(tokenizer, rejected)
    return {**stats, "model": model}


def validate_dataset_file(path: str, *, fmt: str | None = None, model: str = "") -> dict[str, Any]:
    """The validation report, a preview of the first rows and token statistics: exact under
    `model`'s tokenizer and chat template when one is given, estimated otherwise."""
    from finetune_core.data import read_examples, validate_file

    report = validate_file(path, fmt=fmt or None)
    result = dict(report.to_dict())
    result.setdefault("ok", bool(report.ok))
    result.setdefault("n_examples", report.n_examples)
    result.setdefault("format", report.format)
    if report.ok:
        examples = list(read_examples(path, fmt=report.format))  # read once, used twice
        preview = [_preview_row(e) for e in examples[:PREVIEW_ROWS]]
        result["preview"] = preview
        result["stats"] = _char_stats(examples)
        if model:
            try:
                result["stats"] = _model_view(examples, model, preview)
            except Exception as exc:  # noqa: BLE001 - the estimate still serves; say why
                result["stats"]["note"] = f"Exact counts under {model} failed: {exc}"
    return result


def checkpoint_steps(output_dir: Path) -> list[int]:
    """Steps of the complete checkpoints in a run's folder (empty for a fresh run)."""
    from finetune_core.train.checkpoint import list_checkpoints

    if not output_dir.exists():
        return []
    return [int(p.name.rsplit("-", 1)[-1]) for p in list_checkpoints(output_dir)]


def train(config: dict[str, Any], *, hooks: Hooks, resume: bool) -> dict[str, Any]:
    """Train; raises finetune_core's FinetuneError (a message for the user) on bad input.
    `hooks` hear progress("train", step, total, the event's dict) and stop it."""
    from finetune_core.train import TrainConfig
    from finetune_core.train import train as run_training

    cfg = TrainConfig(**config)
    cfg.validate()
    result = run_training(cfg, hooks=hooks, resume=resume)
    return {
        "status": result.status,
        "output_dir": str(result.output_dir),
        "steps": result.steps,
        "total_steps": result.total_steps,
        "train_loss": result.train_loss,
        "best_val_loss": result.best_val_loss,
        "best_step": result.best_step,
        "history": list(result.history),
    }


def is_user_error(exc: BaseException) -> bool:
    from finetune_core.errors import FinetuneError

    return isinstance(exc, FinetuneError)


def disk_full(exc: BaseException) -> bool:
    """The engine's DiskFull, or any write refused for want of space (ENOSPC, EDQUOT)."""
    from finetune_core.train.checkpoint import disk_full_errno

    return getattr(exc, "code", None) == "disk_full" or disk_full_errno(exc) is not None


def select_final(output_dir: str, which: str) -> str:
    from finetune_core.train.outputs import select_final as choose

    return str(choose(output_dir, which))


def generate_one(
    *,
    model: str,
    adapter: str | None,
    quantization: str,
    messages: list[dict[str, str]],
    max_new_tokens: int,
    temperature: float,
    on_text: Callable[[str], None],
    top_p: float = 1.0,
    seed: int | None = None,
    stop: list[str] | None = None,
) -> dict[str, Any]:
    """One answer from the base model, or base + adapter (its storage key), using the
    worker's model cache."""
    from finetune_core.infer import generate
    from workers.model_cache import CACHE
    from workers.workspace import local_copy

    folder = str(local_copy(adapter)) if adapter else None
    with CACHE.use(model, quantization=quantization, adapter=folder) as chat:
        (out,) = generate(
            chat,
            [messages],
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            stop=stop or (),
            on_text=lambda _row, delta: on_text(delta),
        )
    return {
        "text": out.text,
        "prompt_tokens": out.prompt_tokens,
        "completion_tokens": out.completion_tokens,
        "finish_reason": out.finish_reason,
    }


def run_cell(kind: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """Kinds without their own runner (fine-tune and playground have one)."""
    raise NotImplementedError(f"Running {kind} cells is not available yet.")
