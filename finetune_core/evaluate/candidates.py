"""Candidates (base model, base + adapter, external endpoint) and cached answer generation."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finetune_core.contracts.hooks import Hooks
from finetune_core.contracts.layout import ADAPTER, ADAPTER_CONFIG, ADAPTER_FILES
from finetune_core.errors import FinetuneError
from finetune_core.evaluate.cache import AnswerCache, answer_key
from finetune_core.evaluate.endpoint import Budget, Endpoint, OnDone, Tally
from finetune_core.evaluate.sets import EvalSet

if TYPE_CHECKING:
    from finetune_core.infer import ChatModel

_HASHES: dict[tuple[str, int, int], str] = {}


def adapter_folder(path: str | Path) -> Path:
    """An adapter folder, a checkpoint folder, or a run folder (its adapter/ is used)."""
    p = Path(path).expanduser().resolve()
    for folder in (p, p / ADAPTER):
        if (folder / ADAPTER_CONFIG).is_file():
            return folder
    raise FinetuneError(f"{path}: no adapter_config.json (not an adapter or checkpoint folder)")


def adapter_hash(folder: Path) -> str:
    """Content hash of the adapter files, memoised by (path, mtime, size) in this process."""
    digest = hashlib.sha256()
    for name in ADAPTER_FILES:
        f = folder / name
        if not f.is_file():
            continue
        st = f.stat()
        memo = (str(f), st.st_mtime_ns, st.st_size)
        if memo not in _HASHES:
            _HASHES[memo] = hashlib.sha256(f.read_bytes()).hexdigest()
        digest.update(f"{name}:{_HASHES[memo]}".encode())
    return digest.hexdigest()[:16]


@dataclass
class Candidate:
    kind: str  # base | adapter | openai
    model: str
    adapter: str | None = None
    base_url: str | None = None
    api_key: str = field(default="", repr=False)
    label: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("base", "adapter", "openai"):
            raise FinetuneError(
                f"candidate kind must be base, adapter or openai, not {self.kind!r}"
            )
        if self.kind == "adapter":
            self.adapter = str(adapter_folder(self.adapter or ""))
        if self.kind == "openai" and not self.base_url:
            raise FinetuneError("an openai candidate needs a base_url")
        if not self.label:
            tail = {"adapter": f"+{Path(self.adapter or '').name}", "openai": "@api"}
            self.label = self.model + tail.get(self.kind, "")

    @property
    def local(self) -> bool:
        return self.kind != "openai"

    def cache_key(self) -> str:
        """Identity for the answer cache: never the api key, never a label."""
        if self.kind == "openai":
            return f"openai|{self.base_url}|{self.model}"
        if self.kind == "adapter":
            return f"adapter|{self.model}|{adapter_hash(Path(self.adapter or ''))}"
        return f"base|{self.model}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("api_key")
        return d


def parse_candidate(spec: str, api_key: str | None = None) -> Candidate:
    """[LABEL=]base:MODEL | [LABEL=]adapter:MODEL:PATH | [LABEL=]openai:MODEL@BASE_URL."""
    label = ""
    head = spec.split(":", 1)[0]
    if "=" in head:
        label, spec = spec.split("=", 1)
    kind, _, rest = spec.partition(":")
    if kind == "base" and rest:
        return Candidate("base", rest, label=label)
    if kind == "adapter" and ":" in rest:
        model, path = rest.split(":", 1)
        return Candidate("adapter", model, adapter=path, label=label)
    if kind == "openai" and "@" in rest:
        model, url = rest.split("@", 1)
        key = api_key or os.environ.get("OPENAI_API_KEY") or "none"
        return Candidate("openai", model, base_url=url, api_key=key, label=label)
    raise FinetuneError(
        f"bad candidate {spec!r}: use base:MODEL, adapter:MODEL:PATH or openai:MODEL@BASE_URL"
    )


@dataclass
class Decoding:
    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None


@dataclass
class Answer:
    text: str = ""
    status: str = "ok"  # ok | error | timeout | skipped_budget | skipped_limit
    error: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = ""
    cached: bool = False


class ModelPool:
    """Loads each local (model, adapter) once; shared by answers, metrics and a local judge."""

    def __init__(self, quantization: str = "nf4", dtype: Any = None) -> None:
        self.quantization, self.dtype = quantization, dtype
        self.models: dict[tuple[str, str | None], ChatModel] = {}
        self.loads = 0

    def get(self, model: str, adapter: str | None = None) -> ChatModel:
        from finetune_core.infer import load_chat_model

        if (model, adapter) not in self.models:
            self.loads += 1
            self.models[(model, adapter)] = load_chat_model(
                model,
                adapter=adapter,
                quantization=self.quantization,  # type: ignore[arg-type]
                compute_dtype=self.dtype,
            )
        return self.models[(model, adapter)]


def _local_answers(
    chat: ChatModel, convs: list[list[dict]], dec: Decoding, batch: int, on_done: OnDone
) -> list:
    from finetune_core.infer import generate

    # Batches of similar length waste less compute on left padding; answers go back in order.
    order = sorted(range(len(convs)), key=lambda n: sum(len(m["content"]) for m in convs[n]))
    convs = [convs[n] for n in order]
    out: list[Answer] = []
    for i in range(0, len(convs), batch):
        try:
            gens = generate(
                chat,
                convs[i : i + batch],
                max_new_tokens=dec.max_new_tokens,
                temperature=dec.temperature,
                top_p=dec.top_p,
                seed=dec.seed,
            )
            out += [
                Answer(g.text, "ok", "", g.prompt_tokens, g.completion_tokens, g.finish_reason)
                for g in gens
            ]
        except (RuntimeError, ValueError) as exc:  # e.g. out of memory: record, keep going
            out += [Answer(status="error", error=f"{type(exc).__name__}: {exc}"[:500])] * len(
                convs[i : i + batch]
            )
        on_done(len(convs[i : i + batch]))
    back = [Answer()] * len(out)
    for n, answer in zip(order, out, strict=True):
        back[n] = answer
    return back


def generate_answers(
    candidates: Sequence[Candidate],
    evalset: EvalSet,
    *,
    decoding: Decoding | None = None,
    cache: AnswerCache | None = None,
    pool: ModelPool | None = None,
    batch_size: int = 8,
    endpoint_options: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
    hooks: Hooks | None = None,
) -> dict[str, dict[str, Answer]]:
    """{candidate label: {item id: Answer}}; only cache misses are generated.

    hooks: phase "answers" per candidate (info: candidate, cached, uncached), then
    progress("answers", done, total) over all candidates, cached answers at once and
    generated ones per batch; should_stop between batches raises Stopped (what earlier
    candidates answered stays cached)."""
    dec = decoding or Decoding()
    cache = cache if cache is not None else AnswerCache(":memory:")  # an empty one is falsy
    pool = pool or ModelPool()
    hooks = hooks or Hooks()
    result: dict[str, dict[str, Answer]] = {}
    now = {"candidate": ""}

    def report(done: int, total: int) -> None:
        hooks.progress("answers", done, total, dict(now))
        hooks.check("answers", {"answers_done": done})

    tally = Tally(len(evalset) * len(candidates), report)
    for cand in candidates:
        keys = {it.id: answer_key(cand.cache_key(), it.as_dicts(), asdict(dec)) for it in evalset}
        hits = cache.get_many(keys.values())
        answers = {i: Answer(**hits[k], cached=True) for i, k in keys.items() if k in hits}
        todo = [it for it in evalset if it.id not in answers]
        if progress:
            progress(f"{cand.label}: {len(answers)} cached, {len(todo)} to generate")
        now["candidate"] = cand.label
        hooks.phase("answers", {**now, "cached": len(answers), "uncached": len(todo)})
        tally.add(len(answers))
        if todo:
            fresh = _fresh_answers(cand, [it.as_dicts() for it in todo], dec, pool, batch_size,
                                   endpoint_options, tally.add)  # fmt: skip
            answers.update({it.id: a for it, a in zip(todo, fresh, strict=True)})
            cache.put_many(
                (keys[it.id], cand.label, it.id, asdict(a))
                for it, a in zip(todo, fresh, strict=True)
                if a.status == "ok"
            )
        result[cand.label] = {it.id: answers[it.id] for it in evalset}
    return result


def _fresh_answers(
    cand: Candidate,
    convs: list[list[dict]],
    dec: Decoding,
    pool: ModelPool,
    batch_size: int,
    endpoint_options: dict[str, Any] | None,
    on_done: OnDone,
) -> list[Answer]:
    if cand.local:
        chat = pool.get(cand.model, cand.adapter)
        return _local_answers(chat, convs, dec, batch_size, on_done)
    opts = {"budget": Budget(), **(endpoint_options or {})}
    ep = Endpoint(cand.base_url or "", cand.model, cand.api_key or "none", **opts)
    replies = ep.complete(
        convs,
        max_tokens=dec.max_new_tokens,
        temperature=dec.temperature,
        top_p=dec.top_p,
        seed=dec.seed,
        on_done=on_done,
    )
    return [
        Answer(r.text, r.status, r.error, r.prompt_tokens, r.completion_tokens, r.finish_reason)
        for r in replies
    ]
