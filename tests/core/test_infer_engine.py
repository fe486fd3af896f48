"""The continuous-batching engine on the tiny model: every answer from a mixed batch
(several adapters, prompts of different lengths, requests joining mid-way and leaving) is
the answer the single-request path gives alone; seeds, cancel, usage and stop strings."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from finetune_core.data.render import render_prompt
from finetune_core.data.types import Message
from finetune_core.infer import generate, load_chat_model
from finetune_core.infer.batch_cache import BatchKV
from finetune_core.infer.engine import Engine, Request
from finetune_core.models import load_model, load_tokenizer

MODEL = "tiny-llama"
PROMPTS = [
    [{"role": "user", "content": "Hello there, how are you?"}],
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "Be brief. " * 12}, {"role": "user", "content": "Tell me more"}],
    [{"role": "user", "content": "Why is the sky blue?"}],
]


@pytest.fixture(scope="module")
def adapters(tmp_path_factory) -> dict[str, str]:
    """Three LoRA adapters of random weights (unlike a fresh LoRA, they change answers):
    different ranks and scalings, one rank-stabilised."""
    from peft import LoraConfig, get_peft_model

    folders = {}
    for i, (r, alpha, rslora) in enumerate([(4, 8, False), (8, 32, False), (16, 16, True)]):
        base = load_model(MODEL, quantization="none", compute_dtype=torch.float32)
        torch.manual_seed(i)
        config = LoraConfig(
            r=r,
            lora_alpha=alpha,
            use_rslora=rslora,
            target_modules="all-linear",
            init_lora_weights=False,
        )
        folder = tmp_path_factory.mktemp("adapters") / f"a{i}"
        get_peft_model(base, config).save_pretrained(folder)
        folders[f"a{i}"] = str(folder)
    return folders


@pytest.fixture(scope="module")
def alone(adapters):
    """The existing single-request path, one ChatModel per adapter (None: the base)."""
    chats = {
        name: load_chat_model(
            MODEL, adapter=adapters.get(name), quantization="none", compute_dtype=torch.float32
        )
        for name in [None, *adapters]
    }

    def answer(request: Request):
        return generate(
            chats[request.adapter],
            [request.messages],
            max_new_tokens=request.max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            seed=request.seed,
            stop=request.stop,
        )[0]

    return answer


def engine(adapters, *, lora: str = "batched", quantization: str = "none", **kw) -> Engine:
    model = load_model(MODEL, quantization=quantization, compute_dtype=torch.float32).eval()
    return Engine(model, load_tokenizer(MODEL), adapters=adapters, lora=lora, **kw)


def same(handle, expected) -> bool:
    return (
        handle.text == expected.text
        and handle.completion_tokens == expected.completion_tokens
        and handle.finish_reason == expected.finish_reason
    )


@pytest.mark.parametrize("lora", ["batched", "peft"])
def test_greedy_mixed_batch_equals_each_request_alone(adapters, alone, lora: str) -> None:
    eng = engine(adapters, lora=lora, prefill_tokens=96)
    eng.cache = BatchKV(rows=1, columns=8)  # grows and moves rows around as they come and go
    batches, chunks = [], []  # what the prefill did: padded batches, chunked pieces
    batch, chunk = eng._prefill_batch, eng._prefill_chunk
    eng._prefill_batch = lambda rows: (batches.append(len(rows)), batch(rows))
    eng._prefill_chunk = lambda row, n: (chunks.append(n), chunk(row, n))
    names = [None, *adapters]
    first = [
        Request(messages=p, adapter=names[i % 4], max_tokens=6 + 5 * i)
        for i, p in enumerate(PROMPTS)
    ]
    later = [
        Request(messages=p, adapter=names[(i + 1) % 4], max_tokens=10 + 3 * i)
        for i, p in enumerate(reversed(PROMPTS))
    ]
    handles = [eng.submit(r) for r in first]
    for _ in range(2):  # the long prompt is still being prefilled in chunks
        eng.step()
    assert len(eng.active) == 2 and eng.chunked is not None
    handles += [eng.submit(r) for r in later[:2]]
    for _ in range(7):  # the shortest answer (6 tokens) has left the batch by now
        eng.step()
    assert handles[0].done and not handles[3].done
    handles += [eng.submit(r) for r in later[2:]]
    eng.run_until_idle()
    for request, handle in zip(first + later, handles, strict=True):
        expected = alone(request)
        assert same(handle, expected), (request, handle.text, expected.text)
        assert handle.finish_reason in ("stop", "length")
        assert handle.completion_tokens <= request.max_tokens
    assert len({h.text for h in handles}) == len(handles)  # the adapters change the answers
    assert max(batches) >= 2 and len(chunks) >= 3 and min(chunks) < 96


def test_greedy_mixed_batch_on_nf4(adapters) -> None:
    requests = [
        Request(messages=p, adapter=a, max_tokens=12)
        for p, a in zip(PROMPTS, [None, "a0", "a1", "a2"], strict=True)
    ]
    batched = engine(adapters, quantization="nf4", prefill_tokens=16)
    handles = [batched.submit(r) for r in requests]
    batched.run_until_idle()
    for request, handle in zip(requests, handles, strict=True):
        chat = load_chat_model(
            MODEL,
            adapter=adapters.get(request.adapter),
            quantization="nf4",
            compute_dtype=torch.float32,
        )
        assert handle.text == generate(chat, [request.messages], max_new_tokens=12)[0].text


def test_seeded_sampling_is_the_same_alone_and_batched(adapters, alone) -> None:
    sampled = Request(
        messages=PROMPTS[0], adapter="a1", max_tokens=20, temperature=0.9, top_p=0.8, seed=11
    )
    eng = engine(adapters, prefill_tokens=32)
    by_itself = eng.submit(sampled).result()
    mates = [
        Request(messages=p, adapter=a, max_tokens=20, temperature=1.0, seed=None)
        for p, a in zip(PROMPTS, ["a0", None, "a2", "a1"], strict=True)
    ]
    handles = [eng.submit(r) for r in mates[:2]]
    eng.step()
    handle = eng.submit(sampled)
    handles += [eng.submit(r) for r in mates[2:]]
    eng.run_until_idle()
    assert handle.text == by_itself.text
    # ... and what the single-request path samples with the same seed.
    assert same(handle, alone(sampled))
    other = eng.submit(Request(**{**sampled.__dict__, "seed": 12})).result()
    assert other.text != by_itself.text


def test_cancel_removes_a_row_and_the_others_go_on(adapters, alone) -> None:
    eng = engine(adapters)
    requests = [
        Request(messages=p, adapter=a, max_tokens=16)
        for p, a in zip(PROMPTS, [None, "a0", "a1", "a2"], strict=True)
    ]
    handles = [eng.submit(r) for r in requests]
    for _ in range(4):
        eng.step()
    eng.cancel(handles[1])
    text, tokens = handles[1].text, handles[1].completion_tokens
    eng.step()
    assert handles[1].done and handles[1].finish_reason == "cancelled"
    assert len(eng.active) == 3 and handles[1] not in [r.handle for r in eng.active]
    eng.run_until_idle()
    assert handles[1].text == text and handles[1].completion_tokens == tokens
    for i in (0, 2, 3):
        assert same(handles[i], alone(requests[i]))
    # A request cancelled before it was prefilled never runs.
    waiting = eng.submit(requests[0])
    eng.cancel(waiting)
    assert (
        list(waiting) == []
        and waiting.finish_reason == "cancelled"
        and waiting.completion_tokens == 0
    )


def test_usage_and_finish_reason(adapters, alone) -> None:
    eng = engine(adapters)
    tok = load_tokenizer(MODEL)
    request = Request(messages=PROMPTS[0], adapter="a0", max_tokens=3)
    handle = eng.submit(request)
    deltas = list(handle)
    prompt_tokens = len(render_prompt(tok, [Message(**m) for m in PROMPTS[0]]))
    assert handle.finish_reason == "length"
    assert handle.usage == {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": 3,
        "total_tokens": prompt_tokens + 3,
    }
    assert "".join(deltas) == handle.text == alone(request).text
    # An end-of-turn token ends the answer with "stop", counted but left out of the text
    # (as generate counts it): make the greedy answer's 5th token the end of turn.
    full = eng.submit(Request(messages=PROMPTS[3], max_tokens=12))
    full.result()
    k = next(i for i, t in enumerate(full.token_ids) if i >= 4 and t not in full.token_ids[:i])
    eng.stop_ids = eng.stop_ids | {full.token_ids[k]}
    ended = eng.submit(Request(messages=PROMPTS[3], max_tokens=12)).result()
    assert ended.finish_reason == "stop" and ended.completion_tokens == k + 1
    assert ended.text == tok.decode(full.token_ids[:k], skip_special_tokens=True)


def test_stop_strings_end_each_answer_before_the_string(adapters, alone) -> None:
    eng = engine(adapters)
    plain = [
        Request(messages=p, adapter=a, max_tokens=24)
        for p, a in zip(PROMPTS, ["a0", None, "a1", "a2"], strict=True)
    ]
    texts = [alone(r).text for r in plain]
    stops = [t[len(t) // 2 : len(t) // 2 + 3] for t in texts]
    requests = [
        Request(**{**r.__dict__, "stop": [s, "never-produced"]})
        for r, s in zip(plain, stops, strict=True)
    ]
    handles = [eng.submit(r) for r in requests]
    pieces: list[list[str]] = [[] for _ in handles]
    while not eng.idle:
        eng.step()
        for i, h in enumerate(handles):
            while not h._deltas.empty():
                piece = h._deltas.get()
                if piece is not None:
                    pieces[i].append(piece)
    for request, handle, text, stop, streamed in zip(
        requests, handles, texts, stops, pieces, strict=True
    ):
        expected = alone(request)
        assert handle.text == text[: text.find(stop)] == expected.text
        assert "".join(streamed) == handle.text and stop not in handle.text
        assert handle.finish_reason == "stop" == expected.finish_reason
        assert handle.completion_tokens == expected.completion_tokens < 24


def test_a_long_prompt_is_prefilled_in_chunks_while_others_decode(adapters) -> None:
    eng = engine(adapters, prefill_tokens=48)
    short = [
        eng.submit(Request(messages=PROMPTS[1], adapter=a, max_tokens=40)) for a in ("a0", None)
    ]
    eng.step()  # both prefilled in one padded forward, both have their first token
    assert all(h.completion_tokens == 1 for h in short)
    long = eng.submit(Request(messages=PROMPTS[2], adapter="a2", max_tokens=4))
    steps = 0
    while long.first_token_at is None:
        before = [h.completion_tokens for h in short]
        eng.step()
        steps += 1
        assert [h.completion_tokens for h in short] == [b + 1 for b in before]  # no stall
    assert steps == -(-len(long.prompt_ids) // 48) > 3


def test_requests_from_threads_with_the_engine_on_its_own_thread(adapters, alone) -> None:
    eng = engine(adapters)
    requests = [
        Request(messages=p, adapter=a, max_tokens=10)
        for p, a in zip(PROMPTS, [None, "a0", "a1", "a2"], strict=True)
    ]
    results: dict[int, str] = {}

    def client(i: int) -> None:
        results[i] = "".join(eng.submit(requests[i]))

    eng.start()
    try:
        clients = [threading.Thread(target=client, args=(i,)) for i in range(len(requests))]
        for t in clients:
            t.start()
        for t in clients:
            t.join(60)
    finally:
        eng.stop()
    assert [results[i] for i in range(len(requests))] == [alone(r).text for r in requests]


def test_a_failed_forward_ends_the_requests_in_flight_and_the_next_are_served(
    adapters, alone
) -> None:
    eng = engine(adapters)
    requests = [Request(messages=p, adapter="a0", max_tokens=6) for p in PROMPTS[:2]]
    handles = [eng.submit(r) for r in requests]
    eng.step()
    forward = eng.model.forward

    def broken(*args, **kwargs):
        eng.model.forward = forward  # once
        raise RuntimeError("out of memory")

    eng.model.forward = broken
    with pytest.raises(RuntimeError, match="out of memory"):
        eng.step()
    for handle in handles:
        assert handle.finish_reason == "error" and handle.done
        with pytest.raises(RuntimeError, match="out of memory"):
            list(handle)
    assert eng.idle
    after = eng.submit(requests[1]).result()
    assert after.text == alone(requests[1]).text


def test_refusals(adapters, tmp_path: Path) -> None:
    eng = engine(adapters)
    with pytest.raises(ValueError, match="no adapter"):
        eng.submit(Request(messages=PROMPTS[0], adapter="nope"))
    with pytest.raises(ValueError, match="messages or a prompt"):
        eng.submit(Request())
    with pytest.raises(ValueError, match="max_tokens"):
        eng.submit(Request(prompt="hi", max_tokens=0))
    assert eng.submit(Request(prompt="Once upon", max_tokens=2)).result().completion_tokens == 2
