"""QLoRA training on the tiny random model: learning, exact resume, cancel, outputs, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from finetune_core.contracts.hooks import Hooks
from finetune_core.data.pack import collate
from finetune_core.errors import EmptyDataset, NaNLoss
from finetune_core.models import load_tokenizer, prepare
from finetune_core.train import TrainConfig, train
from finetune_core.train.recipe import token_loss
from finetune_core.train.setup import build_model, build_optimizer, prepare_rows

QA = [
    ("What is 2+3?", "5"),
    ("Spell cat backwards.", "tac"),
    ("Colour of the sky?", "blue"),
    ("Opposite of hot?", "cold"),
    ("First letter of apple?", "a"),
    ("How many legs has a dog?", "four"),
    ("Capital of Japan?", "Tokyo"),
    ("Is ice cold?", "yes"),
    ("What is 10-7?", "3"),
    ("Plural of mouse?", "mice"),
    ("Say hi.", "hi"),
    ("Last letter of zoo?", "o"),
]


def write_chat(path: Path, rows: list[tuple[str, str]], weight: int = 1) -> Path:
    with path.open("w") as f:
        for q, a in rows:
            msgs = [
                {"role": "user", "content": q},
                {"role": "assistant", "content": a, "weight": weight},
            ]
            f.write(json.dumps({"messages": msgs}) + "\n")
    return path


def watching(
    on_event: Callable[[Any], None], should_stop: Callable[[], bool] = lambda: False
) -> Hooks:
    """train()'s hooks: each progress event reaches `on_event` with its fields as
    attributes (event.kind, event.step, ...)."""
    return Hooks(
        progress=lambda _phase, _step, _total, info: on_event(SimpleNamespace(**info)),
        should_stop=should_stop,
    )


def config(tmp_path: Path, name: str, **kw) -> TrainConfig:
    base = dict(
        model="tiny-llama",
        data=str(write_chat(tmp_path / "qa.jsonl", QA)),
        output_dir=str(tmp_path / name),
        batch_size=2,
        max_length=128,
        learning_rate=5e-3,
        lora_r=8,
        lora_alpha=16,
        lora_dropout=0.1,  # dropout draws random numbers: exact resume must restore them
        warmup_ratio=0.0,
        eval_every=2,
        save_every=3,
        val_fraction=0.2,
    )
    base.update(kw)
    return TrainConfig(**base)


def adapter_tensors(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "adapter_model.safetensors")


def test_one_step_lowers_the_loss_on_a_fixed_batch(tmp_path) -> None:
    cfg = config(tmp_path, "step", lora_dropout=0.0)
    tokenizer = load_tokenizer(cfg.model)
    rows, _, _ = prepare_rows(cfg, tokenizer)
    model = build_model(cfg)
    optimizer, _ = build_optimizer(cfg, model, total_steps=1)
    batch = collate(rows[:2], tokenizer.pad_token_id)
    before, n = token_loss(model, batch)
    before.backward()
    optimizer.step()
    after, _ = token_loss(model, batch)
    assert n > 0 and float(after) < float(before) - 1e-3


def test_training_writes_a_plain_peft_adapter_and_manifest(tmp_path) -> None:
    cfg = config(tmp_path, "run", max_steps=4)
    events = []
    result = train(cfg, hooks=watching(events.append))
    out = Path(cfg.output_dir)
    assert result.status == "succeeded" and result.steps == 4
    assert sorted(p.name for p in (out / "adapter").iterdir() if p.name.startswith("adapter")) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    assert (
        not list(out.rglob("*.bin"))
        and not list(out.rglob("*.pt"))
        and not list(out.rglob("*.pkl"))
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["base_model"] == "tiny-llama"
    assert manifest["hyperparameters"]["lora_r"] == 8
    assert len(manifest["data"]["data_sha256"]) == 64
    assert {"torch", "transformers", "peft", "bitsandbytes"} <= set(manifest["library_versions"])
    steps = [e for e in events if e.kind == "step"]
    assert [e.step for e in steps] == [1, 2, 3, 4]
    assert all(e.tokens_per_s > 0 and e.peak_memory_bytes > 0 and e.eta_s >= 0 for e in steps)
    assert [e.step for e in events if e.kind == "eval"] == [2, 4]

    # Plain peft loads it on the plain base model, and it changes the output.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(prepare("tiny-llama"), dtype=torch.float32)
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        plain = base(ids).logits.clone()
        tuned = PeftModel.from_pretrained(base, out / "adapter")(ids).logits
    assert not torch.allclose(plain, tuned, atol=1e-4)


def test_resume_reaches_the_same_adapter_as_an_uninterrupted_run(tmp_path) -> None:
    full = train(config(tmp_path, "full", max_steps=6))
    seen = []
    interrupted = config(tmp_path, "stopped", max_steps=6)
    first = train(interrupted, hooks=watching(lambda e: seen.append(e.step), lambda: 4 in seen))
    assert first.status == "cancelled" and first.steps == 4
    assert (Path(interrupted.output_dir) / "checkpoints" / "step-000004").exists()
    assert not (Path(interrupted.output_dir) / "adapter").exists()
    second = train(interrupted, resume=True)
    assert second.status == "succeeded" and second.steps == 6
    a = adapter_tensors(full.output_dir / "adapter")
    b = adapter_tensors(second.output_dir / "adapter")
    assert a.keys() == b.keys()
    step4 = adapter_tensors(Path(interrupted.output_dir) / "checkpoints" / "step-000004")
    for key in a:
        # bf16 compute on CPU: allow float noise, far below what one step changes.
        torch.testing.assert_close(a[key], b[key], rtol=1e-3, atol=5e-5)
    one_step = max(float((a[k] - step4[k]).abs().max()) for k in a)
    assert one_step > 20 * 5e-5  # the tolerance could not hide a lost or repeated step
    assert [h["train_loss"] for h in full.history] == pytest.approx(
        [h["train_loss"] for h in second.history], rel=1e-4
    )
    # And the adapter really moved away from its initialisation.
    assert any(t.abs().sum() > 0 for k, t in a.items() if "lora_B" in k)


def test_best_checkpoint_is_kept_and_can_be_made_final(tmp_path) -> None:
    from finetune_core.train.outputs import select_final

    result = train(config(tmp_path, "best", max_steps=4, final="best"))
    out = result.output_dir
    assert (out / "best" / "adapter_model.safetensors").exists()
    best = adapter_tensors(out / "best")
    final = adapter_tensors(out / "adapter")
    assert all(torch.equal(best[k], final[k]) for k in best)
    select_final(out, "3")  # a checkpoint by step number
    step3 = adapter_tensors(out / "checkpoints" / "step-000003")
    assert all(torch.equal(step3[k], adapter_tensors(out / "adapter")[k]) for k in step3)
    assert json.loads((out / "manifest.json").read_text())["final"] == "3"


def test_dora_trains(tmp_path) -> None:
    result = train(config(tmp_path, "dora", max_steps=2, method="dora"))
    assert result.status == "succeeded"
    keys = adapter_tensors(result.output_dir / "adapter").keys()
    assert any("lora_magnitude_vector" in k for k in keys)


def test_dataset_with_nothing_to_learn_is_a_clear_error(tmp_path) -> None:
    # Every answer lies beyond max_length, so truncation leaves nothing to learn.
    cfg = config(tmp_path, "empty", max_steps=2, max_length=8)
    with pytest.raises(EmptyDataset, match="no training examples left"):
        train(cfg)
    assert not (Path(cfg.output_dir) / "adapter").exists()


def test_nan_loss_stops_with_a_clear_error_and_keeps_checkpoints(tmp_path) -> None:
    # A real model folder whose weights hold a NaN: the loss is NaN at the first step.
    folder = tmp_path / "nan-model"
    source = prepare("tiny-llama")
    folder.mkdir()
    for f in source.iterdir():
        if f.name != "model.safetensors":
            (folder / f.name).write_bytes(f.read_bytes())
    weights = load_file(source / "model.safetensors")
    weights["model.norm.weight"][0] = float("nan")
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    cfg = config(tmp_path, "nan", max_steps=2, model=str(folder))
    with pytest.raises(NaNLoss, match="lower the learning rate"):
        train(cfg)
    assert not (Path(cfg.output_dir) / "adapter").exists()


def test_token_loss_equals_the_models_own_loss(tmp_path) -> None:
    # Our loss runs the output layer only where a token is trained; it must agree
    # with transformers' full-logits loss on the same (unpacked) row.
    cfg = config(tmp_path, "loss", lora_dropout=0.0, quantization="none", packing=False)
    tokenizer = load_tokenizer(cfg.model)
    rows, _, _ = prepare_rows(cfg, tokenizer)
    model = build_model(cfg)
    model.eval()
    batch = collate(rows[:1], tokenizer.pad_token_id)
    with torch.no_grad():
        ours, n = token_loss(model, batch)
        theirs = model(input_ids=batch["input_ids"], labels=batch["labels"], use_cache=False).loss
    assert n == int((batch["labels"] != -100).sum()) > 0
    torch.testing.assert_close(ours, theirs.float(), rtol=1e-3, atol=1e-3)


OOM_SCRIPT = """
import resource, sys
from finetune_core.contracts.hooks import Hooks
from finetune_core.errors import OutOfMemory
from finetune_core.train import TrainConfig, train

def squeeze(phase, step, total, event):
    # Once the model is loaded, cap the address space just above what is in use,
    # so the first training step cannot allocate its activations.
    if event["kind"] == "start":
        with open("/proc/self/status") as f:
            vm = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize"))
        resource.setrlimit(resource.RLIMIT_AS, (vm + (64 << 20), resource.RLIM_INFINITY))

cfg = TrainConfig(model="tiny-llama", data=sys.argv[1], output_dir=sys.argv[2], max_steps=2,
                  batch_size=64, max_length=512, packing=False, quantization="none", val_fraction=0.0)
try:
    train(cfg, hooks=Hooks(progress=squeeze))
except OutOfMemory as exc:
    print("OOM:", exc)
"""


def run_oom_script(script: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run an OOM script in its own process (a memory cap must not outlive the test) on
    long rows, training into tmp_path/oom."""
    data = write_chat(tmp_path / "long.jsonl", [(q * 40, a * 40) for q, a in QA * 6])
    return subprocess.run(
        [sys.executable, "-c", script, str(data), str(tmp_path / "oom")],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_out_of_memory_stops_with_a_clear_error(tmp_path) -> None:
    done = run_oom_script(OOM_SCRIPT, tmp_path)
    assert "OOM: out of memory at step 1 (batch_size=64, max_length=512)" in done.stdout, (
        done.stderr[-2000:]
    )
    assert "lower either, or raise grad_accum" in done.stdout
    # The tiny model's activations fit: auto skipped checkpointing, so the error offers it.
    assert "or set gradient_checkpointing on" in done.stdout
    assert not (tmp_path / "oom" / "adapter").exists()


CUDA_OOM_SCRIPT = """
import sys, torch
from finetune_core.contracts.hooks import Hooks
from finetune_core.errors import OutOfMemory
from finetune_core.train import TrainConfig, train

def squeeze(phase, step, total, event):
    # Once step 1's checkpoint is saved, cap the GPU just above what is held, so step 2
    # cannot allocate its activations (the cached blocks given back first).
    if event["kind"] == "checkpoint" and step == 1:
        torch.cuda.empty_cache()
        total_bytes = torch.cuda.get_device_properties(0).total_memory
        held = torch.cuda.memory_allocated() + (8 << 20)
        torch.cuda.set_per_process_memory_fraction(held / total_bytes)

cfg = TrainConfig(model="tiny-llama", data=sys.argv[1], output_dir=sys.argv[2], max_steps=3,
                  batch_size=64, max_length=512, packing=False, quantization="none",
                  val_fraction=0.0, save_every=1)
try:
    train(cfg, hooks=Hooks(progress=squeeze))
except OutOfMemory as exc:
    print("OOM:", exc)
"""


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_out_of_memory_on_the_gpu_stops_clearly_and_keeps_the_checkpoint(tmp_path) -> None:
    """The GPU path of the test above (make gpu-check runs it): torch.OutOfMemoryError at
    step 2 becomes the same clear error, and step 1's checkpoint stays complete."""
    from finetune_core.train.checkpoint import list_checkpoints

    done = run_oom_script(CUDA_OOM_SCRIPT, tmp_path)
    assert "OOM: out of memory at step 2 (batch_size=64, max_length=512)" in done.stdout, (
        done.stdout[-2000:] + done.stderr[-2000:]
    )
    assert "lower either, or raise grad_accum" in done.stdout
    assert "checkpoints so far are kept" in done.stdout
    assert [p.name for p in list_checkpoints(tmp_path / "oom")] == ["step-000001"]
    assert not (tmp_path / "oom" / "adapter").exists()


def test_keep_checkpoints_deletes_older_ones_and_resume_still_works(tmp_path) -> None:
    seen = []
    cfg = config(tmp_path, "kept", max_steps=5, save_every=1, keep_checkpoints=2)
    stopped = train(cfg, hooks=watching(lambda e: seen.append(e.step), lambda: 3 in seen))
    assert stopped.status == "cancelled"
    checkpoints = Path(cfg.output_dir) / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-000002", "step-000003"]
    resumed = train(cfg, resume=True)
    assert resumed.status == "succeeded" and resumed.steps == 5
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-000004", "step-000005"]
