"""Synthetic task inputs: a model continues the few-shot list prompt as raw text, each
candidate is cut at the next item number, cleaned, deduplicated and (optionally) kept
only when the discriminator calls it real. Rejection sampling until N accepted or the
attempt budget is spent.

Raw completion, without a chat template, for every model: the list prompt is a
completion prompt, base models (gemma-3-270m) have no chat habit to lean on, and it
keeps source and target sampling identical. Instruct models continue lists fine too.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch

from finetune_core.infer.generate import left_pad, stop_when_text
from finetune_core.infer.nucleus import decoding_kwargs
from finetune_core.models.loading import end_of_turn_ids
from finetune_core.transfer.seeds import _NEXT_ITEM, cut_at_item, list_prompt

if TYPE_CHECKING:
    from finetune_core.infer import ChatModel
    from finetune_core.transfer.discriminator import Discriminator


@torch.no_grad()
def complete_raw(
    chat: ChatModel,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 96,
    temperature: float = 1.0,
    top_p: float = 0.95,
) -> list[str]:
    """Sampled raw-text continuations of each prompt (no chat template)."""
    tok = chat.tokenizer
    encoded = [tok(p)["input_ids"] for p in prompts]  # the tokenizer's own BOS, if any
    pad = tok.pad_token_id
    ids, mask = left_pad(encoded, pad)
    width = ids.shape[1]
    device = next(chat.model.parameters()).device
    out = chat.model.generate(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        max_new_tokens=max_new_tokens,
        **decoding_kwargs(temperature, top_p),
        eos_token_id=end_of_turn_ids(tok),
        pad_token_id=pad,
        # Each row stops at the next list item: that saves most of the tokens.
        stopping_criteria=stop_when_text(tok, width, lambda text: bool(_NEXT_ITEM.search(text))),
    )
    return tok.batch_decode(out[:, width:], skip_special_tokens=True)


@dataclass
class SamplingResult:
    accepted: list[str] = field(default_factory=list)
    attempts: int = 0  # candidates sampled and judged
    empty: int = 0
    duplicates: int = 0  # of an accepted candidate or of a seed
    rejected: int = 0  # by the discriminator
    rejected_samples: list[str] = field(default_factory=list)
    filtered: bool = True
    budget: int = 0
    stopped: bool = False  # should_stop ended the loop: what was accepted so far is kept
    max_new_tokens: int = 0  # sampled per candidate at most

    @property
    def acceptance_rate(self) -> float:
        return len(self.accepted) / self.attempts if self.attempts else 0.0

    def to_dict(self, sample: int = 5) -> dict[str, Any]:
        return {
            "accepted": len(self.accepted),
            "attempts": self.attempts,
            "acceptance_rate": self.acceptance_rate,
            "empty": self.empty,
            "duplicates": self.duplicates,
            "rejected_by_discriminator": self.rejected,
            "filtered": self.filtered,
            "budget": self.budget,
            "stopped": self.stopped,
            "max_new_tokens": self.max_new_tokens,
            "sample_accepted": self.accepted[:sample],
            "sample_rejected": self.rejected_samples[:sample],
        }


def item_token_budget(
    tokenizer: Any, inputs: Sequence[str], *, factor: float = 2.0, floor: int = 16, cap: int = 256
) -> int:
    """Tokens to sample per list item: `factor` times the longest example input. A runaway
    item then ends early (a batch waits for its longest row), and a task with long inputs
    is not cut short."""
    longest = max(len(tokenizer(x, add_special_tokens=False)["input_ids"]) for x in inputs)
    return min(cap, max(floor, int(factor * longest)))


def _key(text: str) -> str:
    return " ".join(text.split())


def synthesize(
    chat: ChatModel,
    pool: Sequence[str],
    n: int,
    *,
    discriminator: Discriminator | None = None,
    shots: int = 5,
    max_attempts: int | None = None,
    batch_size: int = 8,
    max_new_tokens: int = 96,
    temperature: float = 1.0,
    top_p: float = 0.95,
    seed: int = 0,
    on_batch: Callable[[SamplingResult], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    start: SamplingResult | None = None,
) -> SamplingResult:
    """Up to n new task inputs written by `chat`, few-shot prompted from `pool`.

    With more than `shots` inputs in the pool each prompt draws its own; the order is
    shuffled per prompt for variety. Stops at n accepted or `max_attempts` (default 4n).
    `on_batch` hears the running result after each batch; `should_stop` ends the loop
    between batches, keeping what was accepted. `start` (a stopped earlier result)
    continues: its attempts count against the budget and its inputs stay known.
    """
    budget = max_attempts if max_attempts is not None else 4 * n
    result = SamplingResult(
        filtered=discriminator is not None, budget=budget, max_new_tokens=max_new_tokens
    )
    if start is not None:
        result = replace(start, budget=budget, stopped=False, max_new_tokens=max_new_tokens)
    # Offset by the attempts so far: a continued run draws new prompts, not the same ones.
    rng = random.Random(seed + result.attempts)
    torch.manual_seed(seed + result.attempts)
    known = {_key(x) for x in [*pool, *result.accepted, *result.rejected_samples]}
    while len(result.accepted) < n and result.attempts < budget:
        if should_stop is not None and should_stop():
            result.stopped = True
            break
        rows = min(batch_size, budget - result.attempts)
        prompts = [list_prompt(rng.sample(list(pool), min(shots, len(pool)))) for _ in range(rows)]
        raw = complete_raw(
            chat, prompts, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p
        )
        fresh: list[str] = []
        for text in raw:
            result.attempts += 1
            candidate = cut_at_item(text)
            if not candidate or not re.search(r"\w", candidate):
                result.empty += 1
            elif _key(candidate) in known:
                result.duplicates += 1
            else:
                known.add(_key(candidate))
                fresh.append(candidate)
        verdicts = (
            discriminator.accepts(fresh) if discriminator is not None else [True] * len(fresh)
        )
        for candidate, ok in zip(fresh, verdicts, strict=True):
            if not ok:
                result.rejected += 1
                result.rejected_samples.append(candidate)
            elif len(result.accepted) < n:
                result.accepted.append(candidate)
            else:
                result.attempts -= 1  # surplus of the last batch: never judged as an attempt
        if on_batch is not None:
            on_batch(result)
    return result


def no_accepted_message(result: SamplingResult, target: str) -> str:
    """Why synthesis produced nothing, in words the user can act on."""
    if result.attempts and result.empty == result.attempts:
        return (
            f"the target model {target} wrote no usable text in {result.attempts} attempts: "
            "it cannot generate task inputs from the list prompt; pick a model that can "
            "continue text (a base or instruct language model)"
        )
    return (
        f"acceptance rate stayed at 0: no synthetic input accepted in {result.attempts} "
        f"attempts (budget {result.budget}; {result.rejected} rejected by the discriminator, "
        f"{result.duplicates} duplicates, {result.empty} empty). Raise the attempt budget or "
        "the temperature, or transfer unfiltered (no discriminator)"
    )
