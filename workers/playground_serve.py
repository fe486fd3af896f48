"""The playground's answers from the serving process (`python -m workers.serve`): both
answers go to its queue at once and are batched with every other request there; the page
streams their text from Redis (webapp/projects/run_stream.py), so the run's outputs are
written twice only: the answers' stream ids at the start, the answers at the end.

This task only waits, on the CPU lane (CellKind.served), so a playground answer never
waits behind a fine-tune.
"""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings

from webapp.jobs import serving
from webapp.projects.models import CellRun, RunStatus
from webapp.projects.run_lifecycle import cell_run_fail, cell_run_settle
from workers.reporter import Reporter


class _Failed(Exception):
    """An answer ended with the serving process's error."""


def served_run(run: CellRun, progress: Reporter, quantization: str, inputs: dict) -> None:
    outputs: dict[str, Any] = progress.outputs
    submitted = []
    for index, answer in enumerate(outputs["answers"]):
        request = serving.ServeRequest(
            model=outputs["model"],
            messages=outputs["messages"],
            quantization=quantization,
            adapter=answer["adapter"] or "",
            max_tokens=int(inputs.get("max_new_tokens") or 128),
            temperature=float(inputs.get("temperature") or 0.0),
            id=f"run-{run.pk}-{progress.task_id}-{index}",
        )
        answer["stream"] = request.id
        try:
            submitted.append(serving.submit(request))
        except serving.QueueFull as exc:
            _cancel(outputs)
            cell_run_fail(run=run, error=str(exc), outputs=outputs)
            return
    progress.save()  # the page learns the answers' stream ids
    try:
        for answer, raw in zip(outputs["answers"], submitted, strict=True):
            answer.update(_follow(answer["stream"], raw, progress), done=True)
    except _Failed as exc:
        cell_run_fail(run=run, error=str(exc), outputs=outputs)
        return
    except _Stopped:
        _cancel(outputs)
        cell_run_settle(run=run, outcome=RunStatus.CANCELLED, outputs=outputs)
        return
    cell_run_settle(run=run, outcome=RunStatus.SUCCEEDED, outputs=outputs)


class _Stopped(Exception):
    """The job was cancelled (or taken over): the answers are cancelled too."""


def _follow(request_id: str, raw: str, progress: Reporter) -> dict[str, Any]:
    """One answer's outcome, from its events; checks for a cancel while it waits."""
    text: list[str] = []
    deadline = time.monotonic() + settings.API_CHAT_TIMEOUT_S
    for event in serving.events(request_id, deadline, queued=raw):
        if progress.should_stop():
            raise _Stopped()
        if event is None:
            continue
        if event["t"] == "text":
            text.append(event["text"])
        elif event["t"] == "done":
            usage = event["usage"]
            return {
                "text": "".join(text),
                "finish_reason": event["finish_reason"],
                "prompt_tokens": usage["prompt_tokens"],
                "completion_tokens": usage["completion_tokens"],
            }
        else:
            raise _Failed(event["message"])
    raise _Failed("The answer ended without an outcome.")


def _cancel(outputs: dict[str, Any]) -> None:
    for answer in outputs["answers"]:
        if answer.get("stream") and not answer.get("done"):
            serving.cancel(answer["stream"])
