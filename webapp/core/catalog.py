"""The base models the web app offers, read from a JSON file: no finetune_core import."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

CATALOG_PATH = Path(__file__).with_name("model_catalog.json")
DEFAULT_MODEL = "smollm2-135m-instruct"


@cache
def models() -> dict[str, dict[str, Any]]:
    data = json.loads(CATALOG_PATH.read_text())
    return {m["name"]: m for m in data["models"]}


def model_choices() -> list[tuple[str, str]]:
    return [(name, m.get("label", name)) for name, m in models().items()]


def model_info(name: str) -> dict[str, Any]:
    return models().get(name, {"name": name, "parameters": None, "tokens_per_s_cpu": None})


def model_type(name: str) -> str | None:
    """The base model's Hugging Face model_type (llama, gemma3), or None when not known."""
    return models().get(name, {}).get("model_type")
