"""Shared fixtures for the core tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Models and tokenizers build into the repo's cache, never a user's home.
os.environ.setdefault("FINETUNE_CORE_CACHE", str(REPO / ".cache"))


@pytest.fixture(scope="session")
def tiny_tokenizer():  # -> PreTrainedTokenizerBase
    """The tiny model's byte-level tokenizer with a ChatML template (builds locally)."""
    from finetune_core.models import load_tokenizer

    return load_tokenizer("tiny-llama")


@pytest.fixture(params=["avx512", "avx2"])
def isa(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each CPU kernel test runs on both compiled paths (AVX2 forced by environment)."""
    if request.param == "avx2":
        monkeypatch.setenv("TUNEBOOK_NF4_ISA", "avx2")
    return request.param


@pytest.fixture(scope="module")
def pool():  # -> ModelPool
    """Unquantized fp32 models, loaded once per module (evaluation and hooks tests)."""
    import torch

    from finetune_core.evaluate import ModelPool

    return ModelPool("none", torch.float32)
