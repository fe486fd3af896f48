"""Top-p without the full sort keeps transformers' nucleus, and sampling still samples."""

from __future__ import annotations

import pytest
import torch
from transformers import TemperatureLogitsWarper, TopPLogitsWarper

from finetune_core.infer import generate, load_chat_model
from finetune_core.infer.nucleus import NucleusSampling

VOCAB = 262_144  # Gemma-3's, where the full sort cost the most


def transformers_nucleus(scores: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    warped = TemperatureLogitsWarper(temperature)(None, scores.clone())
    return TopPLogitsWarper(top_p)(None, warped)


@pytest.mark.parametrize("temperature", [0.7, 1.0, 1.3])
def test_a_peaked_distribution_keeps_exactly_transformers_nucleus(temperature: float) -> None:
    torch.manual_seed(0)
    scores = torch.randn(8, VOCAB) * 10  # a few tokens hold the mass
    ours = NucleusSampling(temperature, 0.95)(None, scores.clone())
    theirs = transformers_nucleus(scores, temperature, 0.95)
    assert torch.equal(torch.isinf(ours), torch.isinf(theirs))
    kept = ~torch.isinf(ours)
    assert torch.allclose(ours[kept], theirs[kept])  # the temperature was applied
    assert kept.sum() > 8 and kept.sum(-1).max() < 1024  # all rows on the fast path


def test_a_flat_distribution_takes_the_full_sort_and_agrees_up_to_rounding() -> None:
    torch.manual_seed(1)
    scores = torch.randn(4, VOCAB) * 0.5  # the nucleus holds most of the vocabulary
    ours = NucleusSampling(1.0, 0.9)(None, scores.clone())
    theirs = transformers_nucleus(scores, 1.0, 0.9)
    kept = ~torch.isinf(ours)
    assert (kept.sum(-1) > 100_000).all()
    # Both sum 262,144 float32s in a different order: they may differ only at the edge.
    probs = scores.softmax(-1)
    differ = kept != ~torch.isinf(theirs)
    assert probs[differ].sum() < 1e-4
    for row in range(4):
        assert probs[row][kept[row]].sum() >= 0.9 - 1e-4


def test_the_most_likely_token_always_stays_and_top_p_1_keeps_all() -> None:
    scores = torch.tensor([[10.0, 0.0, -1.0, -2.0]])
    assert torch.isinf(NucleusSampling(1.0, 0.01)(None, scores)).tolist() == [
        [False, True, True, True]
    ]
    assert torch.equal(NucleusSampling(2.0, 1.0)(None, scores), scores / 2)
    with pytest.raises(ValueError, match="temperature"):
        NucleusSampling(0.0, 0.9)
    with pytest.raises(ValueError, match="top_p"):
        NucleusSampling(1.0, 1.5)


def test_sampled_chat_is_reproducible_and_varies_with_the_seed() -> None:
    chat = load_chat_model("tiny-llama", quantization="none")
    prompt = [[{"role": "user", "content": "Write a word."}]] * 4

    def sample(seed: int) -> list[str]:
        return [
            g.text
            for g in generate(chat, prompt, max_new_tokens=8, temperature=1.0, top_p=0.9, seed=seed)
        ]

    first = sample(3)
    assert sample(3) == first
    assert len(set(first) | set(sample(4))) > 1  # sampled, not greedy
