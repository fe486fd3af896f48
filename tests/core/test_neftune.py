"""NEFTune (`neftune_alpha`): noise on the input embeddings while training only, bounded
by alpha/sqrt(tokens x width), and a run that uses it still resumes exactly."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from finetune_core.train import train
from finetune_core.train.setup import build_model
from tests.core.test_train import adapter_tensors, config, watching


def test_noise_only_while_training_and_within_its_bound(tmp_path: Path) -> None:
    alpha = 5.0
    model = build_model(config(tmp_path, "noise", neftune_alpha=alpha, quantization="none"))
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    embed = model.get_input_embeddings()
    clean = torch.nn.functional.embedding(ids, embed.weight)
    model.train()
    first, second = embed(ids).detach(), embed(ids).detach()
    bound = alpha / math.sqrt(clean.size(-2) * clean.size(-1))
    assert not torch.equal(first, second)  # fresh noise each pass
    drift = float((first.float() - clean.float()).abs().max())
    # bf16 embeddings (CPUs with bf16 instructions): the noisy sum rounds by up to 2^-9.
    assert bound / 10 < drift <= bound + 2**-8  # really noise, and within its bound
    model.eval()
    assert torch.equal(embed(ids).detach(), clean)


def test_a_noisy_run_resumes_to_the_same_adapter(tmp_path: Path) -> None:
    full = train(config(tmp_path, "full", max_steps=4, neftune_alpha=5.0))
    seen: list[int] = []
    stopped = config(tmp_path, "stopped", max_steps=4, neftune_alpha=5.0)
    first = train(stopped, hooks=watching(lambda e: seen.append(e.step), lambda: 3 in seen))
    assert first.status == "cancelled"
    second = train(stopped, resume=True)
    a, b = (
        adapter_tensors(full.output_dir / "adapter"),
        adapter_tensors(second.output_dir / "adapter"),
    )
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-3, atol=5e-5)
    plain = adapter_tensors(train(config(tmp_path, "plain", max_steps=4)).output_dir / "adapter")
    assert any(not torch.allclose(a[k], plain[k], atol=1e-4) for k in a)  # the noise mattered
