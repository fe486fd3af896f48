"""GGUF export: the merged model's tensors, named and laid out for llama.cpp, in f16 or
quantized (q8_0, q4_0: gguf's own quantizers), with the tokenizer and chat template in the
metadata and an Ollama Modelfile beside it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch

from finetune_core.export.adapter import trained_against
from finetune_core.export.common import ExportError, ExportRecord, FinishedRun, Reporter
from finetune_core.export.gguf_arch import Architecture, architecture_for
from finetune_core.export.gguf_tokenizer import add_tokenizer
from finetune_core.export.merged import merged_model, run_tokenizer
from finetune_core.export.modelfile import modelfile
from finetune_core.models.prepare import prepare

Q = gguf.GGMLQuantizationType
# Our type name -> (the type of every matrix, the file type llama.cpp reports)
GGUF_TYPES = {
    "f16": (Q.F16, gguf.LlamaFileType.MOSTLY_F16),
    "q8_0": (Q.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
    "q4_0": (Q.Q4_0, gguf.LlamaFileType.MOSTLY_Q4_0),
}


def tensor_type(name: str, shape: tuple[int, ...], type_: str) -> Q:
    """Vectors (norms) stay f32, as llama.cpp expects; matrices take the chosen type, whose
    blocks must tile each row exactly."""
    if len(shape) < 2:
        return Q.F32
    qtype = GGUF_TYPES[type_][0]
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    if shape[-1] % block:
        raise ExportError(
            f"{type_} packs rows in blocks of {block} values, but tensor {name!r} has rows of "
            f"{shape[-1]} (shape {list(shape)}); choose f16",
            code="export_type_does_not_fit",
        )
    return qtype


def _base_config_and_shapes(run: FinishedRun) -> tuple[Any, dict[str, tuple[int, ...]]]:
    """The base's config and tensor shapes, read from file headers (no weights loaded)."""
    from safetensors import safe_open
    from transformers import AutoConfig

    folder = prepare(run.base_model)
    shapes: dict[str, tuple[int, ...]] = {}
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(path, "pt") as f:
            shapes.update({k: tuple(f.get_slice(k).get_shape()) for k in f.keys()})
    return AutoConfig.from_pretrained(folder), shapes


def check_gguf(run: FinishedRun, type_: str) -> None:
    """Refuse, before any work, an architecture the writer does not know or a type that
    does not fit a tensor."""
    config, shapes = _base_config_and_shapes(run)
    arch = architecture_for(config)
    for name, shape in shapes.items():
        tensor_type(arch.gguf_tensor_name(name), shape, type_)


def _encode(weight: np.ndarray, qtype: Q) -> np.ndarray:
    if qtype == Q.F32:
        return weight.astype(np.float32)
    if qtype == Q.F16:
        return weight.astype(np.float16)
    return gguf.quants.quantize(weight.astype(np.float32), qtype)


def _add_tensors(
    writer: gguf.GGUFWriter, model: torch.nn.Module, arch: Architecture, type_: str, hooks: Reporter
) -> int:
    config = model.config
    state = model.state_dict()
    if getattr(config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)  # llama.cpp reuses token_embd
    for i, (hf_name, tensor) in enumerate(state.items()):
        hooks.report(f"converting {hf_name}", 0.3 + 0.5 * i / len(state))
        name = arch.gguf_tensor_name(hf_name)
        weight = arch.transform(name, tensor.detach().float().numpy(), config)
        qtype = tensor_type(name, weight.shape, type_)
        data = _encode(weight, qtype)
        writer.add_tensor(name, data, raw_dtype=qtype if qtype not in (Q.F16, Q.F32) else None)
    return len(state)


def gguf_file_name(run: FinishedRun, type_: str) -> str:
    return f"{run.folder.name}-{type_}.gguf"


def write_gguf_export(
    run: FinishedRun, out: Path, type_: str, *, record: ExportRecord, hooks: Reporter
) -> Path:
    model = merged_model(run, hooks)
    tokenizer = run_tokenizer(run)
    config = model.config
    arch = architecture_for(config)
    path = out / gguf_file_name(run, type_)
    writer = gguf.GGUFWriter(path, arch.gguf_name)
    writer.add_name(run.folder.name)
    writer.add_file_type(GGUF_TYPES[type_][1])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for key, value in arch.metadata(config).items():
        add = writer.add_float32 if isinstance(value, float) else writer.add_uint32
        add(f"{arch.gguf_name}.{key}", value)
    record.facts["tokenizer"] = add_tokenizer(writer, tokenizer, config.vocab_size)
    if not record.facts["tokenizer"]["merges"]:
        record.warnings.append(
            "the tokenizer has no BPE merges (a bytes-only vocabulary): llama.cpp refuses "
            "such a file; transformers' GGUF loader reads it"
        )
    record.facts["tensors"] = _add_tensors(writer, model, arch, type_, hooks)
    hooks.report("writing the GGUF file", 0.8)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    text, warnings = modelfile(path.name, tokenizer)
    (out / "Modelfile").write_text(text)
    record.warnings.extend(warnings)
    record.facts.update(
        architecture=arch.gguf_name, gguf_file=path.name, trained_against=trained_against(run)
    )
    return path
