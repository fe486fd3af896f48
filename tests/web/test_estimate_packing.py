"""The estimate counts the optimizer steps a run takes (issue 27): it packs the dataset
report's example lengths into rows as the engine's packer does, so rows left part empty
by whole examples count. Assuming perfectly full rows put the demo at 32 steps; it ran 45.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from finetune_core.contracts.packing import optimizer_steps
from webapp.datasets.models import DatasetVersion, VersionStatus
from webapp.home.management.commands.demo_setup import DEMO_DATA, DEMO_MODEL, FINETUNE
from webapp.projects.estimate import estimate
from webapp.projects.finetune_config import train_config_dict
from workers.services_bridge import validate_dataset_file

TINY = "tiny-llama"
# Varied lengths: lengths 30 to 110 tokens, some cut at 96, rows left part empty.
VARIED = {
    "base_model": TINY,
    "preset": "quick",
    "epochs": 2,
    "batch_size": 3,
    "grad_accum": 2,
    "max_length": 96,
    "val_fraction": 0.15,
    "seed": 0,
    "warmup_ratio": 0.0,
}


def _write_varied(path: Path) -> Path:
    lines = []
    for i in range(48):
        msgs = [
            {"role": "user", "content": f"Question {i}? " + "x" * (i * 7 % 23)},
            {"role": "assistant", "content": "y" * (i * 13 % 61 + 1)},
        ]
        lines.append(json.dumps({"messages": msgs}))
    path.write_text("\n".join(lines) + "\n")
    return path


def _validated(version: DatasetVersion, path: Path, model: str) -> DatasetVersion:
    """`version` with the report the validation job writes for `path` under `model`."""
    report = validate_dataset_file(str(path), model=model)
    DatasetVersion.objects.filter(pk=version.pk).update(
        status=VersionStatus.VALID, n_examples=report["n_examples"], report=report
    )
    return DatasetVersion.objects.get(pk=version.pk)


def _engine_config(config: dict[str, Any], data: Path, out: Path) -> Any:
    from finetune_core.train import TrainConfig

    cfg = TrainConfig(**train_config_dict(config, data_path=str(data), output_dir=out))
    cfg.validate()
    return cfg


def _perfectly_packed_steps(version: DatasetVersion, config: dict[str, Any]) -> int:
    """What the estimate said before: the training tokens in completely full rows."""
    stats = version.report["stats"]
    n_train = version.n_examples - round(version.n_examples * config["val_fraction"])
    mean = stats["tokens"]["total"] / stats["rows"]
    rows = math.ceil(n_train * min(mean, config["max_length"]) / config["max_length"])
    return optimizer_steps(
        rows,
        batch_size=config["batch_size"],
        grad_accum=config.get("grad_accum", 1),
        epochs=config["epochs"],
        max_steps=None,
    )


def test_the_estimated_steps_are_the_steps_a_real_run_takes(
    dataset_version: DatasetVersion, tmp_path: Path
) -> None:
    from finetune_core.train import train

    data = _write_varied(tmp_path / "varied.jsonl")
    version = _validated(dataset_version, data, TINY)
    estimated = estimate(VARIED, version)
    result = train(_engine_config(VARIED, data, tmp_path / "run"))
    assert result.status == "succeeded"
    assert estimated.steps == result.total_steps == result.steps
    assert estimated.train_examples == 41  # 48 less round(48 x 0.15) held out
    # Full rows would have counted fewer: the test sees the difference packing makes.
    assert _perfectly_packed_steps(version, VARIED) < estimated.steps


@pytest.mark.integration
def test_the_demo_is_estimated_at_the_steps_it_runs(
    dataset_version: DatasetVersion, tmp_path: Path
) -> None:
    """SmolLM2's tokenizer only: the engine's own rows of the demo data, no training."""
    from finetune_core.models.loading import load_tokenizer
    from finetune_core.train.recipe import run_steps
    from finetune_core.train.setup import prepare_rows

    version = _validated(dataset_version, DEMO_DATA, DEMO_MODEL)
    cfg = _engine_config(FINETUNE, DEMO_DATA, tmp_path / "run")
    rows, _, _ = prepare_rows(cfg, load_tokenizer(DEMO_MODEL))
    steps = run_steps(cfg, len(rows))
    assert estimate(FINETUNE, version).steps == steps == 45
