"""The base models the web app offers: selectors over the registered records
(webapp.core.models.BaseModel); no finetune_core import."""

from __future__ import annotations

from typing import Any

from webapp.core.models import BaseModel

DEFAULT_MODEL = "smollm2-135m-instruct"
INFO_FIELDS = (
    "name", "label", "parameters", "context_length", "model_type", "tokens_per_s_cpu",
    "vocab_size", "layers", "hidden_size",
)  # fmt: skip


def _info(model: BaseModel) -> dict[str, Any]:
    return {field: getattr(model, field) for field in INFO_FIELDS} | {"hub_id": model.hub_id}


def models() -> dict[str, dict[str, Any]]:
    """The models offered to teams, by name, smallest first."""
    return {m.name: _info(m) for m in BaseModel.objects.filter(offered=True)}


def size_text(parameters: int | None) -> str:
    if not parameters:
        return "size unknown"
    if parameters >= 10**9:
        return f"{parameters / 10**9:.1f}B parameters"
    if parameters >= 10**6:
        return f"{parameters / 10**6:.0f}M parameters"
    return f"{parameters:,} parameters"  # a test model's: "0M" would read as nothing


def context_text(tokens: int | None) -> str:
    return f"{tokens // 1024}k context" if tokens and tokens >= 1024 else f"{tokens or '?'} context"


def model_choices() -> list[tuple[str, str]]:
    """Form choices: each offered model with its size and context."""
    return [
        (
            m["name"],
            f"{m['label']} · {size_text(m['parameters'])} · {context_text(m['context_length'])}",
        )
        for m in models().values()
    ]


def model_info(name: str) -> dict[str, Any]:
    """A registered model's facts (offered or not); blanks for a name no longer registered."""
    found = BaseModel.objects.filter(name=name).first()
    if found is None:
        return {"name": name, "parameters": None, "tokens_per_s_cpu": None}
    return _info(found)


def model_type(name: str) -> str | None:
    """The base model's Hugging Face model_type (llama, gemma3), or None when not known."""
    return BaseModel.objects.filter(name=name).values_list("model_type", flat=True).first()
