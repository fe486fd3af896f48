"""A continuous-batching generation engine: one base model, several LoRA adapters, many
requests at once, each streamed as it is produced.

`submit(Request) -> Handle`; every `step()`:

1. drops the requests cancelled since the last step;
2. prefills, within a budget of `prefill_tokens` tokens: first a chunk of the long prompt
   being prefilled in pieces (if any), then as many waiting prompts as fit, left-padded
   into one forward. A prompt longer than what is left of the budget is prefilled in
   chunks over the next steps, so it never stalls the others' decoding for long. The last
   prefill forward of a request gives its first token (time to first token);
3. runs one decode forward for every decoding row (each with its own adapter, position
   and attention mask: `BatchKV`), picks each row's token (greedy, or its own
   temperature/top-p with its own torch.Generator), streams its text, and drops the rows
   that finished (end of turn, a stop string, max_tokens);
4. the rows prefilled in this step join the batch: they decode from the next step.

A row's result does not depend on its batch mates: padded columns are masked, each row has
its own positions and random generator, and at temperature 0 every answer is token for
token what `generate` gives for the request alone (tests/core/test_infer_engine.py; 16/16
on SmolLM2-135M NF4 with fp32 compute in benchmarks/bench_serve_engine.py --dtype fp32).
In bf16 the last bits of a matmul depend on the batch's shape, so a greedy answer may
part from the lone one after some tokens, as `generate`'s own batches do (on SmolLM2 NF4
bf16: 4 of 8 engine answers identical to alone over 48 tokens, and 2 of 4 for a batch of
`generate`).

Drive it with `step()` (or iterate a handle, which steps when nothing else does), or run
it on a background thread with `start()`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from finetune_core.data.render import render_prompt
from finetune_core.infer.batch_cache import BatchKV
from finetune_core.infer.generate import (
    _pending_stop,
    as_messages,
    cut_at_stop,
    left_pad,
)
from finetune_core.infer.handle import Handle, Request
from finetune_core.infer.multi_lora import LORA_CHOICE, make_adapters
from finetune_core.infer.nucleus import NucleusSampling
from finetune_core.models.loading import Quantization, end_of_turn_ids, load_model, load_tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)


@dataclass
class _Row:
    handle: Handle
    sampler: NucleusSampling | None
    generator: torch.Generator | None
    prefilled: int = 0  # prompt tokens in its prefill cache so far
    cache: object = None  # its DynamicCache while prefilled in chunks
    kv: list = field(default_factory=list)  # its keys/values once prefilled, until it joins
    last: int = 0  # the token the next decode step feeds

    @property
    def ids(self) -> list[int]:
        return self.handle.prompt_ids


class Engine:
    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        *,
        adapters: dict[str, str] | None = None,
        lora: str = LORA_CHOICE,
        prefill_tokens: int = 256,
        max_rows: int = 64,
    ) -> None:
        self.tokenizer = tokenizer
        self.lora = make_adapters(model, lora)
        for name, folder in (adapters or {}).items():
            self.lora.add(name, folder)
        self.config = model.config
        self.device = next(model.parameters()).device
        self.prefill_tokens, self.max_rows = prefill_tokens, max_rows
        self.stop_ids = set(end_of_turn_ids(tokenizer))
        self.cache = BatchKV()
        self.inbox: deque[_Row] = deque()  # submitted from any thread
        self.waiting: deque[_Row] = deque()
        self.chunked: _Row | None = None  # the prompt prefilled in pieces
        self.active: list[_Row] = []  # decoding rows, in cache-slot order
        self.joining: list[_Row] = []  # prefilled this step, decoding from the next
        self._fresh: list[_Row] = []  # in this step's padded prefill
        self.steps = 0
        self.running = False
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._lock = threading.RLock()

    @classmethod
    def load(
        cls,
        name: str,
        *,
        adapters: dict[str, str] | None = None,
        quantization: Quantization = "nf4",
        compute_dtype: torch.dtype | None = None,
        **kwargs: object,
    ) -> Engine:
        model = load_model(name, quantization=quantization, compute_dtype=compute_dtype).eval()
        return cls(model, load_tokenizer(name), adapters=adapters, **kwargs)

    @property
    def model(self) -> torch.nn.Module:
        return self.lora.model

    def add_adapter(self, name: str, folder: str) -> None:
        with self._lock:
            self.lora.add(name, folder)

    # --- requests -----------------------------------------------------------------------

    def submit(self, request: Request) -> Handle:
        if (request.messages is None) == (request.prompt is None):
            raise ValueError("a request has messages or a prompt (one of them)")
        if request.adapter is not None and request.adapter not in self.lora.names:
            raise ValueError(f"no adapter {request.adapter!r} is loaded")
        if request.max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        tok = self.tokenizer
        if request.messages is not None:
            ids = render_prompt(tok, as_messages(request.messages))
        else:
            ids = tok(request.prompt).input_ids
        if not ids:
            raise ValueError("the prompt is empty")
        sampler = generator = None
        if request.temperature > 0:
            sampler = NucleusSampling(request.temperature, request.top_p)
            generator = torch.Generator(device=self.device)
            if request.seed is None:
                generator.seed()
            else:
                generator.manual_seed(request.seed)
        handle = Handle(self, request, list(ids))
        self.inbox.append(_Row(handle, sampler, generator))
        self._wake.set()
        return handle

    def cancel(self, handle: Handle) -> None:
        """The request leaves at the next step (its finish_reason becomes "cancelled")."""
        handle.cancelled = True
        self._wake.set()

    @property
    def idle(self) -> bool:
        return not (self.inbox or self.waiting or self.chunked or self.active or self.joining)

    # --- the loop -----------------------------------------------------------------------

    @torch.inference_mode()
    def step(self) -> bool:
        """One step for every request in flight; False when there was nothing to do."""
        with self._lock:
            while self.inbox:
                self.waiting.append(self.inbox.popleft())
            self._drop_cancelled()
            if self.idle:
                return False
            self.steps += 1
            try:
                self._prefill()
                if self.active:
                    self._decode()
            except Exception as exc:
                self._fail_all(exc)  # every request in flight ends with the error
                raise
            for row in self.joining:
                self.cache.add(row.kv)
                row.kv = []
                self.active.append(row)
            self.joining = []
            return True

    def run_until_idle(self) -> None:
        while self.step():
            pass

    def start(self) -> None:
        """Step on a background thread until `stop()`."""
        if self._thread is None:
            self.running = True
            self._thread = threading.Thread(target=self._loop, name="engine", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self.running = False
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _loop(self) -> None:
        while self.running:
            try:
                busy = self.step()
            except Exception:  # noqa: BLE001 - its requests have the error; serve the next
                log.exception("engine step failed")
                busy = False
            if not busy:
                self._wake.wait(0.05)
                self._wake.clear()

    # --- prefill --------------------------------------------------------------------------

    def _prefill(self) -> None:
        budget = self.prefill_tokens
        if self.chunked is not None:
            row = self.chunked
            n = min(budget, len(row.ids) - row.prefilled)
            budget -= n
            self._prefill_chunk(row, n)
        fresh: list[_Row] = []
        room = self.max_rows - len(self.active) - len(self.joining) - (self.chunked is not None)
        while self.waiting and budget > 0 and len(fresh) < room:
            row = self.waiting[0]
            width = max([len(r.ids) for r in fresh] + [len(row.ids)])
            if width * (len(fresh) + 1) <= budget:
                fresh.append(self.waiting.popleft())
            else:
                if self.chunked is None and not fresh:
                    self.chunked = self.waiting.popleft()
                    self._prefill_chunk(self.chunked, budget)
                break
        if fresh:
            self._fresh = fresh
            self._prefill_batch(fresh)
            self._fresh = []

    def _prefill_chunk(self, row: _Row, n: int) -> None:
        from transformers import DynamicCache

        if row.cache is None:
            row.cache = DynamicCache(config=self.config)
        start, end = row.prefilled, row.prefilled + n
        out = self.model(
            input_ids=torch.tensor([row.ids[start:end]], device=self.device),
            attention_mask=torch.ones((1, end), dtype=torch.long, device=self.device),
            position_ids=torch.arange(start, end, device=self.device)[None],
            cache=row.cache,
            use_cache=True,
            logits_to_keep=1,
            **self.lora.select([row.handle.request.adapter]),
        )
        row.prefilled = end
        if end == len(row.ids):
            kv = [(layer.keys, layer.values) for layer in row.cache.layers]
            row.cache, self.chunked = None, None
            self._first_token(row, out.logits[0, -1], kv)

    def _prefill_batch(self, rows: list[_Row]) -> None:
        from transformers import DynamicCache

        ids, mask = left_pad([r.ids for r in rows], self.tokenizer.pad_token_id)
        positions = (mask.cumsum(-1) - 1).masked_fill_(mask == 0, 1)
        cache = DynamicCache(config=self.config)
        out = self.model(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            position_ids=positions.to(self.device),
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
            **self.lora.select([r.handle.request.adapter for r in rows]),
        )
        width = ids.shape[1]
        for i, row in enumerate(rows):
            left = width - len(row.ids)
            kv = [
                (x.keys[i : i + 1, :, left:], x.values[i : i + 1, :, left:]) for x in cache.layers
            ]
            self._first_token(row, out.logits[i, -1], kv)

    def _first_token(self, row: _Row, logits: torch.Tensor, kv: list) -> None:
        row.handle.first_token_at = time.perf_counter()
        if self._accept(row, self._pick(row, logits)):
            row.kv = kv
            self.joining.append(row)

    # --- decode ---------------------------------------------------------------------------

    def _decode(self) -> None:
        cache, rows = self.cache, self.active
        cache.prepare()
        out = self.model(
            input_ids=torch.tensor([[r.last] for r in rows], device=self.device),
            attention_mask=self._attention(cache.mask(self.device)),
            position_ids=cache.positions(self.device),
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
            **self.lora.select([r.handle.request.adapter for r in rows]),
        )
        cache.advance()
        logits = out.logits[:, -1]
        finished = [
            i for i, row in enumerate(rows) if not self._accept(row, self._pick(row, logits[i]))
        ]
        for slot in reversed(finished):
            self._leave(slot)

    def _leave(self, slot: int) -> None:
        self.cache.remove(slot)
        last = self.active.pop()
        if slot < len(self.active):
            self.active[slot] = last  # the cache moved the last row into this slot too

    def _attention(self, allowed: torch.Tensor) -> torch.Tensor:
        """The 4D mask in the form the model's attention takes (eager adds it)."""
        if getattr(self.config, "_attn_implementation", "sdpa") != "eager":
            return allowed
        dtype = next(self.model.parameters()).dtype
        blocked = torch.finfo(dtype).min
        return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
            ~allowed, blocked
        )

    # --- tokens to text -------------------------------------------------------------------

    def _pick(self, row: _Row, logits: torch.Tensor) -> int:
        """As transformers' generate: float32 logits, argmax or multinomial sampling."""
        logits = logits.float()[None]
        if row.sampler is None:
            return int(logits.argmax(-1))
        probs = row.sampler(None, logits).softmax(-1)
        return int(torch.multinomial(probs, 1, generator=row.generator))

    def _accept(self, row: _Row, token: int) -> bool:
        """Take a row's new token; False once the row is finished."""
        h, stop = row.handle, row.handle.request.stop
        h.completion_tokens += 1
        if token in self.stop_ids:
            return self._finish(row, "stop")
        h.token_ids.append(token)
        row.last = token
        text = self.tokenizer.decode(h.token_ids, skip_special_tokens=True)
        text, stopped = cut_at_stop(text, stop)
        if stopped:
            return self._finish(row, "stop")
        if not text.endswith("\ufffd"):  # a partial UTF-8 character waits for the rest
            self._emit(h, text[: len(text) - _pending_stop(text, stop)])
        if h.completion_tokens >= h.request.max_tokens:
            return self._finish(row, "length")
        return True

    def _emit(self, h: Handle, text: str) -> None:
        if len(text) > len(h.text):
            h._deltas.put(text[len(h.text) :])
            h.text = text

    def _finish(self, row: _Row, reason: str) -> bool:
        h = row.handle
        text = self.tokenizer.decode(h.token_ids, skip_special_tokens=True)
        self._emit(h, cut_at_stop(text, h.request.stop)[0])
        h.finish_reason, h.finished_at = reason, time.perf_counter()
        h._deltas.put(None)
        return False

    def _drop_cancelled(self) -> None:
        for row in [r for r in self.waiting if r.handle.cancelled]:
            self.waiting.remove(row)
            self._finish(row, "cancelled")
        if self.chunked is not None and self.chunked.handle.cancelled:
            self._finish(self.chunked, "cancelled")
            self.chunked = None
        for slot in reversed(range(len(self.active))):
            if self.active[slot].handle.cancelled:
                self._finish(self.active[slot], "cancelled")
                self._leave(slot)

    def _fail_all(self, exc: BaseException) -> None:
        """A failed forward: the requests in flight end with its error (raised when their
        handles are read); the waiting ones are served next."""
        rows = [*self.active, *self.joining, *self._fresh]
        for row in rows + ([self.chunked] if self.chunked else []):
            row.handle.error = exc
            self._finish(row, "error")
        self.active, self.joining, self._fresh, self.chunked = [], [], [], None
        self.cache = BatchKV()
