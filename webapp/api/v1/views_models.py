"""/v1/models and /v1/chat/completions (generation runs on a worker; we follow its row)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse

from webapp.api.auth import Caller, api_view
from webapp.api.body import field, json_body
from webapp.api.errors import ApiError
from webapp.api.models import ChatCompletion, CompletionStatus
from webapp.api.v1 import chat_serving
from webapp.api.v1.chat_sse import Chunks, completion_object
from webapp.api.v1.render import checkpoint_objects, epoch, model_object
from webapp.api.v1.selectors import (
    chat_completion_poll,
    fine_tuned_model_id,
    fine_tuned_models,
    notebook_model_id,
    notebook_models,
    resolve_fine_tuned,
    resolve_model,
    team_for_write,
    team_slug,
)
from webapp.api.v1.services import chat_completion_create, fine_tuned_model_delete
from webapp.core.catalog import models as catalog_models
from webapp.jobs import serving
from webapp.jobs.fleet import QueueCapacity
from webapp.projects.estimate import availability
from webapp.projects.routing import training_capacities

POLL_S = 0.05
MAX_TOKENS = 4096
MAX_STOP, MAX_STOP_CHARS = 4, 200  # OpenAI allows up to 4 stop sequences
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


def _base_model(info: dict[str, Any], capacities: list[QueueCapacity]) -> dict[str, Any]:
    """A base model as OpenAI lists one, plus what Tunebook knows of it: its size, context,
    the default fine-tune's memory and which workers can take one now."""
    memory, workers = availability(info, capacities)
    extra = {k: info[k] for k in ("label", "parameters", "context_length", "hub_id")}
    extra |= {"default_finetune_memory_bytes": memory, "workers": workers}
    return model_object(info["name"], created=0, owned_by="tunebook") | {"tunebook": extra}


def _all_models(caller: Caller) -> list[dict[str, Any]]:
    capacities = training_capacities()  # the workers' records, read once for every model
    rows = [_base_model(info, capacities) for info in catalog_models().values()]
    owner = team_slug(caller.team)
    for ft in fine_tuned_models(caller):
        created = epoch(ft.job.finished_at) if ft.job else None
        rows.append(model_object(fine_tuned_model_id(ft), created=created, owned_by=owner))
        for point in checkpoint_objects(ft):
            rows.append(
                model_object(point["fine_tuned_model_checkpoint"], created=created, owned_by=owner)
            )
    # Fine-tune cells of the team's notebooks serve through /v1/ too.
    for run in notebook_models(caller):
        created = epoch(run.finished_at or run.created_at)
        rows.append(
            model_object(notebook_model_id(run, caller.team), created=created, owned_by=owner)
        )
    return rows


def _list(request: HttpRequest, caller: Caller) -> HttpResponse:
    return JsonResponse({"object": "list", "data": _all_models(caller)})


def _get(request: HttpRequest, caller: Caller, model_id: str) -> HttpResponse:
    for row in _all_models(caller):
        if row["id"] == model_id:
            return JsonResponse(row)
    raise ApiError(
        404, f"The model '{model_id}' does not exist", param="model", code="model_not_found"
    )


def _delete(request: HttpRequest, caller: Caller, model_id: str) -> HttpResponse:
    team_for_write(caller)
    if model_id in catalog_models():
        raise ApiError(
            403, "Base models cannot be deleted.", param="model", code="permission_denied"
        )
    if model_id in {notebook_model_id(run, caller.team) for run in notebook_models(caller)}:
        raise ApiError(
            403,
            "This model belongs to a notebook cell; delete its run in the notebook.",
            param="model",
            code="permission_denied",
        )
    ft, step = resolve_fine_tuned(caller, model_id)
    if step is not None:
        raise ApiError(400, "Delete the fine-tuned model, not one checkpoint.", param="model")
    fine_tuned_model_delete(ft=ft)
    return JsonResponse({"id": model_id, "object": "model", "deleted": True})


def _content(message: dict[str, Any], index: int) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        if len(texts) == len(content) and all(isinstance(t, str) for t in texts):
            return "".join(texts)
    raise ApiError(400, "Message content must be text.", param=f"messages[{index}].content")


def _messages(data: dict[str, Any]) -> list[dict[str, str]]:
    raw = field(data, "messages", list, required=True)
    if not raw:
        raise ApiError(400, "messages must not be empty.", param="messages")
    messages = []
    for i, message in enumerate(raw):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ROLES:
            raise ApiError(400, f"Unsupported role {role!r}.", param=f"messages[{i}].role")
        messages.append({"role": ROLES[role], "content": _content(message, i)})
    return messages


def _usage(row: ChatCompletion) -> dict[str, int]:
    total = row.prompt_tokens + row.completion_tokens
    return {
        "prompt_tokens": row.prompt_tokens,
        "completion_tokens": row.completion_tokens,
        "total_tokens": total,
    }


def _wait(pk: int, deadline: float) -> Iterator[ChatCompletion]:
    """The row each time it changes, until it settles or the deadline passes."""
    last = None
    while True:
        row = chat_completion_poll(pk)
        state = (row.status, len(row.text))
        if state != last:
            last = state
            yield row
        if row.status in (CompletionStatus.SUCCEEDED, CompletionStatus.FAILED):
            return
        if time.monotonic() > deadline:
            return
        time.sleep(POLL_S)


def _stream(row: ChatCompletion, deadline: float, include_usage: bool) -> Iterator[bytes]:
    chunks = Chunks(f"chatcmpl-{row.pk}", epoch(row.created_at), row.model)
    yield chunks.start()
    sent = 0
    last = row
    for last in _wait(row.pk, deadline):
        if len(last.text) > sent:
            yield chunks.chunk({"content": last.text[sent:]})
            sent = len(last.text)
    if last.status == CompletionStatus.SUCCEEDED:
        yield from chunks.end(last.finish_reason, _usage(last), include_usage)
    elif last.status == CompletionStatus.FAILED:
        yield from chunks.error(last.error or "Generation failed.", status=500)
    else:
        yield from chunks.error("Generation timed out.", status=504, code="timeout")


def _stop(data: dict[str, Any]) -> list[str]:
    """OpenAI's `stop`: a string or up to 4 strings; generation ends before the first."""
    stop = data.get("stop")
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if (
        not isinstance(stops, list)
        or not 1 <= len(stops) <= MAX_STOP
        or not all(isinstance(s, str) and 0 < len(s) <= MAX_STOP_CHARS for s in stops)
    ):
        raise ApiError(
            400,
            f"stop must be a string or a list of 1 to {MAX_STOP} non-empty strings of at most "
            f"{MAX_STOP_CHARS} characters.",
            param="stop",
        )
    return stops


def _chat(request: HttpRequest, caller: Caller) -> HttpResponse:
    data = json_body(request)
    model = field(data, "model", str, required=True)
    messages = _messages(data)
    if field(data, "n", int, default=1) != 1:
        raise ApiError(400, "Only n=1 is supported.", param="n")
    max_tokens = field(data, "max_completion_tokens", int) or field(
        data, "max_tokens", int, default=256
    )
    if not 1 <= max_tokens <= MAX_TOKENS:
        raise ApiError(400, f"max_tokens must be between 1 and {MAX_TOKENS}.", param="max_tokens")
    temperature = float(field(data, "temperature", (int, float), default=1.0))
    if not 0.0 <= temperature <= 2.0:
        raise ApiError(400, "temperature must be between 0 and 2.", param="temperature")
    top_p = float(field(data, "top_p", (int, float), default=1.0))
    if not 0.0 < top_p <= 1.0:
        raise ApiError(400, "top_p must be greater than 0 and at most 1.", param="top_p")
    seed = field(data, "seed", int)
    if seed is not None and not -(2**63) <= seed < 2**63:
        raise ApiError(400, "seed must fit in 64 bits.", param="seed")
    stream = field(data, "stream", bool, default=False)
    options = field(data, "stream_options", dict, default={})
    target = resolve_model(caller, model)
    if serving.enabled():
        return chat_serving.respond(
            caller, model, target, messages,
            max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed,
            stop=_stop(data), stream=stream, include_usage=bool(options.get("include_usage")),
        )  # fmt: skip
    row = chat_completion_create(
        team=caller.team, created_by=caller.user, model=model, target=target,
        messages=messages, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
        seed=seed, stop=_stop(data),
    )  # fmt: skip
    deadline = time.monotonic() + settings.API_CHAT_TIMEOUT_S
    if stream:
        body = _stream(row, deadline, bool(options.get("include_usage")))
        response = StreamingHttpResponse(body, content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return response
    last = row
    for last in _wait(row.pk, deadline):  # noqa: B007 - the loop waits; its last value counts
        continue
    if last.status == CompletionStatus.FAILED:
        raise ApiError(500, last.error or "Generation failed.", code="generation_failed")
    if last.status != CompletionStatus.SUCCEEDED:
        raise ApiError(504, "Generation timed out; try again.", code="timeout")
    return JsonResponse(
        completion_object(
            f"chatcmpl-{last.pk}", epoch(last.created_at), model, last.text,
            last.finish_reason, _usage(last),
        )
    )  # fmt: skip


models_view = api_view({"GET": _list})
model_view = api_view({"GET": _get, "DELETE": _delete})
# Generating changes nothing the team owns, so read-only keys may chat.
chat_view = api_view({"POST": _chat}, read_only_ok=frozenset({"POST"}))
