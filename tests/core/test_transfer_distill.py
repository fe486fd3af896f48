"""Logit distillation on the tiny random models (one byte-level tokenizer): the loss, the
teacher's top-k targets, a student that moves toward the teacher, and the messages for
inputs it cannot take. Also the synthesis messages for a target that writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from finetune_core.data import Example, Message
from finetune_core.data.pack import pack
from finetune_core.data.render import render_example
from finetune_core.errors import FinetuneError
from finetune_core.infer import load_chat_model
from finetune_core.models.loading import load_tokenizer
from finetune_core.transfer import Hooks, TransferConfig, TransferStopped
from finetune_core.transfer.distill import (
    TeacherTargets,
    distill_loss,
    shares_tokenizer,
    teacher_targets,
    train_logit_student,
)
from finetune_core.transfer.sampling import SamplingResult, no_accepted_message


def pairs(n: int = 6) -> list[Example]:
    return [
        Example(
            messages=(Message("user", f"What is {i} plus one?"), Message("assistant", str(i + 1)))
        )
        for i in range(n)
    ]


def test_tiny_models_share_a_tokenizer() -> None:
    assert shares_tokenizer("tiny-llama", "tiny-llama-wide")


def test_kl_is_zero_when_the_student_matches_the_teacher() -> None:
    torch.manual_seed(0)
    logits = torch.randn(4, 50)
    labels = torch.randint(0, 50, (4,))
    top = torch.log_softmax(logits, -1).topk(50, dim=-1)  # k = vocabulary: the exact distribution
    exact = TeacherTargets(ids=top.indices, logprobs=top.values)
    _, kl = distill_loss(logits, labels, exact, alpha=0.0, temperature=1.0)
    assert kl == pytest.approx(0.0, abs=1e-5)
    other = TeacherTargets(ids=top.indices, logprobs=torch.log_softmax(torch.randn(4, 50), -1))
    loss, kl_other = distill_loss(
        logits.requires_grad_(), labels, other, alpha=0.5, temperature=2.0
    )
    assert kl_other > 0.01
    loss.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    ce = torch.nn.functional.cross_entropy(logits, labels)
    only_ce, _ = distill_loss(logits, labels, other, alpha=1.0)
    assert float(only_ce) == pytest.approx(float(ce))


def test_teacher_targets_cover_each_trained_position_renormalised() -> None:
    tok = load_tokenizer("tiny-llama-wide")
    rows = pack([render_example(tok, e) for e in pairs(3)], 128, packing=False)
    teacher = load_chat_model("tiny-llama", quantization="none")
    targets = teacher_targets(teacher.model, rows, tok.pad_token_id, k=5)
    for row, t in zip(rows, targets, strict=True):
        n_trained = sum(1 for label in row.labels[1:] if label != -100)
        assert t.ids.shape == t.logprobs.shape == (n_trained, 5)
        assert torch.allclose(torch.logsumexp(t.logprobs, -1), torch.zeros(n_trained), atol=1e-5)


def test_logit_student_moves_toward_the_teacher(tmp_path: Path) -> None:
    cfg = TransferConfig(
        run="-", target="tiny-llama-wide", output_dir=str(tmp_path), quantization="none",
        max_steps=8, batch_size=6, learning_rate=1e-2, lora_r=8, max_length=128,
        target_modules=["q_proj", "v_proj"], distillation="logits",
    )  # fmt: skip
    # lr 1e-2: at 3e-2 a step could overshoot (KL 2.61 -> 2.51 -> 2.72) and end above the
    # start, depending on the adapter dropout's draws (seen with peft's dropout and ours).
    seen: list[tuple[str, int]] = []
    summary = train_logit_student(
        cfg, pairs(), teacher_model="tiny-llama", teacher_adapter=None, folder=tmp_path / "s",
        hooks=Hooks(progress=lambda phase, cur, tot, info: seen.append((phase, cur))),
        alpha=0.0, temperature=1.0,
    )  # fmt: skip
    kls = [h["kl"] for h in summary["history"]]
    assert len(kls) == 8 and kls[-1] < kls[0]  # same batch every step: KL must fall
    assert seen == [("train", i) for i in range(1, 9)]
    adapter = tmp_path / "s" / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert sorted(config["target_modules"]) == ["q_proj", "v_proj"]
    assert json.loads((tmp_path / "s" / "manifest.json").read_text())["distillation"] == "logits"
    # A plain PEFT folder on the target: it loads and its trained weights are not zero.
    student = load_chat_model("tiny-llama-wide", adapter=str(adapter), quantization="none")
    lora_b = [p for n, p in student.model.named_parameters() if "lora_B" in n]
    assert lora_b and any(float(p.abs().sum()) > 0 for p in lora_b)


def test_logit_student_stops_when_asked(tmp_path: Path) -> None:
    cfg = TransferConfig(
        run="-", target="tiny-llama-wide", output_dir=str(tmp_path), quantization="none",
        max_steps=5, batch_size=2, max_length=128, lora_r=4, target_modules="all-linear",
        distillation="logits",
    )  # fmt: skip
    with pytest.raises(TransferStopped, match="train_transferred"):
        train_logit_student(
            cfg, pairs(2), teacher_model="tiny-llama", teacher_adapter=None,
            folder=tmp_path / "s", hooks=Hooks(should_stop=lambda: True),
        )  # fmt: skip
    assert not (tmp_path / "s" / "adapter").exists()


def test_unknown_distillation_is_refused() -> None:
    with pytest.raises(FinetuneError, match="sequence or logits"):
        TransferConfig(run="-", target="t", output_dir="-", distillation="tokens").validate()


def test_no_accepted_message_tells_a_mute_target_from_a_strict_filter() -> None:
    mute = SamplingResult(attempts=8, empty=8, budget=8)
    assert "cannot generate task inputs" in no_accepted_message(mute, "tiny-llama-wide")
    strict = SamplingResult(attempts=8, rejected=7, duplicates=1, budget=8)
    text = no_accepted_message(strict, "tiny-llama-wide")
    assert "acceptance rate stayed at 0" in text and "8 attempts" in text and "7 rejected" in text
