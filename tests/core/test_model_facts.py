"""What a model says about itself, read without torch (finetune_core/contracts/model_facts.py):
the facts match what gguf's own reader and transformers find, and every broken file is a
ModelUnreadable naming the file, never another exception (fuzzed)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from finetune_core.contracts.model_facts import (
    GGUF_MAGIC,
    folder_facts,
    gguf_facts,
    gguf_header,
    read_facts,
    source_kind,
)
from finetune_core.errors import ModelUnreadable
from finetune_core.models.registry import BUILTIN, gguf_path

SMOL_GGUF = gguf_path(BUILTIN["smollm2-135m-instruct"])


def test_gguf_facts_agree_with_the_gguf_packages_reader() -> None:
    from gguf import GGUFReader

    facts = gguf_facts(SMOL_GGUF)
    reader = GGUFReader(SMOL_GGUF)
    assert facts.parameters == sum(int(t.n_elements) for t in reader.tensors) == 134_515_008
    assert (facts.model_type, facts.context_length) == ("llama", 8192)
    assert "<|im_start|>" in facts.chat_template


def test_folder_facts_agree_with_the_model_transformers_loads(tmp_path: Path) -> None:
    from finetune_core.models.loading import load_model
    from finetune_core.models.prepare import prepare

    folder = prepare("tiny-llama")
    facts = read_facts(str(folder))
    model = load_model("tiny-llama", quantization="none")
    assert facts.kind == "local" and facts.source == str(folder.resolve())
    assert facts.parameters == sum(p.numel() for p in model.parameters())
    assert facts.context_length == model.config.max_position_embeddings
    assert facts.model_type == "llama" and facts.architecture == "LlamaForCausalLM"


def _folder(tmp_path: Path, config: object = None, tokenizer: bool = True) -> Path:
    folder = tmp_path / "m"
    folder.mkdir(exist_ok=True)
    text = json.dumps({"model_type": "llama"} if config is None else config)
    (folder / "config.json").write_text(text)
    if tokenizer:
        (folder / "tokenizer.json").write_text("{}")
    return folder


def _safetensors(folder: Path, header: bytes) -> None:
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)


BAD_FOLDERS = {
    "no config": (lambda f: (f / "config.json").unlink(), "config.json is missing"),
    "config not JSON": (lambda f: (f / "config.json").write_text("{"), "cannot be read as JSON"),
    "config a list": (lambda f: (f / "config.json").write_text("[]"), "not a JSON object"),
    "no model_type": (lambda f: (f / "config.json").write_text("{}"), "names no model_type"),
    "no tokenizer": (lambda f: (f / "tokenizer.json").unlink(), "has no tokenizer"),
    "no weights": (lambda f: None, "holds no .safetensors weights"),
    "bad header length": (
        lambda f: (f / "model.safetensors").write_bytes(b"\xff" * 16),
        "bad header length",
    ),
    "corrupt header": (lambda f: _safetensors(f, b"{not json"), "corrupt safetensors header"),
}


@pytest.mark.parametrize("case", sorted(BAD_FOLDERS))
def test_a_broken_folder_says_what_is_wrong(tmp_path: Path, case: str) -> None:
    folder = _folder(tmp_path)
    breaks, says = BAD_FOLDERS[case]
    breaks(folder)
    with pytest.raises(ModelUnreadable, match=says):
        folder_facts(folder, kind="local", source="")


def test_sizes_nested_under_text_config_and_a_jinja_template_count(tmp_path: Path) -> None:
    config = {"model_type": "gemma3", "text_config": {"max_position_embeddings": 32768}}
    folder = _folder(tmp_path, config)
    _safetensors(folder, json.dumps({"w": {"shape": [3, 4]}, "__metadata__": {}}).encode())
    (folder / "chat_template.jinja").write_text("{{ messages }}")
    facts = folder_facts(folder, kind="local", source="")
    assert (facts.parameters, facts.context_length) == (12, 32768)
    assert facts.chat_template == "{{ messages }}"


def test_sources_are_told_apart_and_a_hub_id_needs_the_cache(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert source_kind("a/b.gguf") == "gguf" and source_kind(str(tmp_path)) == "local"
    assert source_kind("acme/model") == "hub"
    with pytest.raises(ModelUnreadable, match="neither a model folder"):
        source_kind("just-a-name")
    with pytest.raises(ModelUnreadable, match="not in this host's Hugging Face cache"):
        read_facts("acme/model")


def test_a_truncated_gguf_is_refused(tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(SMOL_GGUF.read_bytes()[:5000])
    with pytest.raises(ModelUnreadable, match="ends inside its GGUF header"):
        gguf_facts(cut)
    other = tmp_path / "other.gguf"
    other.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    with pytest.raises(ModelUnreadable, match="not a GGUF file"):
        gguf_facts(other)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=st.binary(max_size=400), version=st.sampled_from([2, 3, 7]))
def test_fuzzed_gguf_headers_raise_only_model_unreadable(
    tmp_path: Path, body: bytes, version: int
) -> None:
    path = tmp_path / "fuzz.gguf"
    path.write_bytes(GGUF_MAGIC + struct.pack("<I", version) + body)
    try:
        meta, params = gguf_header(path)
    except ModelUnreadable as exc:
        assert str(path) in str(exc)
    else:
        assert isinstance(meta, dict) and params >= 0
