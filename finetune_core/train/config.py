"""Training configuration: one flat dataclass, loadable from YAML or JSON.

A config file's first line shows the command that runs it, e.g.
`# python -m finetune_core train --config configs/smollm2_sports.yaml`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from finetune_core.errors import FinetuneError


@dataclass
class TrainConfig:
    model: str = "smollm2-135m-instruct"
    data: str = ""
    output_dir: str = "runs/latest"
    data_format: str | None = None  # auto-detected when None
    column_map: dict[str, str] | None = None  # CSV: {"prompt": col, "completion": col}
    val_data: str | None = None  # a separate validation file; else a split of `data`
    val_fraction: float = 0.1
    limit_examples: int | None = None  # use only the first N examples
    # Model and adapter
    quantization: Literal["nf4", "none"] = "nf4"
    method: Literal["lora", "dora"] = "lora"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"
    # Optimisation
    learning_rate: float = 2e-4
    weight_decay: float = 0.0
    optimizer: Literal["auto", "adamw", "paged_adamw_8bit"] = "auto"
    lr_scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = 0.03
    epochs: int = 1
    max_steps: int | None = None  # overrides epochs when set
    batch_size: int = 4
    grad_accum: int = 1
    grad_clip: float = 1.0
    max_length: int = 512
    packing: bool = True
    gradient_checkpointing: bool = True
    seed: int = 0
    # Evaluation and checkpoints
    eval_every: int = 50
    save_every: int = 50
    max_val_rows: int = 64
    final: Literal["last", "best"] = "last"
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        problems = []
        if not self.data:
            problems.append("data: a training file is required")
        for name in ("lora_r", "lora_alpha", "epochs", "batch_size", "grad_accum", "max_length"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            problems.append(f"max_steps must be at least 1, got {self.max_steps}")
        if not 0 < self.learning_rate < 1:
            problems.append(f"learning_rate must be in (0, 1), got {self.learning_rate}")
        if not 0 <= self.val_fraction < 1:
            problems.append(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if not 0 <= self.lora_dropout < 1:
            problems.append(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.quantization not in ("nf4", "none"):
            problems.append(f"quantization must be nf4 or none, got {self.quantization!r}")
        if self.method not in ("lora", "dora"):
            problems.append(f"method must be lora or dora, got {self.method!r}")
        if problems:
            raise FinetuneError("invalid training config: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_config(path: str | Path, **overrides: Any) -> TrainConfig:
    """Read a YAML or JSON config; `overrides` (CLI flags that were given) win."""
    import yaml

    path = Path(path)
    try:
        raw = (
            yaml.safe_load(path.read_text())
            if path.suffix in (".yaml", ".yml")
            else json.loads(path.read_text())
        )
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise FinetuneError(f"cannot read config {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise FinetuneError(f"config {path} must be a mapping of option: value")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise FinetuneError(f"config {path}: unknown option(s) {', '.join(unknown)}")
    raw.update({k: v for k, v in overrides.items() if v is not None})
    config = TrainConfig(**raw)
    config.validate()
    return config
