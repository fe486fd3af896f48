"""Constrained verdicts for a local judge: read the verdict off the model's probabilities.

A small judge rarely writes "[[A]]" by itself (SmolLM2-135M: never), so its free
text cannot be parsed. A local judge runs in-process, so we can do better than
hoping: after its (short) rationale, or straight away with a verdict-first
prompt, the verdict lead ("Final verdict: [[" or "Rating: [[") is appended and
every allowed verdict (A/B/C, or 1-10) is scored as a token sequence under the
model. The verdict is the most likely one; the probabilities, renormalised over
the allowed set, are recorded with it, so a coin-flip verdict shows as one.

Sequences, not single tokens: "1" is a prefix of "10" in digit-split
tokenizers, so a prefix option also scores the first token of its closing "]]".
Each distinct proper prefix of an option is one forward row, so A/B/C costs one
row per judgment and 1-10 two.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from finetune_core.infer import ChatModel


@dataclass(frozen=True)
class VerdictOptions:
    """The allowed verdicts of one judgment kind and how the verdict is introduced."""

    kind: str  # pairwise | single
    labels: tuple[str, ...]  # what may follow the lead: "A", "B", "C" / "1".."10"
    lead: str  # the reply starts with this when there is no rationale (verdict first)
    after_rationale: str  # appended to a rationale before the verdict
    close: str = "]]"

    def text(self, rationale: str, label: str) -> str:
        """The reply as the judge "wrote" it: the free-text parsers read it back."""
        start = rationale + self.after_rationale if rationale else self.lead
        return f"{start}{label}{self.close}"


PAIRWISE_OPTIONS = VerdictOptions("pairwise", ("A", "B", "C"), "[[", "\n\nFinal verdict: [[")
RATING_OPTIONS = VerdictOptions(
    "single", tuple(str(i) for i in range(1, 11)), "Rating: [[", "\n\nRating: [["
)
OPTIONS = {o.kind: o for o in (PAIRWISE_OPTIONS, RATING_OPTIONS)}


def _encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []


def option_sequences(
    tokenizer: PreTrainedTokenizerBase, options: VerdictOptions
) -> list[list[int]]:
    """Token ids of each label as it follows the lead; prefix-free across the labels."""
    lead = _encode(tokenizer, options.lead)
    seqs = []
    for label in options.labels:
        # Encode in context so a tokenizer that adds a word-start marker to a lone
        # "A" still gives the ids the model would produce right after "[[".
        both = _encode(tokenizer, options.lead + label)
        seqs.append(both[len(lead) :] if both[: len(lead)] == lead else _encode(tokenizer, label))
    close = _encode(tokenizer, options.close)[:1]
    for i, s in enumerate(seqs):
        if any(j != i and t[: len(s)] == s for j, t in enumerate(seqs)):
            seqs[i] = s + close  # "1" must end here to differ from "10"
    if any(not s for s in seqs) or any(
        i != j and t[: len(s)] == s for i, s in enumerate(seqs) for j, t in enumerate(seqs)
    ):
        raise ValueError(f"verdict labels {options.labels} do not tokenize to distinct sequences")
    return seqs


def _last_logprobs(chat: ChatModel, rows: list[list[int]], batch_size: int) -> list[Any]:
    """log-softmax of the next-token logits after each row (left-padded batches)."""
    import torch

    from finetune_core.infer.generate import left_pad

    device = next(chat.model.parameters()).device
    pad = chat.tokenizer.pad_token_id or 0
    out = []
    for i in range(0, len(rows), batch_size):
        ids, mask = left_pad(rows[i : i + batch_size], pad)
        # Positions count real tokens only, so padding changes no row's result.
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = chat.model(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            position_ids=positions.to(device),
            logits_to_keep=1,  # only the last position is needed: no [batch, width, vocab]
        ).logits[:, -1, :]
        out += list(torch.log_softmax(logits.float(), dim=-1).cpu())
    return out


def score_options(
    chat: ChatModel,
    prefixes: Sequence[list[int]],
    sequences: Sequence[list[int]],
    batch_size: int = 4,
) -> list[list[float]]:
    """log p(sequence | prefix) for every prefix (rows) and allowed sequence (columns)."""
    import torch

    paths = sorted({tuple(s[:k]) for s in sequences for k in range(len(s))})
    rows = [list(p) + list(path) for p in prefixes for path in paths]
    with torch.no_grad():
        logp = _last_logprobs(chat, rows, batch_size)
    at = {
        (i, path): logp[i * len(paths) + n]
        for i in range(len(prefixes))
        for n, path in enumerate(paths)
    }
    return [
        [sum(float(at[(i, tuple(s[:k]))][s[k]]) for k in range(len(s))) for s in sequences]
        for i in range(len(prefixes))
    ]


def normalise(logps: Sequence[float]) -> list[float]:
    """Probabilities over the allowed set (a softmax of the sequence log-probabilities)."""
    top = max(logps)
    weights = [math.exp(lp - top) for lp in logps]
    total = sum(weights)
    return [w / total for w in weights]


@dataclass
class ConstrainedVerdict:
    label: str  # the chosen label ("A", "C", "7")
    text: str  # rationale + lead + label + close
    rationale: str
    probabilities: dict[str, float]  # over the allowed labels; sums to 1
    logprobs: dict[str, float]  # unnormalised: how much of the model's mass the set got


def cut_rationale(text: str) -> str:
    """The rationale before any verdict the judge began itself; the choice is ours."""
    return text.split("[[", 1)[0].rstrip()


def constrained_verdicts(
    chat: ChatModel,
    conversations: Sequence[list[dict[str, str]]],
    options: VerdictOptions,
    rationales: Sequence[str] | None = None,
    batch_size: int = 4,
) -> list[ConstrainedVerdict]:
    """The most likely allowed verdict after each conversation (and its rationale)."""
    from finetune_core.data.render import render_prompt
    from finetune_core.infer.generate import as_messages

    tok = chat.tokenizer
    rationales = list(rationales) if rationales is not None else [""] * len(conversations)
    prefixes = []
    for conv, rationale in zip(conversations, rationales, strict=True):
        start = rationale + options.after_rationale if rationale else options.lead
        prefixes.append(render_prompt(tok, as_messages(conv)) + _encode(tok, start))
    seqs = option_sequences(tok, options)
    results = []
    for rationale, logps in zip(
        rationales, score_options(chat, prefixes, seqs, batch_size), strict=True
    ):
        probs = normalise(logps)
        best = max(range(len(probs)), key=probs.__getitem__)
        label = options.labels[best]
        results.append(
            ConstrainedVerdict(
                label,
                options.text(rationale, label),
                rationale,
                dict(zip(options.labels, probs, strict=True)),
                dict(zip(options.labels, logps, strict=True)),
            )
        )
    return results


# Calibrated a and b closer than this are the same: two identical answers make the same
# prompt in both orders, whose probabilities differ only by float noise (batch padding).
SAME_MARGIN = 1e-4


def balanced_position(
    ab: dict[str, float] | None, ba: dict[str, float] | None
) -> tuple[str, dict[str, float]] | None:
    """Outcome from both orders' probabilities averaged (balanced position calibration,
    Wang et al. 2023, "Large Language Models are not Fair Evaluators").

    A judge that always prefers the first slot still says *how much* it prefers it;
    averaging P(a wins) over the two orders cancels a constant position bias. The
    strict swap rule (a flip is an inconsistent tie) stays the official outcome; this
    is recorded beside it. None unless both orders have pairwise probabilities.
    """
    if not ab or not ba or not {"A", "B", "C"} <= ab.keys() & ba.keys():
        return None
    probs = {
        "a": (ab["A"] + ba["B"]) / 2,  # a was A first, then B
        "b": (ab["B"] + ba["A"]) / 2,
        "tie": (ab["C"] + ba["C"]) / 2,
    }
    if abs(probs["a"] - probs["b"]) <= SAME_MARGIN:  # no side favoured: not a win for a
        return "tie", probs
    return max(probs, key=probs.__getitem__), probs
