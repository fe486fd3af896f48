"""The engine resolves the names of registered base models through the service's records:
the worker sets finetune_core's registry lookup to read webapp.core.models.BaseModel, so a
job names a model as teams see it and the engine never reads the database."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from finetune_core.models import registry
from finetune_core.models.registry import ModelSpec, gguf_file_spec

if TYPE_CHECKING:  # imported in the functions: workers/celery.py installs before django.setup()
    from webapp.core.models import BaseModel


def spec_of(name: str) -> ModelSpec | None:
    """The engine's spec of a registered model (built-ins are the engine's own)."""
    from webapp.core.models import BaseModel, SourceKind

    model = BaseModel.objects.exclude(kind=SourceKind.BUILTIN).filter(name=name).first()
    return None if model is None else spec_for(model)


def spec_for(model: BaseModel) -> ModelSpec:
    from webapp.core.models import SourceKind

    facts = {"hub_id": model.hub_id, "chat_template": model.chat_template, "label": model.label}
    if model.kind == SourceKind.GGUF:
        return gguf_file_spec(model.name, Path(model.source), **facts)
    return ModelSpec(
        name=model.name,
        kind="hub" if model.kind == SourceKind.HUB else "local",
        description=model.description,
        source=model.source,
        **facts,
    )


def registered_specs() -> list[ModelSpec]:
    """Every registered model this host could load, built-ins first."""
    from webapp.core.models import BaseModel, SourceKind

    others = BaseModel.objects.exclude(kind=SourceKind.BUILTIN).exclude(name__in=registry.BUILTIN)
    return [*registry.BUILTIN.values(), *(spec_for(m) for m in others)]


def install() -> None:
    registry.set_lookup(spec_of)
