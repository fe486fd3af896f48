"""The torch-free export contract the web app reads agrees with the engine's GGUF writer."""

from __future__ import annotations

from finetune_core.contracts.layout import GGUF_ARCHITECTURES
from finetune_core.export.gguf_arch import ARCHITECTURES


def test_contract_names_exactly_the_architectures_the_gguf_writer_knows() -> None:
    gguf_names = {arch.gguf_name for arch in ARCHITECTURES.values()}
    assert set(GGUF_ARCHITECTURES) == set(ARCHITECTURES) | gguf_names
