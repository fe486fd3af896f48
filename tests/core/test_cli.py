"""The CLI on the tiny model: help, models, clear errors without tracebacks, train."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from finetune_core.data import bigbench_task_path


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "finetune_core", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ,
    )


def test_help_explains_every_command() -> None:
    done = cli("--help")
    for command in ("models", "validate", "stats", "train", "resume", "generate"):
        assert command in done.stdout
    assert "--lora-r" in cli("train", "--help").stdout


def test_models_lists_parameters_architecture_context_and_cache() -> None:
    done = cli("models")
    assert done.returncode == 0
    line = next(x for x in done.stdout.splitlines() if x.startswith("smollm2-135m-instruct"))
    assert "134.5M" in line and "8192" in line and "Llama" in line


def test_validate_reports_line_numbers_and_fails(tmp_path) -> None:
    bad = tmp_path / "bad.jsonl"
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    bad.write_text(
        json.dumps(good)
        + "\n{not json\n"
        + json.dumps({"messages": [{"role": "bot", "content": "x"}]})
        + "\n"
    )
    done = cli("validate", str(bad))
    assert done.returncode == 1
    assert "line 2: [invalid_json]" in done.stdout and "line 3: [unrecognized_role]" in done.stdout
    assert "Traceback" not in done.stderr


def test_bad_input_gives_a_message_not_a_traceback(tmp_path) -> None:
    missing = cli(
        "train", "--model", "tiny-llama", "--data", str(tmp_path / "nope.jsonl"), "--max-steps", "1"
    )
    assert (
        missing.returncode == 2 and "error:" in missing.stderr and "Traceback" not in missing.stderr
    )
    unknown = cli(
        "train", "--model", "no-such-model", "--data", str(bigbench_task_path("object_counting"))
    )
    assert unknown.returncode == 2 and "unknown model 'no-such-model'" in unknown.stderr
    bad_rank = cli("train", "--model", "tiny-llama", "--data", "x.jsonl", "--lora-r", "0")
    assert bad_rank.returncode == 2 and "lora_r must be at least 1" in bad_rank.stderr


def test_train_from_a_config_file_whose_header_shows_the_command(tmp_path) -> None:
    cfg = tmp_path / "tiny.yaml"
    out = tmp_path / "out"
    cfg.write_text(
        f"# python -m finetune_core train --config {cfg}\n"
        f"model: tiny-llama\ndata: {bigbench_task_path('object_counting')}\n"
        f"output_dir: {out}\nmax_steps: 2\nlimit_examples: 40\nbatch_size: 2\nmax_length: 128\n"
    )
    done = cli("train", "--config", str(cfg), "--lora-r", "4")
    assert done.returncode == 0, done.stderr[-2000:]
    saved = json.loads((out / "config.json").read_text())
    assert saved["lora_r"] == 4 and saved["max_steps"] == 2  # the flag overrides the file
    assert (out / "adapter" / "adapter_model.safetensors").exists()
