"""Integration on the real SmolLM2-135M-Instruct: validate, train a few steps on a
BIG-bench task through the CLI, load the adapter with plain peft, generate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from finetune_core.data import bigbench_task_path

pytestmark = pytest.mark.integration
MODEL = "smollm2-135m-instruct"
TASK = bigbench_task_path("sports_understanding")


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "finetune_core", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "sports"
    done = cli(
        "train", "--model", MODEL, "--data", str(TASK), "--output-dir", str(out),
        "--max-steps", "5", "--limit-examples", "80", "--batch-size", "2", "--max-length", "256",
        "--learning-rate", "1e-3", "--eval-every", "5", "--save-every", "2",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "5/5" in done.stderr  # the progress bar reached the end
    assert "succeeded: 5/5 steps" in done.stdout
    return out


def test_validate_and_stats_on_a_bigbench_task() -> None:
    done = cli("validate", str(TASK), "--model", MODEL, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["format"] == "bigbench" and report["n_examples"] == 1000
    stats = cli("stats", str(TASK), "--model", MODEL, "--max-length", "64", "--json")
    figures = json.loads(stats.stdout)
    assert figures["rows"] == 1000 and figures["n_truncated"] > 0


def test_adapter_loads_with_plain_peft_and_changes_greedy_answers(trained: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from finetune_core.models import prepare

    adapter = trained / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 16
    tok = AutoTokenizer.from_pretrained(adapter)
    base = AutoModelForCausalLM.from_pretrained(prepare(MODEL), dtype=torch.float32)
    examples = json.loads(TASK.read_text())["examples"][900:904]
    prompts = [
        tok.apply_chat_template(
            [{"role": "user", "content": e["input"]}], tokenize=False, add_generation_prompt=True
        )
        for e in examples
    ]

    def answers(model: torch.nn.Module) -> list[str]:
        out = []
        for p in prompts:
            ids = tok(p, return_tensors="pt", add_special_tokens=False).input_ids
            gen = model.generate(
                ids, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id
            )
            out.append(tok.decode(gen[0, ids.shape[1] :], skip_special_tokens=True))
        return out

    with torch.no_grad():
        before = answers(base)
        after = answers(PeftModel.from_pretrained(base, adapter))
    assert before != after, (before, after)
    manifest = json.loads((trained / "manifest.json").read_text())
    assert manifest["metrics"]["steps"] == 5 and manifest["metrics"]["best_val_loss"] > 0


def test_generate_cli_streams_and_stops_at_end_of_turn() -> None:
    from finetune_core.infer import generate, load_chat_model

    chat = load_chat_model(MODEL)
    result = generate(
        chat,
        [[{"role": "user", "content": "Answer in one word: what is the capital of France?"}]],
        max_new_tokens=48,
    )[0]
    assert "Paris" in result.text and result.finish_reason == "stop"
    done = cli(
        "generate", "--model", MODEL, "--prompt", "Name one colour.", "--max-new-tokens", "20"
    )
    assert done.returncode == 0 and done.stdout.strip()


def test_resume_cli_finishes_a_stopped_run(trained: Path) -> None:
    # Drop the run's last two steps and resume from the step-4 checkpoint.
    import shutil

    shutil.rmtree(trained / "checkpoints" / "step-000005")
    done = cli("resume", str(trained))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "succeeded: 5/5 steps" in done.stdout
