"""Preference tuning (DPO, SimPO) on the tiny random model: our loss and rewards against
TRL's, and runs that train, checkpoint, resume exactly, continue an adapter and cancel."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from finetune_core.contracts.hooks import Hooks
from finetune_core.data.types import Message, PreferenceExample
from finetune_core.errors import DataError
from finetune_core.models import load_tokenizer
from finetune_core.train import TrainConfig, train
from finetune_core.train.preference import Pair, PreferenceObjective, render_pair
from tests.core.test_train import watching

PAIRS = [
    ("What is 2+3?", "5", "six"),
    ("Colour of the sky?", "blue", "green, I think"),
    ("Opposite of hot?", "cold", "warm"),
    ("Capital of Japan?", "Tokyo", "Kyoto, probably"),
    ("Plural of mouse?", "mice", "mouses"),
    ("Say hi.", "hi there", "bye"),
    ("Is ice cold?", "yes", "no"),
    ("Last letter of zoo?", "o", "z"),
]


def write_prefs(path: Path, rows: list[tuple[str, str, str]] = PAIRS) -> Path:
    with path.open("w") as f:
        for q, good, bad in rows:
            record = {
                "input": {"messages": [{"role": "user", "content": q}]},
                "preferred_output": [{"role": "assistant", "content": good}],
                "non_preferred_output": [{"role": "assistant", "content": bad}],
            }
            f.write(json.dumps(record) + "\n")
    return path


def config(tmp_path: Path, name: str, **kw) -> TrainConfig:
    base = dict(
        model="tiny-llama",
        data=str(write_prefs(tmp_path / "prefs.jsonl")),
        output_dir=str(tmp_path / name),
        training_method="dpo",
        batch_size=2,
        max_length=128,
        learning_rate=5e-3,
        lora_r=8,
        lora_alpha=16,
        lora_dropout=0.1,  # dropout draws random numbers: exact resume must restore them
        warmup_ratio=0.0,
        eval_every=2,
        save_every=3,
        val_fraction=0.25,
    )
    return TrainConfig(**(base | kw))


# --- against TRL ---------------------------------------------------------------------------


def _fp32_peft_model():  # -> PeftModel with a nonzero adapter: the policy is not the base
    from peft import LoraConfig, get_peft_model

    from finetune_core.models.loading import load_model

    torch.manual_seed(0)
    base = load_model("tiny-llama", quantization="none", compute_dtype=torch.float32)
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear")
    model = get_peft_model(base, lora)
    _nudge(model, 0.05)
    return model.eval()


def _nudge(model: torch.nn.Module, scale: float) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B.default" in name:
                p.add_(torch.randn_like(p) * scale)


def _pairs(tokenizer) -> list[Pair]:
    examples = [
        PreferenceExample(
            (Message("user", q), Message("assistant", a)), rejected=Message("assistant", b)
        )
        for q, a, b in PAIRS[:4]
    ]
    return [render_pair(tokenizer, ex, i) for i, ex in enumerate(examples)]


def _trl_features(pairs: list[Pair]) -> list[dict[str, list[int]]]:
    """Our tokens as TRL's collator takes them: the prompt, then each answer (up to its
    end-of-turn marker, where our labels stop), so both compare the same tokens."""

    def split(seq) -> tuple[list[int], list[int]]:
        trained = [i for i, label in enumerate(seq.labels) if label != -100]
        return seq.input_ids[: trained[0]], seq.input_ids[trained[0] : trained[-1] + 1]

    features = []
    for pair in pairs:
        (prompt, chosen), (prompt_again, rejected) = split(pair.chosen), split(pair.rejected)
        assert prompt == prompt_again
        features.append({"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected})
    return features


def _trl_trainer(model, tokenizer, tmp_path: Path, beta: float, rpo_alpha: float = 0.0):
    """TRL's DPOTrainer; rpo_alpha > 0 adds its NLL term on the chosen answer (TRL 1.x has
    no rpo_alpha flag: the loss_type ["sigmoid", "sft"] weighted [1, rpo_alpha] is it)."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    rows = [
        {
            "prompt": [{"role": "user", "content": q}],
            "chosen": [{"role": "assistant", "content": a}],
            "rejected": [{"role": "assistant", "content": b}],
        }
        for q, a, b in PAIRS[:4]
    ]
    args = DPOConfig(
        output_dir=str(tmp_path / "trl"),
        beta=beta,
        report_to="none",
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        max_length=None,
        **(
            {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, rpo_alpha]} if rpo_alpha else {}
        ),
    )
    return DPOTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer
    )


def _trl_terms(trainer, model, pairs: list[Pair]) -> tuple[float, dict[str, float], torch.Tensor]:
    inputs = trainer.data_collator(_trl_features(pairs))
    with torch.no_grad():
        loss = trainer.compute_loss(model, inputs)
        ref_chosen, ref_rejected = trainer.compute_ref_log_probs(model, inputs)
    metrics = {k: v[-1] for k, v in trainer._metrics["eval"].items()}
    return float(loss), metrics, torch.cat([ref_chosen, ref_rejected])


def _ours(objective: PreferenceObjective, pairs: list[Pair]) -> tuple[float, dict[str, float]]:
    """Our loss for one step of exactly these pairs, as accumulate backpropagates it."""
    with torch.no_grad():
        loss, chosen, rejected, nll = objective.terms(pairs)
        n_chosen = sum(p.chosen.n_trained for p in pairs)
        step_loss = objective._objective(loss, nll, len(pairs), n_chosen)
        policy, _ = objective._logps(pairs)
    return float(step_loss), {
        "rewards/chosen": float(chosen.mean()),
        "rewards/rejected": float(rejected.mean()),
        "rewards/margins": float((chosen - rejected).mean()),
        "rewards/accuracies": float((chosen > rejected).float().mean()),
        "logps/chosen": float(policy.chunk(2)[0].mean()),
        "logps/rejected": float(policy.chunk(2)[1].mean()),
    }


def _assert_same(ours: tuple[float, dict[str, float]], theirs: tuple[float, dict[str, float]]):
    assert ours[0] == pytest.approx(theirs[0], rel=1e-5, abs=1e-6)
    for key, value in ours[1].items():
        assert value == pytest.approx(theirs[1][key], rel=1e-4, abs=1e-6), key


@pytest.mark.parametrize("rpo_alpha", [0.0, 0.5])
def test_dpo_loss_and_rewards_equal_trls_with_a_fresh_adapter(tmp_path, rpo_alpha) -> None:
    """A fresh adapter's reference is the base alone (the adapter disabled), as in TRL; with
    rpo_alpha, the NLL term on the chosen answer adds the same amount as TRL's."""
    tokenizer = load_tokenizer("tiny-llama")
    model, pairs = _fp32_peft_model(), _pairs(tokenizer)
    trainer = _trl_trainer(model, tokenizer, tmp_path, beta=0.1, rpo_alpha=rpo_alpha)
    model.delete_adapter("ref")  # TRL copies a given adapter as its reference; here: none
    cfg = TrainConfig(data="x", training_method="dpo", batch_size=3, rpo_alpha=rpo_alpha)
    objective = PreferenceObjective(cfg, model, tokenizer.pad_token_id)
    objective.cache_reference(pairs)  # in batches of 3: other batches than TRL's one of 4
    loss, metrics, ref = _trl_terms(trainer, model, pairs)
    ours = torch.tensor([objective.reference[p.index] for p in pairs]).T.reshape(-1)
    torch.testing.assert_close(ours, ref.float(), rtol=1e-5, atol=1e-4)
    _assert_same(_ours(objective, pairs), (loss, metrics))
    assert abs(metrics["rewards/margins"]) > 1e-3  # the policy is not the reference
    with torch.no_grad():
        plain = float(objective.losses(pairs)[0].mean())
    assert (loss - plain > 1.0) == (rpo_alpha > 0)  # the NLL term is there, and weighs


def test_a_step_in_micro_batches_has_the_loss_of_the_whole_batch() -> None:
    """The NLL term is per preferred-answer token over the whole step, however the step is
    split into micro-batches (answers of unequal lengths would tell a per-micro mean)."""
    tokenizer = load_tokenizer("tiny-llama")
    model, pairs = _fp32_peft_model(), _pairs(tokenizer)
    cfg = TrainConfig(data="x", training_method="dpo", rpo_alpha=1.0)
    objective = PreferenceObjective(cfg, model, tokenizer.pad_token_id)
    objective.cache_reference(pairs)
    assert len({p.chosen.n_trained for p in pairs}) > 1
    split, _, _ = objective.accumulate([pairs[:1], pairs[1:]])
    assert split == pytest.approx(_ours(objective, pairs)[0], rel=1e-5)


@pytest.mark.parametrize("rpo_alpha", [0.0, 1.0])
def test_dpo_from_an_adapter_compares_against_that_adapter_frozen(tmp_path, rpo_alpha) -> None:
    """Continuing an adapter (init_adapter), the reference is the adapter as it started:
    TRL keeps a frozen copy named "ref"; we cache its log-probabilities before any step."""
    tokenizer = load_tokenizer("tiny-llama")
    model, pairs = _fp32_peft_model(), _pairs(tokenizer)
    trainer = _trl_trainer(model, tokenizer, tmp_path, beta=0.5, rpo_alpha=rpo_alpha)
    assert "ref" in model.peft_config
    cfg = TrainConfig(
        data="x", training_method="dpo", beta=0.5, init_adapter="start", rpo_alpha=rpo_alpha
    )
    objective = PreferenceObjective(cfg, model, tokenizer.pad_token_id)
    objective.cache_reference(pairs)
    _nudge(model, 0.05)  # training moves the policy away from where it started
    _assert_same(_ours(objective, pairs), _trl_terms(trainer, model, pairs)[:2])


def test_simpo_loss_and_rewards_equal_trls_cpo_simpo() -> None:
    from trl.experimental.cpo import CPOTrainer

    tokenizer = load_tokenizer("tiny-llama")
    model, pairs = _fp32_peft_model(), _pairs(tokenizer)
    cfg = TrainConfig(data="x", training_method="simpo", beta=2.0, simpo_gamma=0.8)
    objective = PreferenceObjective(cfg, model, tokenizer.pad_token_id)
    with torch.no_grad():
        loss, chosen, rejected = objective.losses(pairs)
        # TRL's average log-probabilities, from the full logits of each sequence alone.
        averages = []
        for seq in [p.chosen for p in pairs] + [p.rejected for p in pairs]:
            ids, labels = torch.tensor([seq.input_ids]), torch.tensor([seq.labels])
            logits = model(input_ids=ids).logits
            averages.append(CPOTrainer.get_batch_logps(logits, labels, average_log_prob=True))
    trl_self = SimpleNamespace(
        alpha=0.0,
        loss_type="simpo",
        beta=2.0,
        simpo_gamma=0.8,
        label_smoothing=0.0,
        accelerator=SimpleNamespace(device="cpu"),
    )
    trl = CPOTrainer.cpo_loss(trl_self, *torch.cat(averages).chunk(2))
    for ours, theirs in zip((loss, chosen, rejected), trl, strict=True):
        torch.testing.assert_close(ours, theirs.float(), rtol=1e-5, atol=1e-5)


# --- runs -----------------------------------------------------------------------------------


def test_dpo_run_trains_checkpoints_and_resumes_exactly(tmp_path) -> None:
    full = train(config(tmp_path, "full", max_steps=6))
    seen = []
    cfg = config(tmp_path, "stopped", max_steps=6)
    first = train(cfg, hooks=watching(lambda e: seen.append(e.step), lambda: 4 in seen))
    assert first.status == "cancelled" and first.steps == 4
    state = json.loads(
        (Path(cfg.output_dir) / "checkpoints/step-000004/trainer_state.json").read_text()
    )
    assert len(state["reference_logps"]) == len(PAIRS)  # train and validation pairs, kept
    second = train(cfg, resume=True)
    assert second.status == "succeeded" and second.steps == 6
    from safetensors.torch import load_file

    a = load_file(full.output_dir / "adapter/adapter_model.safetensors")
    b = load_file(second.output_dir / "adapter/adapter_model.safetensors")
    step4 = load_file(Path(cfg.output_dir) / "checkpoints/step-000004/adapter_model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-3, atol=5e-5)
    assert max(float((a[k] - step4[k]).abs().max()) for k in a) > 20 * 5e-5
    for x, y in zip(full.history, second.history, strict=True):
        assert x.keys() == y.keys() and x["rewards/margins"] == pytest.approx(
            y["rewards/margins"], rel=1e-3, abs=1e-5
        )
    # The history and manifest carry the preference metrics beside the loss.
    first_step = full.history[0]
    assert first_step["train_loss"] == pytest.approx(math.log(2), abs=1e-6)  # policy == reference
    assert {"rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"} <= set(
        first_step
    )
    assert "val_rewards/accuracies" in full.history[1]
    manifest = json.loads((full.output_dir / "manifest.json").read_text())
    assert manifest["hyperparameters"]["training_method"] == "dpo"
    assert manifest["history"][-1]["rewards/margins"] == full.history[-1]["rewards/margins"]
    assert full.history[-1]["rewards/margins"] > 0  # it learned to prefer


def test_progress_events_and_hooks_carry_the_rewards(tmp_path) -> None:
    heard: list[tuple[str, int, dict]] = []
    phases: list[tuple[str, dict]] = []
    hooks = Hooks(
        progress=lambda phase, current, total, info: heard.append((phase, current, info)),
        phase=lambda name, info: phases.append((name, info)),
    )
    train(config(tmp_path, "hooks", max_steps=2, val_fraction=0.0), hooks=hooks)
    assert phases == [("reference", {"pairs": len(PAIRS)})]
    assert {phase for phase, _, _ in heard} == {"train"}  # a worker reads each as a step event
    steps = [info for phase, _, info in heard if phase == "train" and info["kind"] == "step"]
    assert len(steps) == 2 and all("rewards/accuracies" in s and "train_loss" in s for s in steps)


def test_a_stop_while_caching_the_reference_checkpoints_it_and_resume_finishes(tmp_path) -> None:
    asked = []
    cfg = config(tmp_path, "early", max_steps=2, val_fraction=0.0, batch_size=3)
    stopped = train(cfg, hooks=Hooks(should_stop=lambda: asked.append(1) or len(asked) > 1))
    assert stopped.status == "cancelled" and stopped.steps == 0
    state = json.loads(
        (Path(cfg.output_dir) / "checkpoints/step-000000/trainer_state.json").read_text()
    )
    assert len(state["reference_logps"]) == 3  # one batch before the stop
    resumed = train(cfg, resume=True)
    assert resumed.status == "succeeded" and resumed.history[0]["train_loss"] == pytest.approx(
        math.log(2)
    )


def test_dpo_continues_a_supervised_adapter(tmp_path) -> None:
    chat = tmp_path / "chat.jsonl"
    with chat.open("w") as f:
        for q, good, _ in PAIRS:
            messages = [{"role": "user", "content": q}, {"role": "assistant", "content": good}]
            f.write(json.dumps({"messages": messages}) + "\n")
    # lora_dropout 0: the continued adapter keeps its dropout, which would part the policy
    # from the reference by noise alone
    sft_cfg = config(tmp_path, "sft", training_method="supervised", data=str(chat), lora_r=4)
    sft = train(dataclasses.replace(sft_cfg, max_steps=2, lora_dropout=0.0))
    dpo = train(config(tmp_path, "dpo", init_adapter=str(sft.output_dir), max_steps=2))
    # The reference is the SFT adapter: at the first step the policy is still it exactly.
    assert dpo.history[0]["train_loss"] == pytest.approx(math.log(2), abs=1e-6)
    adapter = json.loads((dpo.output_dir / "adapter/adapter_config.json").read_text())
    assert adapter["r"] == 4  # the adapter continued, not a fresh rank-8 one
    from safetensors.torch import load_file

    before = load_file(sft.output_dir / "adapter/adapter_model.safetensors")
    after = load_file(dpo.output_dir / "adapter/adapter_model.safetensors")
    assert before.keys() == after.keys() and any(
        not torch.equal(before[k], after[k]) for k in before
    )


def test_simpo_runs_without_a_reference(tmp_path) -> None:
    result = train(config(tmp_path, "simpo", training_method="simpo", max_steps=3))
    assert result.status == "succeeded" and result.steps == 3
    assert all("rewards/margins" in h for h in result.history)
    state = json.loads(
        (result.output_dir / "checkpoints/step-000003/trainer_state.json").read_text()
    )
    assert "reference_logps" not in state


def test_the_wrong_kind_of_data_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(DataError, match="training_method dpo or simpo"):
        train(config(tmp_path, "sft-on-pairs", training_method="supervised", max_steps=1))
    chat = tmp_path / "chat.jsonl"
    chat.write_text(
        json.dumps(
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
        )
        + "\n"
    )
    with pytest.raises(DataError, match="dpo trains on preference data") as caught:
        train(config(tmp_path, "dpo-on-chat", data=str(chat), max_steps=1))
    assert caught.value.code == "not_preference_data"


def test_cli_trains_dpo_with_method_dpo(tmp_path) -> None:
    from finetune_core.cli import main

    data = write_prefs(tmp_path / "prefs.jsonl")
    out = tmp_path / "cli"
    argv = ["train", "--method", "dpo", "--data", str(data), "--model", "tiny-llama"]
    argv += ["--output-dir", str(out), "--max-steps", "1", "--batch-size", "2", "--beta", "0.2"]
    assert main(argv) == 0
    hyper = json.loads((out / "manifest.json").read_text())["hyperparameters"]
    assert (hyper["training_method"], hyper["method"], hyper["beta"]) == ("dpo", "lora", 0.2)
