"""Generation on the tiny model: greedy is deterministic, batching and streaming agree."""

from __future__ import annotations

import pytest
import torch

from finetune_core.infer import generate, load_chat_model

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
