"""The exported adapter folder, as-is, in the servers that load PEFT adapters.

vLLM: its own loader code, from its PyPI wheel (scripts/vllm_loader.py unpacks it; skipped,
saying so, until it has run), in a subprocess on our CPU torch (tests/core/
vllm_adapter_probe.py): a LoRA loads with the weights we wrote, DoRA is refused.

LoRAX: not on PyPI, so a rule check, not LoRAX's code: the rules below are read from
predibase/lorax at a7394ba (main, 2026-05-28; unchanged for these files since v0.12.1), each
rule naming its file. A LoRA loads whole; DoRA's magnitude vectors and rsLoRA's scaling are
dropped without an error, which the export's manifest says.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from finetune_core.export import export_run
from finetune_core.models import prepare
from finetune_core.train import TrainConfig, train
from scripts.vllm_loader import TARGET as VLLM_LOADER
from scripts.vllm_loader import VLLM_VERSION
from tests.core.test_train import QA, write_chat

PROBE = Path(__file__).with_name("vllm_adapter_probe.py")
LAYERS = 2  # tiny-llama's num_hidden_layers
MODULES = {
    f"model.layers.{i}.{part}"
    for i in range(LAYERS)
    for part in (
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
    )
}  # fmt: skip


@pytest.fixture(scope="module")
def adapters(tmp_path_factory) -> dict[str, Path]:
    """Exported adapters of three 4-step tiny-llama runs: LoRA, DoRA, rsLoRA (r=8, alpha=16)."""
    folder = tmp_path_factory.mktemp("servers")
    data = str(write_chat(folder / "qa.jsonl", QA))
    out = {}
    for name, method, scaling in (
        ("lora", "lora", "standard"), ("dora", "dora", "standard"), ("rslora", "lora", "rslora")
    ):  # fmt: skip
        cfg = TrainConfig(
            model="tiny-llama", data=data, output_dir=str(folder / name), batch_size=2,
            max_length=128, learning_rate=2e-2, lora_r=8, lora_alpha=16, warmup_ratio=0.0,
            max_steps=4, eval_every=4, save_every=4, val_fraction=0.2, method=method,
            lora_scaling=scaling,
        )  # fmt: skip
        assert train(cfg).status == "succeeded"
        out[name] = folder / "exports" / name
        export_run(Path(cfg.output_dir), fmt="adapter", out=out[name])
    return out


# --- vLLM: its own code -------------------------------------------------------------------


@pytest.fixture
def vllm_loader() -> Path:
    """Asked for before `adapters`, so a skip trains nothing."""
    if not (VLLM_LOADER / "src" / "vllm").is_dir():
        pytest.skip(
            f"vLLM {VLLM_VERSION}'s loader source is not unpacked in {VLLM_LOADER}: run "
            "`.venv/bin/python scripts/vllm_loader.py` (PyPI, about 320 MB, once)"
        )
    return VLLM_LOADER


def vllm_load(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    env = {
        **os.environ,
        "PYTHONPATH": f"{VLLM_LOADER / 'src'}{os.pathsep}{VLLM_LOADER / 'deps'}",
        # vLLM's CPU platform: with none named it takes a GPU one and pins host memory
        "VLLM_TARGET_DEVICE": "cpu",
    }
    done = subprocess.run(
        [sys.executable, str(PROBE), json.dumps(cases)],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_vllm_loads_the_lora_adapter_as_is_and_refuses_dora(
    vllm_loader, adapters, tmp_path
) -> None:
    vocab = json.loads((prepare("tiny-llama") / "config.json").read_text())["vocab_size"]

    def case(name: str, max_lora_rank: int = 16) -> dict[str, Any]:
        out = str(tmp_path / f"{name}-{max_lora_rank}.safetensors")
        return {"adapter": str(adapters[name]), "max_lora_rank": max_lora_rank,
                "vocab": vocab, "out": out}  # fmt: skip

    cases = [case("lora"), case("rslora"), case("lora", max_lora_rank=1), case("dora")]
    lora, rslora, small, dora = vllm_load(cases)
    assert lora["vllm"] == VLLM_VERSION and "refused" not in lora, lora.get("refused")
    assert set(lora["modules"]) == MODULES
    assert {(m["rank"], m["scaling"]) for m in lora["modules"].values()} == {(8, 16 / 8)}
    # the weights vLLM holds are the ones we wrote, lora_A as A and lora_B as B
    ours = load_file(adapters["lora"] / "adapter_model.safetensors")
    held = load_file(cases[0]["out"])
    for module in MODULES:
        for side in ("A", "B"):
            weight = ours[f"base_model.model.{module}.lora_{side}.weight"].float()
            assert torch.equal(held[f"{module}.lora_{side.lower()}"], weight), module

    assert {m["scaling"] for m in rslora["modules"].values()} == {16 / 8**0.5}
    # validate_legal did run: the rank against --max-lora-rank (vLLM's default is 16)
    assert small["refused"] == "LoRA rank 8 is greater than max_lora_rank 1."
    assert dora["refused"] == "vLLM does not yet support DoRA."


# --- LoRAX: a rule check, from its source ---------------------------------------------------

# lorax_server/models/flash_llama.py, FlashLlama.adapter_target_to_layer: the module names a
# Llama takes LoRA weights for (with ADAPTER_LAYERS' lm_head)
LORAX_LLAMA_TARGETS = tuple(
    f"model.layers.{i}.{part}"
    for i in range(LAYERS)
    for part in (
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
    )
) + ("lm_head",)  # fmt: skip


def lorax_load(folder: Path) -> tuple[set[str], list[str]]:
    """The modules LoRAX loads from an adapter folder, and what it silently gets wrong."""
    problems = []
    # lorax_server/adapters/__init__.py, load_adapter_config: adapter_config.json makes it a
    # LoRA adapter; a config.json with medusa_num_heads would make it a Medusa one
    config = json.loads((folder / "adapter_config.json").read_text())
    if (folder / "config.json").is_file():
        assert "medusa_num_heads" not in json.loads((folder / "config.json").read_text())
    # lorax_server/adapters/lora.py, LoraConfig.load: peft's LoraConfig.from_pretrained, with
    # peft pinned to 0.4.0 (server/pyproject.toml), which keeps only the fields it knows:
    # r, lora_alpha, target_modules, fan_in_fan_out, base_model_name_or_path. use_rslora
    # is read only `if hasattr(hf_config, "use_rslora")`, and 0.4.0 has none; use_dora is
    # never read.
    assert config["peft_type"] == "LORA" and config["fan_in_fan_out"] is False
    if config.get("use_rslora"):
        problems.append("use_rslora dropped: scaled by alpha/r")
    if config.get("use_dora"):
        problems.append("use_dora dropped")
    # lorax_server/utils/sources/local.py, LocalModelSource.weight_files: every *.safetensors
    # in the folder is read as adapter weights
    files = sorted(p.name for p in folder.glob("*.safetensors"))
    assert files == ["adapter_model.safetensors"], files
    with safe_open(folder / files[0], framework="pt") as f:
        names = set(f.keys())
    # lorax_server/adapters/lora.py, LoraConfig.map_weights_for_model: a module is loaded
    # when both base_model.model.{name}.lora_A.weight and .lora_B.weight are there; nothing
    # else is read. models/model.py, load_adapter, warns only about mapped names left
    # unused, so other tensors go without a word.
    loaded, read = set(), set()
    for name in LORAX_LLAMA_TARGETS:
        pair = {f"base_model.model.{name}.lora_{side}.weight" for side in "AB"}
        if pair <= names:
            loaded.add(name)
            read |= pair
    if names - read:
        kinds = sorted({re.sub(r"^.*\.layers\.\d+\.[\w.]*?_proj\.", "", n) for n in names - read})
        problems.append(f"not loaded: {', '.join(kinds)}")
    # lorax_server/utils/adapter.py, load_module_map: a base_model_name_or_path other than the
    # served model is compared by AutoConfig architectures (the same: a warning; another:
    # refused; unreachable: assumed compatible), so a public hub id is what it wants
    return loaded, problems


def test_lorax_rules_load_the_lora_adapter_and_drop_dora_and_rslora(adapters) -> None:
    assert lorax_load(adapters["lora"]) == (MODULES, [])
    loaded, problems = lorax_load(adapters["dora"])
    assert loaded == MODULES  # served as a plain LoRA: the magnitudes are gone
    assert problems == ["use_dora dropped", "not loaded: lora_magnitude_vector"]
    assert lorax_load(adapters["rslora"]) == (MODULES, ["use_rslora dropped: scaled by alpha/r"])


def test_the_manifest_says_where_dora_and_rslora_adapters_cannot_go(adapters) -> None:
    def warnings(name: str) -> list[str]:
        return json.loads((adapters[name] / "export.json").read_text())["warnings"]

    assert not any("vLLM" in w for w in warnings("lora"))  # only tiny-llama's local base
    assert any("vLLM (0.34) refuses DoRA" in w and "merged export" in w for w in warnings("dora"))
    assert any("LoRAX reads the config with peft 0.4.0" in w for w in warnings("rslora"))
