"""GGUF export of a tiny-llama run, read back by gguf's reader and transformers' GGUF
loader; refusals (unknown architecture, a type that does not fit) leave no files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

from finetune_core.export import ExportError, export_run
from finetune_core.export.gguf_export import tensor_type
from tests.core.test_export import leftovers, tiny_run


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("run"))


def test_f16_gguf_holds_the_merged_weights_tokenizer_and_template(run, tmp_path) -> None:
    from transformers import AutoModelForCausalLM

    manifest = export_run(run, fmt="gguf", type_="f16", out=tmp_path / "gguf")
    merged_dir = tmp_path / "merged"
    export_run(run, fmt="merged", type_="f16", out=merged_dir, measure=False)
    path = tmp_path / "gguf" / manifest["gguf_file"]
    assert manifest["gguf_file"] == "lora-f16.gguf" and leftovers(tmp_path) == []

    reader = gguf.GGUFReader(path)
    fields = {k: f.contents() for k, f in reader.fields.items() if k != "tokenizer.ggml.tokens"}
    assert fields["general.architecture"] == "llama" and fields["llama.block_count"] == 2
    assert "<|im_start|>" in fields["tokenizer.chat_template"]
    assert fields["tokenizer.ggml.eos_token_id"] == 257  # <|im_end|>
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == "F16" and types["blk.0.attn_norm.weight"] == "F32"

    # A second reader: transformers undoes llama.cpp's layout and finds the merged weights.
    ours = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name).state_dict()
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).state_dict()
    assert ours.keys() == merged.keys()
    assert all(torch.equal(ours[k].to(merged[k].dtype), merged[k]) for k in merged)

    modelfile = (tmp_path / "gguf" / "Modelfile").read_text()
    assert modelfile.startswith('FROM ./lora-f16.gguf\nTEMPLATE """')
    assert 'PARAMETER stop "<|im_end|>"' in modelfile
    assert {f["name"] for f in manifest["files"]} == {"lora-f16.gguf", "Modelfile"}
    assert manifest["trained_against"]["file"] == "model.safetensors"


@pytest.mark.parametrize(
    ("type_", "ggml", "ratio"), [("q8_0", "Q8_0", 34 / 64), ("q4_0", "Q4_0", 18 / 64)]
)
def test_quantized_gguf_types_and_sizes(run, tmp_path, type_, ggml, ratio) -> None:
    f16 = export_run(run, fmt="gguf", type_="f16", out=tmp_path / "f16")
    quant = export_run(run, fmt="gguf", type_=type_, out=tmp_path / type_)
    reader = gguf.GGUFReader(tmp_path / type_ / quant["gguf_file"])
    matrices = {t.tensor_type.name for t in reader.tensors if len(t.shape) == 2}
    assert matrices == {ggml}
    q_bytes = sum(int(t.n_bytes) for t in reader.tensors if len(t.shape) == 2)
    f_reader = gguf.GGUFReader(tmp_path / "f16" / f16["gguf_file"])
    f_bytes = sum(int(t.n_bytes) for t in f_reader.tensors if len(t.shape) == 2)
    assert q_bytes == pytest.approx(f_bytes * ratio)  # 32 values in 34 (q8_0) or 18 bytes


def fake_run(tmp_path: Path, real_run: Path, base: Path) -> Path:
    """A finished run's files over another base: the export refuses before reading them."""
    folder = tmp_path / "other"
    shutil.copytree(real_run / "adapter", folder / "adapter")
    manifest = json.loads((real_run / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "base_model": str(base)}))
    return folder


def test_unknown_architecture_names_the_supported_ones(run, tmp_path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    base = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=300)).save_pretrained(
        base
    )
    with pytest.raises(
        ExportError, match="architecture 'gpt2'; it supports gemma3_text, llama"
    ) as err:
        export_run(fake_run(tmp_path, run, base), fmt="gguf", out=tmp_path / "out")
    assert err.value.code == "export_unsupported_architecture"
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_a_type_that_does_not_fit_the_rows_is_refused(run, tmp_path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    base = tmp_path / "odd"
    config = LlamaConfig(
        hidden_size=48, intermediate_size=96, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=300,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(base)
    other = fake_run(tmp_path, run, base)
    with pytest.raises(ExportError, match="blocks of 32 values, but tensor .* rows of 48") as err:
        export_run(other, fmt="gguf", type_="q8_0", out=tmp_path / "out")
    assert err.value.code == "export_type_does_not_fit" and not (tmp_path / "out").exists()
    assert tensor_type("blk.0.attn_q.weight", (48, 48), "f16") == gguf.GGMLQuantizationType.F16
    with pytest.raises(ExportError, match="choose f16"):
        tensor_type("blk.0.attn_q.weight", (64, 48), "q4_0")


def test_sentencepiece_scores_order_pieces_as_llama_cpps_own_converter() -> None:
    """Gemma's scores, made from its BPE merges, rank every merged piece as the scores
    llama.cpp's converter wrote into the GGUF that gemma-3-270m comes from."""
    from finetune_core.export.gguf_tokenizer import merge_scores, token_table
    from finetune_core.models import load_tokenizer
    from finetune_core.models.prepare import gguf_path
    from finetune_core.models.registry import resolve

    tokenizer = load_tokenizer("gemma-3-270m")
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    tokens, kinds = token_table(tokenizer, len(tokenizer.get_vocab()), byte_fallback=True)
    merges = [" ".join(m) if isinstance(m, list) else m for m in spec["model"]["merges"]]
    ours = np.array(merge_scores(tokens, kinds, merges))
    source = gguf.GGUFReader(gguf_path(resolve("gemma-3-270m"))).fields
    theirs = np.array(source["tokenizer.ggml.scores"].contents())
    their_types = np.array(source["tokenizer.ggml.token_type"].contents())
    # Both normal: all but the 30 runs of spaces, which the converter made user-defined.
    normal = (np.array(kinds) == gguf.TokenType.NORMAL) & (their_types == gguf.TokenType.NORMAL)
    assert normal.sum() == (np.array(kinds) == gguf.TokenType.NORMAL).sum() - 30
    # Same order for every pair of neighbouring pieces (what llama.cpp compares).
    assert np.array_equal(np.sign(np.diff(ours[normal])), np.sign(np.diff(theirs[normal])))
    byte = np.array(kinds) == gguf.TokenType.BYTE
    assert byte.sum() == 256 and (their_types[byte] == gguf.TokenType.BYTE).all()


def test_gemma3_settings_llama_cpp_cannot_be_told_are_refused() -> None:
    from transformers import Gemma3TextConfig

    from finetune_core.export.gguf_arch import architecture_for

    assert architecture_for(Gemma3TextConfig(num_hidden_layers=6)).gguf_name == "gemma3"
    every_other = Gemma3TextConfig(num_hidden_layers=4, sliding_window_pattern=2)
    with pytest.raises(ExportError, match="every 6th layer global") as err:
        architecture_for(every_other)
    assert err.value.code == "export_unsupported_architecture"
    with pytest.raises(ExportError, match="soft-capping"):
        architecture_for(Gemma3TextConfig(num_hidden_layers=6, final_logit_softcapping=30.0))
