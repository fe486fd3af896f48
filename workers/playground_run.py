"""The playground cell run: the base model and base + adapter answer the same prompt.

Answers stream into the CellRun's outputs as they grow (writes throttled), so the page
polls and shows the text arriving. On the serving path (a Redis broker) the answers come
from the serving process instead, both at once (workers/playground_serve.py).
"""

from __future__ import annotations

import time
from typing import Any

from webapp.core.catalog import DEFAULT_MODEL
from webapp.jobs import serving
from webapp.projects.finetune_config import effective_hparams
from webapp.projects.models import CellRun, RunStatus
from webapp.projects.run_lifecycle import cell_run_fail, cell_run_settle
from webapp.projects.run_outputs import outputs_of
from webapp.transfers.selectors import latest_succeeded_run
from workers import services_bridge
from workers.finetune_run import UserError
from workers.playground_serve import served_run
from workers.reporter import Reporter

FLUSH_EVERY_S = 0.3


def _tuned_source(inputs: dict[str, Any]) -> CellRun | None:
    cell_id = inputs.get("model_cell")
    if not cell_id:
        return None
    source = latest_succeeded_run(cell_id=cell_id)
    if source is None or not outputs_of(source).adapter_dir:
        raise UserError("The fine-tune cell has no finished run yet; run it first.")
    return source


class Stopped(Exception):
    """The job was cancelled (or another delivery took it over): unwinds the generation."""


class Stream:
    """Collects deltas for one answer and writes the outputs at most every FLUSH_EVERY_S;
    stops the generation once the reporter's should_stop says so."""

    def __init__(self, progress: Reporter, index: int) -> None:
        self.progress, self.index = progress, index
        self.last = 0.0

    def flush(self) -> None:
        self.last = time.monotonic()
        self.progress.save()

    def __call__(self, delta: str) -> None:
        if self.progress.should_stop():
            raise Stopped()
        self.progress.outputs["answers"][self.index]["text"] += delta
        if time.monotonic() - self.last >= FLUSH_EVERY_S:
            self.flush()


def run_playground(run: CellRun, job_id: int, task_id: str) -> None:
    inputs = run.inputs
    try:
        source = _tuned_source(inputs)
    except UserError as exc:
        cell_run_fail(run=run, error=str(exc))
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
        answers.append({"label": label, "adapter": outputs_of(source).adapter_dir})
    for answer in answers:
        answer.update(text="", done=False)
    outputs: dict[str, Any] = {"model": model, "messages": messages, "answers": answers}
    progress = Reporter(job_id, task_id, run=run, outputs=outputs)
    if serving.enabled():
        served_run(run, progress, quantization, inputs)
        return
    try:
        for index, answer in enumerate(answers):
            stream = Stream(progress, index)
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
    except Stopped:
        # A cancelled answer stays cancelled: it is not settled as a success when it ends.
        cell_run_settle(run=run, outcome=RunStatus.CANCELLED, outputs=outputs)
        return
    except Exception as exc:  # noqa: BLE001
        message = str(exc) if services_bridge.is_user_error(exc) else f"{type(exc).__name__}: {exc}"
        cell_run_fail(run=run, error=message, outputs=outputs)
        return
    cell_run_settle(run=run, outcome=RunStatus.SUCCEEDED, outputs=outputs)
