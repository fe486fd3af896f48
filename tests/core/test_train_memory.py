"""Gradient checkpointing on, off or auto (finetune_core/train/memory.py): auto skips it
when the batch's activations fit a quarter of the device's free memory, reads a
container's memory limit, and the run says which it did."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from finetune_core.contracts.layout import MANIFEST
from finetune_core.contracts.train import TrainConfig
from finetune_core.errors import FinetuneError
from finetune_core.train import memory, train
from finetune_core.train.memory import activation_bytes, free_memory_bytes, use_checkpointing
from finetune_core.train.setup import build_model
from tests.core.test_train import config, watching

CPU = torch.device("cpu")


def _meminfo_bytes(key: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(key)


def test_free_memory_is_what_the_kernel_and_the_container_allow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    free = free_memory_bytes(CPU)
    assert free is not None and 0 < free <= _meminfo_bytes("MemTotal")
    # A container limited to 384 MiB with 256 MiB in use has 128 MiB, whatever the host has.
    (tmp_path / "memory.max").write_text(str(384 << 20))
    (tmp_path / "memory.current").write_text(str(256 << 20))
    monkeypatch.setattr(memory, "CGROUP", tmp_path)
    assert free_memory_bytes(CPU) == 128 << 20
    (tmp_path / "memory.max").write_text("max\n")  # no limit: the kernel's figure
    assert 128 << 20 < free_memory_bytes(CPU) <= _meminfo_bytes("MemTotal")
    (tmp_path / "memory.current").write_text("?")  # unreadable: the kernel's figure
    assert 128 << 20 < free_memory_bytes(CPU) <= _meminfo_bytes("MemTotal")


def test_auto_checkpoints_only_batches_whose_activations_do_not_fit(tmp_path: Path) -> None:
    model = build_model(config(tmp_path, "m", gradient_checkpointing="on"))
    assert model.recomputes_activations is True
    small = config(tmp_path, "small", gradient_checkpointing="auto")
    assert use_checkpointing(small, model) is False
    free = free_memory_bytes(CPU)
    per_token = activation_bytes(model.config, 1)
    assert per_token > 0
    # A batch whose activations take more than a quarter of the free memory checkpoints.
    huge = config(tmp_path, "huge", gradient_checkpointing="auto", batch_size=1)
    huge.max_length = int(free / per_token / 3)  # past validate()'s bounds on purpose
    assert use_checkpointing(huge, model) is True
    assert use_checkpointing(config(tmp_path, "off", gradient_checkpointing="off"), model) is False
    # DPO runs a pair's two answers in one pass: twice the rows, so it checkpoints sooner.
    pairs = config(tmp_path, "pairs", gradient_checkpointing="auto", batch_size=1)
    pairs.training_method = "dpo"
    pairs.max_length = int(free / per_token / 6)  # a sixth alone fits; two sixths do not
    assert use_checkpointing(pairs, model) is True
    pairs.training_method = "supervised"
    assert use_checkpointing(pairs, model) is False
    # SmolLM2-135M at 4 x 512: about 4.2 GiB, the measured difference (fp32).
    smol = type("Config", (), {"hidden_size": 576, "intermediate_size": 1536,
                               "num_hidden_layers": 30})  # fmt: skip
    assert 4.0 * 2**30 < activation_bytes(smol, 2048) < 4.5 * 2**30


def test_old_configs_hold_a_switch_and_bad_values_are_refused(tmp_path: Path) -> None:
    assert TrainConfig(data="x", gradient_checkpointing=True).gradient_checkpointing == "on"
    assert TrainConfig(data="x", gradient_checkpointing=False).gradient_checkpointing == "off"
    with pytest.raises(FinetuneError, match="gradient_checkpointing must be auto, on or off"):
        TrainConfig(data="x", gradient_checkpointing="sometimes").validate()


def test_the_run_says_whether_it_checkpointed(tmp_path: Path) -> None:
    for mode, expected in (("auto", 0.0), ("on", 1.0)):
        events: list = []
        train(
            config(tmp_path, mode, max_steps=1, gradient_checkpointing=mode),
            hooks=watching(events.append),
        )
        starts = [e for e in events if e.kind == "start"]
        assert [e.gradient_checkpointing for e in starts] == [expected]
        said = "on" if expected else "off"
        assert starts[0].message.endswith("gradient checkpointing " + said)
        manifest = json.loads((tmp_path / mode / MANIFEST).read_text())
        assert manifest["hyperparameters"]["gradient_checkpointing"] == said  # auto's choice
