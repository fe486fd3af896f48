"""The playground cell run: the base model and base + adapter answer the same prompt.

Answers stream into the CellRun's outputs as they grow (writes throttled), so the page
polls and shows the text arriving.
"""

from __future__ import annotations

import time
from typing import Any

from django.utils import timezone

from webapp.jobs.services import job_fail, job_succeed
from webapp.projects.catalog import DEFAULT_MODEL
from webapp.projects.finetune_config import effective_hparams
from webapp.projects.models import CellRun, RunStatus
from workers import services_bridge
from workers.finetune_run import UserError

FLUSH_EVERY_S = 0.3


def _tuned_source(inputs: dict[str, Any]) -> CellRun | None:
    cell_id = inputs.get("model_cell")
    if not cell_id:
        return None
    source = (
        CellRun.objects.filter(cell_id=cell_id, status=RunStatus.SUCCEEDED)
        .order_by("-version")
        .first()
    )
    if source is None or not source.outputs.get("adapter_dir"):
        raise UserError("The fine-tune cell has no finished run yet; run it first.")
    return source


class Stream:
    """Collects deltas for one answer and writes the outputs at most every FLUSH_EVERY_S."""

    def __init__(self, run_id: int, outputs: dict[str, Any], index: int) -> None:
        self.run_id, self.outputs, self.index = run_id, outputs, index
        self.last = 0.0

    def flush(self) -> None:
        self.last = time.monotonic()
        CellRun.objects.filter(pk=self.run_id).update(outputs=self.outputs)

    def __call__(self, delta: str) -> None:
        self.outputs["answers"][self.index]["text"] += delta
        if time.monotonic() - self.last >= FLUSH_EVERY_S:
            self.flush()


def run_playground(run: CellRun, job_id: int) -> None:
    inputs = run.inputs
    try:
        source = _tuned_source(inputs)
    except UserError as exc:
        _fail(run, job_id, {"error": str(exc)}, str(exc))
        return
    if source is not None:
        model = source.inputs["base_model"]
        quantization = effective_hparams(source.inputs)["quantization"]
    else:
        model, quantization = inputs.get("base_model") or DEFAULT_MODEL, "nf4"
    messages = [{"role": "user", "content": inputs["prompt"]}]
    if inputs.get("system"):
        messages.insert(0, {"role": "system", "content": inputs["system"]})
    answers = [{"label": f"Base model ({model})", "adapter": None}]
    if source is not None:
        label = f"Fine-tuned ({source.cell} v{source.version})"
        answers.append({"label": label, "adapter": source.outputs["adapter_dir"]})
    for answer in answers:
        answer.update(text="", done=False)
    outputs: dict[str, Any] = {"model": model, "messages": messages, "answers": answers}
    try:
        for index, answer in enumerate(answers):
            stream = Stream(run.pk, outputs, index)
            result = services_bridge.generate_one(
                model=model,
                adapter=answer["adapter"],
                quantization=quantization,
                messages=messages,
                max_new_tokens=int(inputs.get("max_new_tokens") or 128),
                temperature=float(inputs.get("temperature") or 0.0),
                on_text=stream,
            )
            answer.update(result, done=True)
            stream.flush()
    except Exception as exc:  # noqa: BLE001
        message = str(exc) if services_bridge.is_user_error(exc) else f"{type(exc).__name__}: {exc}"
        _fail(run, job_id, {**outputs, "error": message}, message)
        return
    CellRun.objects.filter(pk=run.pk).update(
        status=RunStatus.SUCCEEDED, outputs=outputs, finished_at=timezone.now()
    )
    job_succeed(job_id=job_id)


def _fail(run: CellRun, job_id: int, outputs: dict[str, Any], message: str) -> None:
    CellRun.objects.filter(pk=run.pk).update(
        status=RunStatus.FAILED, outputs=outputs, finished_at=timezone.now()
    )
    job_fail(job_id=job_id, error=message)
