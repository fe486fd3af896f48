"""Training configuration: TrainConfig (declared in `finetune_core.contracts.train`),
loadable from YAML or JSON.

A config file's first line shows the command that runs it, e.g.
`# python -m finetune_core train --config configs/smollm2_sports.yaml`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from finetune_core.contracts.train import TrainConfig
from finetune_core.errors import FinetuneError

__all__ = ["TrainConfig", "load_config"]


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
