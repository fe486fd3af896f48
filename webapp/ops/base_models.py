"""Registering and unregistering base models (the admin, `manage.py model_register` and
`model_unregister`, and the workers' built-ins call these).

Registering reads the model's own files on this host (finetune_core.contracts.model_facts,
no torch): a folder that does not hold a model, a truncated GGUF or a hub id missing from
the cache is refused with what to do, and nothing is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.text import slugify

from finetune_core.contracts.model_facts import ModelFacts, read_facts
from finetune_core.errors import ModelUnreadable
from webapp.api.models import ChatCompletion, CompletionStatus
from webapp.core.models import BaseModel, SourceKind
from webapp.jobs.models import FINISHED
from webapp.projects.models import CellRun

# A run's inputs that name a base model (fine-tune, transfer target, evaluation, judge).
MODEL_INPUTS = ("base_model", "base_model_2", "judge_model")
LICENCE_FILES = ("LICENSE", "LICENSE.txt", "LICENSE.md", "LICENCE", "license.txt")


def facts_of(source: str) -> ModelFacts:
    try:
        return read_facts(source)
    except ModelUnreadable as exc:
        raise ValidationError(f"Not registered: {exc}") from None


def _licence_found(facts: ModelFacts) -> str:
    """A licence file beside a folder's weights; the hub id's card names the rest."""
    folder = Path(facts.source)
    for name in LICENCE_FILES if folder.is_dir() else ():
        if (folder / name).is_file():
            return (folder / name).read_text(encoding="utf-8", errors="replace")[:100_000]
    return f"https://huggingface.co/{facts.hub_id}" if facts.hub_id else ""


def registration(
    *,
    source: str,
    licence: str = "",
    name: str = "",
    label: str = "",
    chat_template: str = "",
    hub_id: str = "",
    offered: bool = True,
) -> dict[str, Any]:
    """The record a registration would write, checked: raises ValidationError saying why not."""
    facts = facts_of(source.strip())
    name = name or slugify(Path(source.rstrip("/")).name.removesuffix(".gguf"))[:100]
    if BaseModel.objects.filter(name=name).exists():
        raise ValidationError(f"A model named {name!r} is registered already; choose another name.")
    licence = licence.strip() or _licence_found(facts)
    if not licence:
        raise ValidationError(
            "Say the model's licence (its text or a URL): the folder holds no LICENSE file."
        )
    return {
        "name": name,
        "label": label or name,
        "kind": facts.kind,
        "source": facts.source,
        "hub_id": hub_id or facts.hub_id,
        "model_type": facts.model_type,
        "parameters": facts.parameters,
        "context_length": facts.context_length,
        "vocab_size": facts.vocab_size,
        "layers": facts.layers,
        "hidden_size": facts.hidden_size,
        "chat_template": chat_template,
        "licence": licence,
        "description": f"{facts.architecture} from {facts.source}",
        "offered": offered,
    }


@transaction.atomic
def base_model_register(*, by: AbstractBaseUser | None = None, **fields: Any) -> BaseModel:
    """Register a Hugging Face folder, a .gguf file or a cached hub id (see registration)."""
    return BaseModel.objects.create(**registration(**fields), registered_by=by)


def base_model_builtin_register(*, facts: dict[str, Any]) -> BaseModel:
    """One of the engine's built-in models, as workers.catalog describes it; a model
    registered again keeps what the operator set (label, offered, licence, throughput)."""
    keep = ("label", "offered", "licence", "tokens_per_s_cpu", "chat_template")
    fresh = {k: v for k, v in facts.items() if k not in keep}
    model, created = BaseModel.objects.get_or_create(
        name=facts["name"], defaults={**facts, "kind": SourceKind.BUILTIN}
    )
    if not created:
        BaseModel.objects.filter(pk=model.pk).update(**fresh, kind=SourceKind.BUILTIN)
        model.refresh_from_db()
    return model


def holders(name: str) -> list[str]:
    """What in flight uses the model: unfinished runs' jobs and chat completions."""
    runs = CellRun.objects.exclude(job__status__in=FINISHED).exclude(job=None)
    held = [
        f"job #{run.job_id} ({run.cell.kind})"
        for run in runs.select_related("cell")
        if name in {(run.inputs or {}).get(key) for key in MODEL_INPUTS}
    ]
    chats = ChatCompletion.objects.filter(
        base_model=name, status__in=(CompletionStatus.QUEUED, CompletionStatus.RUNNING)
    )
    return held + [f"chat completion {chat.pk}" for chat in chats]


@transaction.atomic
def base_model_unregister(*, model: BaseModel) -> None:
    model = BaseModel.objects.select_for_update().get(pk=model.pk)
    busy = holders(model.name)
    if busy:
        raise ValidationError(
            f"{model.name} cannot be unregistered while {len(busy)} job(s) use it: "
            f"{', '.join(busy[:5])}. Wait for them to finish or cancel them, or untick "
            "'offered' to stop new ones."
        )
    model.delete()
