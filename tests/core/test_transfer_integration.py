"""Integration: Trans-LoRA from a real SmolLM2-135M-Instruct adapter to gemma-3-270m
through the CLI on a small BIG-bench slice. Checks that every phase runs, the report is
complete and the transferred adapter loads with plain peft; quality is the benchmark's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from finetune_core.data import bigbench_task_path
from finetune_core.train import TrainConfig, train
from finetune_core.transfer.discriminator import recall_threshold

pytestmark = pytest.mark.integration
TASK = "arithmetic-2_digit_addition"


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "finetune_core", *args],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_smollm2_adapter_moves_to_gemma(tmp_path: Path) -> None:
    run = tmp_path / "source"
    cfg = TrainConfig(
        model="smollm2-135m-instruct", data=str(bigbench_task_path(TASK)), output_dir=str(run),
        limit_examples=60, val_fraction=1 / 3, max_steps=4, batch_size=4, max_length=64,
        learning_rate=1e-3, eval_every=10**6, save_every=10**6,
    )  # fmt: skip
    assert train(cfg).status == "succeeded"  # 40 train, 20 held out

    done = cli("discriminator", str(run), "--seeds", "5", "--real", "8", "--epochs", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["task"] == TASK
    # Held out from the discriminator: 32 unused training inputs + 20 validation ones.
    assert summary["calibration"]["n"] == 52

    out = tmp_path / "gemma"
    done = cli(
        "transfer", str(run), "--target", "gemma-3-270m", "--output-dir", str(out),
        "--synthetic", "8", "--max-attempts", "24", "--epochs", "1",
        "--teacher-max-new-tokens", "8", "--eval-limit", "8", "--real-recall", "0.99",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "transferred" in done.stdout
    report = json.loads((out / "report.json").read_text())
    assert set(report["accuracy"]) == {"source_adapter", "target_base", "transferred"}
    assert all(r["n"] == 8 for r in report["accuracy"].values())
    assert 1 <= report["synthesis"]["accepted"] <= 8
    assert report["synthesis"]["attempts"] <= 24
    # --real-recall reaches the filter: the margin 99% of the held-out real inputs beat.
    margins = summary["calibration"]["margins"]
    rule = report["synthesis"]["filter"]
    assert rule["real_recall"] == 0.99
    assert rule["threshold"] == recall_threshold(margins, 0.99) >= 0.0
    assert rule["real_passing"] == sum(m > rule["threshold"] for m in margins) / 52
    assert {"synthesize", "teacher", "train_transferred", "eval_transferred"} <= set(
        report["phase_seconds"]
    )

    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from finetune_core.models import prepare

    base = AutoModelForCausalLM.from_pretrained(prepare("gemma-3-270m"), dtype=torch.float32)
    model = PeftModel.from_pretrained(base, report["adapter"])
    tok = AutoTokenizer.from_pretrained(report["adapter"])
    with torch.no_grad():
        logits = model(**tok("What is 12 plus 30?", return_tensors="pt")).logits
    assert torch.isfinite(logits).all()
