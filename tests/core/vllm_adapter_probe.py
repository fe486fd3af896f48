"""vLLM's own LoRA adapter loader run on an adapter folder, the steps its LoRA worker takes
(`vllm/lora/worker_manager.py`, `_load_adapter`): `PEFTHelper.from_local_dir`,
`validate_legal` against a `LoRAConfig`, then `LoRAModel.from_local_checkpoint` with the
modules a Llama in vLLM takes LoRA on.

Run in a subprocess with vLLM's Python source (unpacked from its wheel by
`scripts/vllm_loader.py`) on PYTHONPATH, so vLLM's imports and globals stay out of the test
process: `python vllm_adapter_probe.py CASES_JSON`, a list of {adapter, max_lora_rank, vocab,
out}. Prints a JSON list, one per case: vLLM's version, and either `refused` (vLLM's
message) or each module's rank and scaling; the weights vLLM loaded are written to `out`
for the test to compare with the adapter's file.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import torch
import vllm.model_executor.models.llama as vllm_llama
from safetensors.torch import save_file
from vllm.config.lora import LoRAConfig
from vllm.lora.lora_model import LoRAModel
from vllm.lora.peft_helper import PEFTHelper
from vllm.version import __version__


def llama_lora_modules() -> set[str]:
    """What `_load_adapter` expects for a Llama: the model's LoRA-capable layer names
    (`get_supported_lora_modules`: its linear layers and `embedding_modules`), packed ones
    expanded by `packed_modules_mapping`. `get_supported_lora_modules` walks a built model,
    which needs an accelerator platform; the same names come from the model's source."""
    cls = vllm_llama.LlamaForCausalLM
    source = Path(vllm_llama.__file__).read_text()
    linear = set(re.findall(r"self\.(\w+) = \w*Linear\(", source))
    expected: set[str] = set()
    for module in linear | set(cls.embedding_modules):
        expected.update(cls.packed_modules_mapping.get(module, [module]))
    return expected


def main(*, adapter: str, max_lora_rank: int, vocab: int, out: str) -> dict:
    result: dict = {"vllm": __version__, "expected_modules": sorted(llama_lora_modules())}
    try:
        helper = PEFTHelper.from_local_dir(adapter, max_position_embeddings=None)
        helper.validate_legal(LoRAConfig(max_lora_rank=max_lora_rank))
        model = LoRAModel.from_local_checkpoint(
            adapter, llama_lora_modules(), peft_helper=helper, lora_model_id=1,
            device="cpu", dtype=torch.float32, model_vocab_size=vocab,
        )  # fmt: skip
    except ValueError as refused:  # vLLM reports every refusal as a ValueError
        result["refused"] = str(refused)
        return result
    result["modules"] = {
        name: {"rank": w.rank, "scaling": w.scaling} for name, w in model.loras.items()
    }
    tensors = {}
    for name, w in model.loras.items():
        tensors[f"{name}.lora_a"] = w.lora_a.contiguous()
        tensors[f"{name}.lora_b"] = w.lora_b.contiguous()
    save_file(tensors, out)
    return result


if __name__ == "__main__":
    cases = json.loads(sys.argv[1])
    print(json.dumps([main(**case) for case in cases]))
