"""Seeds and text helpers of Trans-LoRA: the few-shot list prompt, cutting a sampled
continuation at the next item number, and normalised exact match."""

from __future__ import annotations

import random
import re
import string
from collections.abc import Sequence
from pathlib import Path

from finetune_core.contracts.layout import SEEDS_FILE
from finetune_core.data import Example, read_examples, to_chat_jsonl
from finetune_core.errors import DataError

# Any new list item ends the sampled one (the paper cuts at "\n7."; a model that skips
# or repeats a number must be cut too).
_NEXT_ITEM = re.compile(r"\n\s*\d+\.")
_PUNCT = str.maketrans("", "", string.punctuation)


def task_input(example: Example) -> str:
    """The task input x of an example: the user message answered by the first assistant turn."""
    user = ""
    for message in example.messages:
        if message.role == "assistant":
            break
        if message.role == "user":
            user = message.content
    return user


def task_answer(example: Example) -> str:
    return next((m.content for m in example.messages if m.role == "assistant"), "")


def select_seeds(examples: Sequence[Example], k: int = 5, seed: int = 0) -> list[Example]:
    """k distinct real examples (by input), drawn reproducibly."""
    if k < 1:
        raise DataError(f"the number of seeds must be at least 1, got {k}")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    chosen, seen = [], set()
    for i in order:
        x = task_input(examples[i]).strip()
        if x and x not in seen:
            seen.add(x)
            chosen.append(examples[i])
        if len(chosen) == k:
            return chosen
    raise DataError(f"need {k} seed examples with distinct inputs, the data has {len(chosen)}")


def save_seeds(seeds: Sequence[Example], folder: str | Path) -> Path:
    path = Path(folder) / SEEDS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    to_chat_jsonl(seeds, path)
    return path


def load_seeds(folder: str | Path) -> list[Example]:
    path = Path(folder) / SEEDS_FILE
    if not path.exists():
        raise DataError(
            f"no {SEEDS_FILE} in {folder}: run `python -m finetune_core discriminator` "
            "beside the source adapter while its training data exists"
        )
    return list(read_examples(path, fmt="chat"))


def list_prompt(inputs: Sequence[str], total: int = 10) -> str:
    """The paper's few-shot list prompt; the model continues item len(inputs) + 1."""
    lines = [f"Here are {total} examples:"]
    lines += [f"{i}. {x}" for i, x in enumerate(inputs, start=1)]
    lines.append(f"{len(inputs) + 1}.")
    return "\n".join(lines)


def cut_at_item(text: str) -> str:
    """The sampled item alone: everything before the next `\\n<number>.`, stripped."""
    found = _NEXT_ITEM.search(text)
    return (text[: found.start()] if found else text).strip()


def normalize(text: str) -> str:
    """Lowercase, no punctuation, single spaces, stripped."""
    return " ".join(text.lower().translate(_PUNCT).split())


def exact_match(prediction: str, references: Sequence[str]) -> bool:
    pred = normalize(prediction)
    return any(pred == normalize(r) for r in references)


def references_of(example: Example) -> tuple[str, ...]:
    answer = task_answer(example)
    return example.references or ((answer,) if answer else ())
