"""Render examples with the base model's chat template and mask the labels.

Each assistant message is tokenized as the piece the template adds after the
generation prompt, so training sees exactly the token boundary that inference
sees: the prompt (with `add_generation_prompt=True`) then the answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from finetune_core.data.types import Example, Message
from finetune_core.errors import DataError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

IGNORE = -100  # label value the loss skips


@dataclass(frozen=True)
class Rendered:
    input_ids: list[int]
    labels: list[int]  # IGNORE where no loss is computed
    line: int = 0

    @property
    def n_trained(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE)


def _as_dicts(messages: tuple[Message, ...] | list[Message]) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in messages]


def _template(tokenizer: PreTrainedTokenizerBase, messages: list[Message], gen: bool) -> str:
    if not messages:
        return ""
    return tokenizer.apply_chat_template(
        _as_dicts(messages), tokenize=False, add_generation_prompt=gen
    )


def _encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    # The template already wrote BOS and every control token as text.
    return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []


def _end_of_answer(tokenizer: PreTrainedTokenizerBase, piece: str) -> int:
    """Where the trained part of an assistant piece ends: just after its end-of-turn marker.

    What follows (the template's newline between turns) is context, not answer.
    """
    from finetune_core.models.loading import END_OF_TURN_TOKENS

    markers = [t for t in END_OF_TURN_TOKENS if t in piece]
    if tokenizer.eos_token and tokenizer.eos_token in piece:
        markers.append(tokenizer.eos_token)
    if not markers:
        return len(piece)
    return min(piece.index(m) + len(m) for m in markers)


def render_example(tokenizer: PreTrainedTokenizerBase, example: Example) -> Rendered:
    """Token ids and labels for one conversation; loss only on weight-1 assistant turns."""
    messages = list(example.messages)
    input_ids: list[int] = []
    labels: list[int] = []
    done = ""  # the rendered text so far, checked to be a prefix of every next render
    for i, message in enumerate(messages):
        if message.role != "assistant":
            continue
        prompt = _template(tokenizer, messages[:i], gen=True)
        full = _template(tokenizer, messages[: i + 1], gen=False)
        if not prompt.startswith(done) or not full.startswith(prompt):
            raise DataError(
                f"line {example.line}: the chat template does not render turns as prefixes; "
                "loss masking needs a template that appends each turn"
            )
        context_ids = _encode(tokenizer, prompt[len(done) :])
        piece = full[len(prompt) :]
        cut = _end_of_answer(tokenizer, piece)
        answer_ids = _encode(tokenizer, piece[:cut])
        tail_ids = _encode(tokenizer, piece[cut:])
        trained = message.weight == 1
        input_ids += context_ids + answer_ids + tail_ids
        labels += [IGNORE] * len(context_ids)
        labels += answer_ids if trained else [IGNORE] * len(answer_ids)
        labels += [IGNORE] * len(tail_ids)
        done = full
    return Rendered(input_ids=input_ids, labels=labels, line=example.line)


def render_prompt(tokenizer: PreTrainedTokenizerBase, messages: list[Message]) -> list[int]:
    """Token ids of a conversation ready for the model to answer (generation prompt added)."""
    return _encode(tokenizer, _template(tokenizer, messages, gen=True))
