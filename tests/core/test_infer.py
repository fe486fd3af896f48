"""Generation on the tiny model: greedy is deterministic, batching and streaming agree."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from finetune_core.infer import generate, load_chat_model
from finetune_core.infer.generate import _pending_stop, cut_at_stop

PROMPTS = [
    [{"role": "user", "content": "Hello there, how are you?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
]


@pytest.fixture(scope="module")
def chat():
    return load_chat_model("tiny-llama", quantization="none", compute_dtype=torch.float32)


def test_batched_greedy_matches_one_by_one(chat) -> None:
    batched = generate(chat, PROMPTS, max_new_tokens=12)
    single = [generate(chat, [p], max_new_tokens=12)[0] for p in PROMPTS]
    assert [g.text for g in batched] == [g.text for g in single]
    assert batched[0].prompt_tokens != batched[1].prompt_tokens  # left padding was needed
    assert all(g.completion_tokens <= 12 for g in batched)


def test_streamed_text_adds_up_to_the_answer(chat) -> None:
    pieces: dict[int, list[str]] = {0: [], 1: []}
    results = generate(
        chat, PROMPTS, max_new_tokens=10, on_text=lambda row, t: pieces[row].append(t)
    )
    for row, result in enumerate(results):
        assert "".join(pieces[row]) == result.text
        assert len(pieces[row]) > 1  # it arrived in several parts, as tokens were made


def test_sampling_follows_the_seed(chat) -> None:
    a = generate(chat, PROMPTS[:1], max_new_tokens=16, temperature=1.0, seed=1)[0].text
    b = generate(chat, PROMPTS[:1], max_new_tokens=16, temperature=1.0, seed=1)[0].text
    c = generate(chat, PROMPTS[:1], max_new_tokens=16, temperature=1.0, seed=2)[0].text
    assert a == b and a != c


def test_length_limit_is_reported(chat) -> None:
    result = generate(chat, PROMPTS[:1], max_new_tokens=3)[0]
    # The random model does not stop by itself within 3 tokens.
    assert result.finish_reason == "length" and result.completion_tokens == 3


@pytest.mark.parametrize(
    ("text", "stop", "cut", "held"),
    [
        ("abc[[A]]", ["[["], "abc", 0),
        ("abc[", ["[["], "abc[", 1),  # "[" may begin "[[": held back while streaming
        ("abc", ["[["], "abc", 0),
        ("x END y STOP", ["STOP", "END"], "x ", 0),  # the earliest of several
        ("ab", ["abc"], "ab", 2),
        ("", ["x"], "", 0),
    ],
)
def test_stop_strings_cut_and_hold_back(text: str, stop: list[str], cut: str, held: int) -> None:
    assert cut_at_stop(text, stop)[0] == cut
    assert _pending_stop(text, stop) == held


def test_generation_ends_before_a_stop_string(chat) -> None:
    full = generate(chat, PROMPTS, max_new_tokens=24)
    # A stop string from the middle of each greedy answer: the answer ends just before it.
    stops = [f.text[len(f.text) // 2 : len(f.text) // 2 + 3] for f in full]
    assert all(len(s) == 3 and s.strip() for s in stops)
    for row, prompt in enumerate(PROMPTS):
        pieces: list[str] = []
        (got,) = generate(
            chat,
            [prompt],
            max_new_tokens=24,
            stop=[stops[row], "never-produced"],
            on_text=lambda _r, t, into=pieces: into.append(t),
        )
        expected = full[row].text[: full[row].text.find(stops[row])]
        assert got.text == expected and got.finish_reason == "stop"
        assert "".join(pieces) == expected  # the stop string was never streamed
        assert got.completion_tokens < full[row].completion_tokens
    # Batched rows stop each at their own string; the greedy text is unchanged.
    batched = generate(chat, PROMPTS, max_new_tokens=24, stop=stops)
    for row, g in enumerate(batched):
        assert cut_at_stop(full[row].text, stops)[0] == g.text


def test_default_compute_dtype_is_bf16_only_where_the_cpu_multiplies_it_faster() -> None:
    from finetune_core.models.loading import (
        BF16_MIN_SPEEDUP,
        cpu_bf16_speedup,
        cpu_has_native_bf16,
        default_compute_dtype,
    )

    cpu = torch.device("cpu")
    flags = set(Path("/proc/cpuinfo").read_text().split())
    native_bf16 = bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    assert cpu_has_native_bf16() == native_bf16
    speedup = cpu_bf16_speedup()
    # Without bf16 instructions a bf16 GEMM is emulated (AVX-512: 3x slower than fp32)
    # or takes PyTorch's scalar fallback (AVX2: 60x slower): not even timed.
    assert (speedup == 0.0) == (not native_bf16)
    assert speedup == cpu_bf16_speedup()  # timed once a process
    faster = speedup >= BF16_MIN_SPEEDUP
    assert default_compute_dtype(cpu) == (torch.bfloat16 if faster else torch.float32)
    # An operator may pin it, untimed; a typo is refused by name.
    with pytest.MonkeyPatch.context() as env:
        for value, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
            env.setenv("TUNEBOOK_CPU_DTYPE", value)
            assert default_compute_dtype(cpu) == dtype
        env.setenv("TUNEBOOK_CPU_DTYPE", "fp16")
        with pytest.raises(ValueError, match="TUNEBOOK_CPU_DTYPE must be bf16 or fp32"):
            default_compute_dtype(cpu)
    chat = load_chat_model("tiny-llama", quantization="nf4")
    weights = {p.dtype for p in chat.model.parameters() if p.dtype.is_floating_point}
    assert weights == {default_compute_dtype(cpu)}
    # Asked for explicitly, a dtype is honoured on any CPU.
    assert (
        next(
            load_chat_model(
                "tiny-llama", quantization="none", compute_dtype=torch.bfloat16
            ).model.parameters()
        ).dtype
        == torch.bfloat16
    )
    assert generate(chat, PROMPTS[:1], max_new_tokens=4)[0].completion_tokens > 0
