"""The Trans-LoRA discriminator: a LoRA on the source base model that answers "yes" for
real task inputs and "no" for synthetic ones, asked as a chat question.

Training reuses `finetune_core.train.train`: rows are chat examples (user: x + question,
assistant: "yes"/"no") and the loss on assistant tokens is exactly
log p("yes" | x + question) on real inputs and log p("no" | ...) on synthetic ones.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from finetune_core.contracts.layout import ADAPTER
from finetune_core.data import Example, Message, to_chat_jsonl
from finetune_core.data.render import render_prompt
from finetune_core.errors import FinetuneError

if TYPE_CHECKING:
    from finetune_core.infer import ChatModel

QUESTION = "\n Is the above question from {task} dataset?"
INFO_FILE = "discriminator.json"
YES, NO = "yes", "no"


def question_prompt(x: str, task: str) -> str:
    return x + QUESTION.format(task=task)


def discriminator_examples(
    real: Sequence[str], synthetic: Sequence[str], task: str, seed: int = 0
) -> list[Example]:
    """Chat rows for the objective, shuffled so each batch mixes both labels."""
    rows = [(x, YES) for x in real] + [(x, NO) for x in synthetic]
    random.Random(seed).shuffle(rows)
    return [
        Example(
            messages=(
                Message("user", question_prompt(x, task)),
                Message("assistant", label),
            ),
            line=i + 1,
        )
        for i, (x, label) in enumerate(rows)
    ]


def write_discriminator_data(
    real: Sequence[str], synthetic: Sequence[str], task: str, path: str | Path, seed: int = 0
) -> int:
    return to_chat_jsonl(discriminator_examples(real, synthetic, task, seed), path)


def _first_token_ids(tokenizer: Any, word: str) -> set[int]:
    """First token of the answer word as the template renders it and in its spaced and
    capitalised spellings."""
    ids = set()
    for spelling in (word, " " + word, word.capitalize(), " " + word.capitalize()):
        encoded = tokenizer(spelling, add_special_tokens=False)["input_ids"]
        if encoded:
            ids.add(encoded[0])
    return ids


@dataclass
class Discriminator:
    chat: ChatModel
    task: str
    yes_ids: list[int]
    no_ids: list[int]
    batch_size: int = 8
    threshold: float = 0.0  # accept when log p(yes) - log p(no) > threshold

    @classmethod
    def from_chat(cls, chat: ChatModel, task: str) -> Discriminator:
        yes = _first_token_ids(chat.tokenizer, YES)
        no = _first_token_ids(chat.tokenizer, NO)
        shared = yes & no  # a byte tokenizer starts " yes" and " no" with the same space
        yes, no = yes - shared, no - shared
        if not yes or not no:
            raise FinetuneError("the tokenizer cannot tell 'yes' from 'no' by their first token")
        return cls(chat=chat, task=task, yes_ids=sorted(yes), no_ids=sorted(no))

    @torch.no_grad()
    def margins(self, texts: Sequence[str]) -> list[float]:
        """log p(yes) - log p(no) of the next token after each question prompt."""
        tok, out = self.chat.tokenizer, []
        device = next(self.chat.model.parameters()).device
        for start in range(0, len(texts), self.batch_size):
            prompts = [
                render_prompt(tok, [Message("user", question_prompt(x, self.task))])
                for x in texts[start : start + self.batch_size]
            ]
            width = max(len(p) for p in prompts)
            # Right padding keeps positions exact; read each row's last real position.
            ids = torch.tensor([p + [tok.pad_token_id] * (width - len(p)) for p in prompts])
            mask = torch.tensor([[1] * len(p) + [0] * (width - len(p)) for p in prompts])
            ends = [len(p) - 1 for p in prompts]
            # Only the rows' last positions go through the LM head (a fifth of the work on
            # SmolLM2: 49k-word vocabulary); logits come back for those columns alone.
            keep = sorted(set(ends))
            logits = self.chat.model(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                logits_to_keep=torch.tensor(keep, device=device),
            ).logits
            last = logits[torch.arange(len(prompts)), torch.tensor([keep.index(e) for e in ends])]
            last = last.float()
            yes = torch.logsumexp(last[:, self.yes_ids], dim=-1)
            no = torch.logsumexp(last[:, self.no_ids], dim=-1)
            out += (yes - no).tolist()
        return out

    def accepts(self, texts: Sequence[str]) -> list[bool]:
        return [m > self.threshold for m in self.margins(texts)]


def check_real_recall(recall: float | None) -> None:
    if recall is not None and not 0 < recall <= 1:
        raise FinetuneError(f"real_recall must be in (0, 1], got {recall}")


def recall_threshold(margins: Sequence[float], recall: float) -> float:
    """The margin that `recall` of the held-out real inputs (at least one) exceed, never
    below 0: a stricter filter than the paper's p(yes) > p(no), never a looser one."""
    check_real_recall(recall)
    ranked = sorted(margins)
    # Just under the (1 - recall) quantile, so that exactly `recall` of them pass `>`;
    # recall > 0 keeps the index inside the list.
    below = int((1 - recall) * len(ranked) + 1e-9)  # 0.2 * 10 is 1.999... in floats
    return max(0.0, ranked[below] - 1e-6)


def calibration_margins(info: dict[str, Any]) -> list[float]:
    """The held-out real inputs' margins kept at training time ([] before calibration)."""
    return (info.get("calibration") or {}).get("margins") or []


def filter_threshold(folder: str | Path, info: dict[str, Any], real_recall: float | None) -> float:
    """The margin a candidate must beat: 0 (the paper), or the `real_recall` threshold."""
    if real_recall is None:
        return 0.0
    margins = calibration_margins(info)
    if not margins:
        raise FinetuneError(
            f"the discriminator in {folder} kept no margins of held-out real inputs (trained "
            "by an older version, or no real input was left over): train it again, or "
            "filter with the paper's p(yes) > p(no)"
        )
    return recall_threshold(margins, real_recall)


def write_info(folder: str | Path, **facts: Any) -> Path:
    path = Path(folder) / INFO_FILE
    path.write_text(json.dumps({"question": QUESTION, **facts}, indent=2))
    return path


def read_info(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / INFO_FILE
    if not path.exists():
        raise FinetuneError(
            f"no trained discriminator in {folder}: run `python -m finetune_core discriminator` "
            "beside the source adapter first, or transfer with --unfiltered"
        )
    return json.loads(path.read_text())


def load_discriminator(
    folder: str | Path, quantization: str = "nf4", real_recall: float | None = None
) -> Discriminator:
    """The trained discriminator; with `real_recall` (say 0.9) it accepts only candidates
    scoring above what that share of held-out real inputs scored at training time."""
    from finetune_core.infer import load_chat_model

    info = read_info(folder)
    threshold = filter_threshold(folder, info, real_recall)  # before minutes of loading
    chat = load_chat_model(
        info["source_model"], adapter=str(Path(folder) / ADAPTER), quantization=quantization
    )
    disc = Discriminator.from_chat(chat, info["task"])
    disc.threshold = threshold
    return disc


def calibrate(folder: str | Path, held_out: Sequence[str], quantization: str = "nf4") -> dict:
    """Score real inputs the discriminator never saw and keep their margins in its info
    file: what a stricter filter (`real_recall`) is measured against once the data is gone."""
    disc = load_discriminator(folder, quantization=quantization)
    margins = sorted(round(m, 4) for m in disc.margins(list(held_out)))
    calibration = {
        "n": len(margins),
        "margins": margins,
        "accepted_at_0": sum(m > 0 for m in margins) / len(margins) if margins else None,
    }
    info = read_info(folder)
    write_info(
        folder, **{k: v for k, v in info.items() if k != "question"}, calibration=calibration
    )
    return calibration
