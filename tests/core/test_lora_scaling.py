"""`lora_scaling`: rank-stabilised LoRA scales the update by alpha / sqrt(rank), not alpha /
rank, and the adapter saved says so, so plain PEFT loads it with the same scale."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from finetune_core.train.setup import build_model
from tests.core.test_train import config


@pytest.mark.parametrize(("scaling", "expected"), [("standard", 32 / 16), ("rslora", 32 / 4)])
def test_the_scale_of_each_adapted_layer(tmp_path: Path, scaling: str, expected: float) -> None:
    cfg = config(tmp_path, scaling, lora_r=16, lora_alpha=32, lora_scaling=scaling)
    model = build_model(cfg)
    scales = {
        scale
        for module in model.modules()
        if isinstance(getattr(module, "scaling", None), dict)
        for scale in module.scaling.values()
    }
    assert scales and all(math.isclose(s, expected) for s in scales), scales
    model.save_pretrained(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "adapter_config.json").read_text())
    assert saved["use_rslora"] is (scaling == "rslora")
