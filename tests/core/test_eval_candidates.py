"""Candidate specs and cache keys, per-category tables, prompt versions."""

from __future__ import annotations

import shutil

import pytest

from finetune_core.errors import FinetuneError
from finetune_core.evaluate import PAIRWISE, Candidate, PairResult, by_category, parse_candidate
from finetune_core.evaluate.judge import Judgment
from finetune_core.evaluate.prompts import PromptTemplate


def fake_adapter(folder, weights: bytes) -> None:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text('{"r": 8}')
    (folder / "adapter_model.safetensors").write_bytes(weights)


def test_candidate_specs() -> None:
    c = parse_candidate("base:smollm2-135m-instruct")
    assert (c.kind, c.model, c.label) == ("base", "smollm2-135m-instruct", "smollm2-135m-instruct")
    c = parse_candidate("gpt=openai:gpt-4o-mini@http://127.0.0.1:9/v1", api_key="secret")
    assert (c.label, c.model, c.base_url) == ("gpt", "gpt-4o-mini", "http://127.0.0.1:9/v1")
    assert (
        "secret" not in repr(c) and "secret" not in c.cache_key() and "api_key" not in c.to_dict()
    )
    for bad in ("base:", "adapter:model-only", "openai:no-url", "ollama:x"):
        with pytest.raises(FinetuneError):
            parse_candidate(bad)


def test_adapter_key_follows_content_not_path(tmp_path) -> None:
    fake_adapter(tmp_path / "run" / "checkpoint-10", b"weights-1")
    fake_adapter(tmp_path / "run" / "adapter", b"weights-2")
    ckpt = parse_candidate(f"adapter:tiny-llama:{tmp_path / 'run' / 'checkpoint-10'}")
    run = parse_candidate(f"adapter:tiny-llama:{tmp_path / 'run'}")  # a run folder: its adapter/
    assert run.adapter.endswith("adapter") and ckpt.cache_key() != run.cache_key()
    shutil.copytree(tmp_path / "run" / "checkpoint-10", tmp_path / "copy")
    assert (
        Candidate("adapter", "tiny-llama", adapter=str(tmp_path / "copy")).cache_key()
        == ckpt.cache_key()
    )
    (tmp_path / "copy" / "adapter_model.safetensors").write_bytes(b"weights-3")  # retrained
    assert (
        Candidate("adapter", "tiny-llama", adapter=str(tmp_path / "copy")).cache_key()
        != ckpt.cache_key()
    )
    with pytest.raises(FinetuneError, match="adapter_config"):
        Candidate("adapter", "tiny-llama", adapter=str(tmp_path))


def test_per_category_breakdown() -> None:
    ok = Judgment("A", "ok", "", "", 1, "v")
    rows = [
        PairResult("1", "math", "x", "y", "a", False, "v", ok, ok),
        PairResult("2", "math", "x", "y", "a", False, "v", ok, ok),
        PairResult("3", "", "x", "y", "b", False, "v", ok, ok),
    ]
    cats = by_category(rows, n_boot=20)
    assert set(cats) == {"math", "(none)"}
    assert cats["math"][0]["win_rate"] == 1.0 and cats["(none)"][0]["win_rate"] == 0.0


def test_prompt_versions_follow_the_text() -> None:
    edited = PromptTemplate(PAIRWISE.name, PAIRWISE.kind, PAIRWISE.system + " ", PAIRWISE.user)
    assert PAIRWISE.version.startswith("pairwise@") and edited.version != PAIRWISE.version
    msgs = PAIRWISE.messages(question="q {x}", answer_a="{y}", answer_b="b")
    assert "q {x}" in msgs[1]["content"] and "[[C]]" in msgs[0]["content"]
