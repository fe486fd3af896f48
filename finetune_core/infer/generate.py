"""Chat with a base model or base + adapter: chat template, greedy or sampled,
stop at the end-of-turn token, streamed text and batched prompts."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from finetune_core.data.render import render_prompt
from finetune_core.data.types import Message
from finetune_core.infer.nucleus import decoding_kwargs
from finetune_core.models.loading import Quantization, end_of_turn_ids, load_model, load_tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# Called with (row index in the batch, new text) as tokens arrive.
OnText = Callable[[int, str], None]


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end of turn) or "length"
    # Mean log-probability of the answer's tokens (generate(logprobs=True) only).
    logprob: float | None = None


@dataclass
class ChatModel:
    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    name: str
    adapter: str | None = None


def load_chat_model(
    name: str,
    *,
    adapter: str | None = None,
    quantization: Quantization = "nf4",
    compute_dtype: torch.dtype | None = None,
) -> ChatModel:
    """A base model, optionally with a PEFT adapter folder applied on top."""
    tokenizer = load_tokenizer(name)
    model = load_model(name, quantization=quantization, compute_dtype=compute_dtype)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    return ChatModel(model=model, tokenizer=tokenizer, name=name, adapter=adapter)


def as_messages(conversation: Sequence[Message | dict]) -> list[Message]:
    return [
        m if isinstance(m, Message) else Message(role=m["role"], content=m["content"])
        for m in conversation
    ]


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """The text before the first stop string, and whether one was found."""
    found = [i for s in stop if (i := text.find(s)) >= 0]
    return (text[: min(found)], True) if found else (text, False)


def _pending_stop(text: str, stop: Sequence[str]) -> int:
    """Length of the longest tail of `text` that may begin a stop string: held back."""
    longest = 0
    for s in stop:
        for n in range(min(len(s) - 1, len(text)), longest, -1):
            if s.startswith(text[-n:]):
                longest = n
                break
    return longest


class _NewTextStop:
    """Per-row stop for transformers' generate: the text made so far meets `done`."""

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, width: int, done: Callable[[str], bool]
    ) -> None:
        self.tokenizer, self.width, self.done = tokenizer, width, done

    def __call__(
        self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: object
    ) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.width :], skip_special_tokens=True)
        return torch.tensor([self.done(t) for t in texts], device=input_ids.device)


def stop_when_text(
    tokenizer: PreTrainedTokenizerBase, width: int, done: Callable[[str], bool]
) -> list:
    """stopping_criteria ending each row once the text after its `width` prompt tokens
    meets `done` (transformers is imported only here, when generating)."""
    from transformers import StoppingCriteria, StoppingCriteriaList

    criterion = type("NewTextStop", (_NewTextStop, StoppingCriteria), {})
    return StoppingCriteriaList([criterion(tokenizer, width, done)])


class _Streamer:
    """transformers streamer that turns each step's token ids into per-row text deltas.
    Text that may begin a stop string is held back until it is known not to."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        rows: int,
        stop_ids: list[int],
        on_text: OnText,
        stop: Sequence[str] = (),
    ) -> None:
        self.tokenizer, self.stop_ids, self.on_text = tokenizer, set(stop_ids), on_text
        self.stop = stop
        self.ids: list[list[int]] = [[] for _ in range(rows)]
        self.sent = [""] * rows
        self.done = [False] * rows
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate() first passes the prompt itself
            self.prompt_seen = True
            return
        for row, token in enumerate(value.reshape(len(self.ids), -1)[:, -1].tolist()):
            if self.done[row]:
                continue
            if token in self.stop_ids:
                self.done[row] = True
                continue
            self.ids[row].append(token)
            text = self.tokenizer.decode(self.ids[row], skip_special_tokens=True)
            # Hold back a trailing partial UTF-8 character until it completes.
            if text.endswith("\ufffd"):
                continue
            text, stopped = cut_at_stop(text, self.stop)
            if stopped:
                self.done[row] = True
            else:
                text = text[: len(text) - _pending_stop(text, self.stop)]
            if len(text) > len(self.sent[row]):
                self.on_text(row, text[len(self.sent[row]) :])
                self.sent[row] = text

    def end(self) -> None:
        # Flush what was held back (an incomplete character stays a replacement mark).
        for row, ids in enumerate(self.ids):
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            text = cut_at_stop(text, self.stop)[0]
            if len(text) > len(self.sent[row]):
                self.on_text(row, text[len(self.sent[row]) :])
                self.sent[row] = text


def left_pad(sequences: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask, left-padded so every prompt ends at the same position."""
    width = max(len(s) for s in sequences)
    ids = torch.tensor([[pad_id] * (width - len(s)) + list(s) for s in sequences])
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in sequences])
    return ids, mask


@torch.no_grad()
def generate(
    chat: ChatModel,
    conversations: Sequence[Sequence[Message | dict]],
    *,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = None,
    on_text: OnText | None = None,
    stop: Sequence[str] = (),
    logprobs: bool = False,
) -> list[Generation]:
    """Answer each conversation. temperature 0 is greedy decoding. Each answer ends at the
    end-of-turn token or before the first of the `stop` strings (left out, as OpenAI does).
    `logprobs` also gives each answer's mean log-probability under the model's own
    (unprocessed) distribution: how sure it was, for free while generating."""

    tok = chat.tokenizer
    prompts = [render_prompt(tok, as_messages(c)) for c in conversations]
    pad = tok.pad_token_id
    input_ids, attention = left_pad(prompts, pad)
    width = input_ids.shape[1]
    device = next(chat.model.parameters()).device
    stop_ids = end_of_turn_ids(tok)
    if seed is not None:
        torch.manual_seed(seed)
    out = chat.model.generate(
        input_ids=input_ids.to(device),
        attention_mask=attention.to(device),
        max_new_tokens=max_new_tokens,
        **decoding_kwargs(temperature, top_p),
        eos_token_id=stop_ids,
        pad_token_id=pad,
        streamer=_Streamer(tok, len(prompts), stop_ids, on_text, stop) if on_text else None,
        stopping_criteria=(
            stop_when_text(tok, width, lambda text: cut_at_stop(text, stop)[1]) if stop else None
        ),
        **({"return_dict_in_generate": True, "output_logits": True} if logprobs else {}),
    )
    sequences = out.sequences if logprobs else out
    picked = _picked_logprobs(out.logits, sequences[:, width:]) if logprobs else None
    results = []
    for row, prompt in enumerate(prompts):
        new = sequences[row, width:].tolist()
        stop_at = next((i for i, t in enumerate(new) if t in stop_ids), None)
        answer = new if stop_at is None else new[:stop_at]
        text, stopped = cut_at_stop(tok.decode(answer, skip_special_tokens=True), stop)
        used = _tokens_to_stop(tok, answer, stop) if stopped else len(answer)
        results.append(
            Generation(
                text=text,
                prompt_tokens=len(prompt),
                completion_tokens=used + (stop_at is not None and not stopped),
                finish_reason="stop" if stopped or stop_at is not None else "length",
                logprob=None if picked is None else _mean_or_minus_inf(picked[row, :used]),
            )
        )
    return results


def _picked_logprobs(logits: tuple[torch.Tensor, ...], new: torch.Tensor) -> torch.Tensor:
    """[rows, steps]: the log-probability of each generated token at its step."""
    return torch.cat(
        [
            step.float().log_softmax(-1).gather(1, new[:, i : i + 1])
            for i, step in enumerate(logits)
        ],
        dim=1,
    )


def _mean_or_minus_inf(values: torch.Tensor) -> float:
    """An empty answer is as unsure as can be."""
    return values.mean().item() if values.numel() else float("-inf")


def _tokens_to_stop(tok: PreTrainedTokenizerBase, ids: list[int], stop: Sequence[str]) -> int:
    """The fewest leading tokens whose text holds a stop string (what generation paid for;
    rows stopped early are padded after it)."""
    low, high = 1, len(ids)
    while low < high:
        mid = (low + high) // 2
        if cut_at_stop(tok.decode(ids[:mid], skip_special_tokens=True), stop)[1]:
            high = mid
        else:
            low = mid + 1
    return high
