"""Exports of a tiny-llama run: merged weights (LoRA and DoRA), the portable adapter, and
the bad inputs (unfinished run, cancel, wrong type, full disk), each leaving no partial files;
the manifest's warning when the merge is far from the model as trained."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from finetune_core.contracts.hooks import Hooks, Stopped
from finetune_core.export import ExportError, export_run
from finetune_core.models import prepare
from finetune_core.train import TrainConfig, train
from tests.core.test_train import QA, write_chat


def tiny_run(folder: Path, method: str = "lora") -> Path:
    cfg = TrainConfig(
        model="tiny-llama", data=str(write_chat(folder / "qa.jsonl", QA)),
        output_dir=str(folder / method), batch_size=2, max_length=128, learning_rate=2e-2,
        lora_r=8, lora_alpha=16, warmup_ratio=0.0, max_steps=4, eval_every=4, save_every=4,
        val_fraction=0.2, method=method,
    )  # fmt: skip
    assert train(cfg).status == "succeeded"
    return Path(cfg.output_dir)


@pytest.fixture(scope="module", params=["lora", "dora"])
def run(request, tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("run"), request.param)


def leftovers(folder: Path) -> list[str]:
    """Hidden staging folders an export might have left beside its target."""
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_merged_export_is_a_plain_hf_folder_equal_to_base_plus_adapter(run, tmp_path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    stages = []
    out = tmp_path / "merged"
    manifest = export_run(
        run, fmt="merged", type_="f16", out=out, n_prompts=6,
        hooks=Hooks(progress=lambda phase, done, total, info: stages.append((info["stage"], done))),
    )  # fmt: skip
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"} <= names
    assert {"generation_config.json", "export.json"} <= names
    assert not any("adapter" in n for n in names) and leftovers(tmp_path) == []
    assert [f for _, f in stages] == sorted(f for _, f in stages) and stages[-1] == ("done", 100)
    assert json.loads((out / "export.json").read_text())["files"] == manifest["files"]
    sizes = {f["name"]: f["bytes"] for f in manifest["files"]}
    assert sizes["model.safetensors"] == (out / "model.safetensors").stat().st_size

    merged = AutoModelForCausalLM.from_pretrained(out)
    assert merged.dtype == torch.float16 and merged.config.model_type == "llama"
    tok = AutoTokenizer.from_pretrained(out)
    assert "<|im_start|>assistant" in tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert (
        tok.convert_tokens_to_ids("<|im_end|>")
        in GenerationConfig.from_pretrained(out).eos_token_id
    )

    base = AutoModelForCausalLM.from_pretrained(prepare("tiny-llama"), dtype=torch.float32)
    ids = torch.tensor([list(range(5, 40))])
    with torch.no_grad():
        plain = base(ids).logits.clone()
        tuned = PeftModel.from_pretrained(base, run / "adapter")(ids).logits
        got = merged.float()(ids).logits
    assert (tuned - plain).abs().max() > 1e-2  # the adapter matters...
    assert (got - tuned).abs().max() < 1e-2  # ...and the merge keeps it (f16 rounding only)

    fidelity = manifest["fidelity"]
    assert fidelity["prompts"] == 6 and fidelity["quantization_as_trained"] == "nf4"
    assert 0 <= fidelity["mean_kl"] <= fidelity["max_kl"]
    assert 0 <= fidelity["greedy_token_agreement"] <= 1
    assert manifest["method"] == run.name


def test_the_manifest_warns_when_the_merge_is_past_the_thresholds(
    run, tmp_path, monkeypatch
) -> None:
    """Thresholds set below what the real measurement gives: export.json carries both
    warnings with the measured figures; the same figures inside the thresholds carry none."""
    from finetune_core.export import fidelity

    monkeypatch.setattr(fidelity, "KL_WARN", -1.0)  # any KL is above it
    monkeypatch.setattr(fidelity, "AGREEMENT_WARN", 1.01)  # any agreement is below it
    manifest = export_run(run, fmt="merged", out=tmp_path / "merged", n_prompts=4)
    figures = manifest["fidelity"]
    on_disk = json.loads((tmp_path / "merged" / "export.json").read_text())
    assert on_disk["warnings"] == manifest["warnings"] and len(manifest["warnings"]) == 2
    kl, agreement = manifest["warnings"]
    assert f"mean KL {figures['mean_kl']:.4f} nats per token" in kl
    assert f"agree on {figures['greedy_token_agreement']:.0%} of tokens" in agreement

    monkeypatch.setattr(fidelity, "KL_WARN", figures["mean_kl"])  # at the line: no warning
    monkeypatch.setattr(fidelity, "AGREEMENT_WARN", figures["greedy_token_agreement"])
    assert fidelity.warnings_for(figures) == []


def test_adapter_export_records_the_weights_it_trained_against(run, tmp_path) -> None:
    from finetune_core.train.outputs import file_sha256

    manifest = export_run(run, fmt="adapter", out=tmp_path / "adapter")
    facts = manifest["trained_against"]
    weights = prepare("tiny-llama") / "model.safetensors"
    assert facts["file"] == "model.safetensors" and facts["sha256"] == file_sha256(weights)
    # tiny-llama has no public id: the adapter keeps its local base, and says so
    assert facts["hub_id"] is None and "no public hub id" in manifest["warnings"][0]
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["use_dora"] == (run.name == "dora") == manifest["use_dora"]


def test_an_unfinished_run_is_refused_and_nothing_is_written(run, tmp_path) -> None:
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.json").write_text("{}")
    out = tmp_path / "out"
    with pytest.raises(ExportError, match="has not finished") as err:
        export_run(unfinished, fmt="merged", out=out)
    assert err.value.code == "export_unfinished_run" and not out.exists()
    with pytest.raises(ExportError, match="bf16, f16, not 'q8_0'"):
        export_run(run, fmt="merged", type_="q8_0", out=out)
    assert not out.exists() and leftovers(tmp_path) == []


def test_cancel_leaves_no_files_and_keeps_an_earlier_export(run, tmp_path) -> None:
    out = tmp_path / "merged"
    export_run(run, fmt="merged", out=out, measure=False)
    before = (out / "export.json").read_text()
    calls = []

    def stop_when_merging() -> bool:
        calls.append(1)
        return len(calls) >= 3

    with pytest.raises(Stopped):
        hooks = Hooks(should_stop=stop_when_merging)
        export_run(run, fmt="merged", out=out, hooks=hooks, measure=False)
    assert (out / "export.json").read_text() == before and leftovers(tmp_path) == []


def test_a_full_disk_leaves_no_partial_export_and_keeps_the_earlier_one(run, tmp_path) -> None:
    """On a small tmpfs of the test's own (as root; skipped elsewhere, saying why)."""
    from finetune_core.train.checkpoint import disk_full_errno
    from tests.tmpfs import BALLAST, fill, small_tmpfs

    with small_tmpfs(tmp_path / "disk", 2048) as disk:
        out = disk / "merged"
        export_run(run, fmt="merged", out=out, measure=False)
        before = (out / "export.json").read_text()
        ballast = fill(disk)
        with pytest.raises(Exception) as failed:  # safetensors' or the OS's own error type
            export_run(run, fmt="merged", out=out, measure=False)
        assert disk_full_errno(failed.value) is not None, failed.value
        assert (out / "export.json").read_text() == before and leftovers(disk) == [BALLAST]
        ballast.unlink()
        assert export_run(run, fmt="merged", out=out, measure=False)["files"]


def test_cli_exports_and_refuses_an_unfinished_run(run, tmp_path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        cmd = [sys.executable, "-m", "finetune_core", "export", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)

    done = cli(str(run), "--format", "adapter")
    assert done.returncode == 0, done.stderr
    target = run / "exports" / "adapter-as-trained"
    assert str(target) in done.stdout and "adapter_model.safetensors" in done.stdout
    assert (target / "export.json").is_file()
    refused = cli(str(tmp_path), "--format", "gguf", "--out", str(tmp_path / "x"))
    assert refused.returncode == 2 and "has not finished" in refused.stderr
    assert not (tmp_path / "x").exists()
