"""A playground run's answers as they are generated, streamed from Redis (the serving
path, webapp/jobs/serving.py) to the run page as server-sent events: `{"answer": i,
"text": delta}`, `{"answer": i, "end": true}`, then an `end` event. Every connection reads
the answers from their start, so a reloaded page misses nothing. The database is read only
until the run's task has sent the answers (their stream ids), not while they grow."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.views.decorators.http import require_GET

from webapp.jobs import serving
from webapp.projects.models import CellRun
from webapp.projects.run_lifecycle import LIVE
from webapp.teams.access import get_for_user

WAIT_S = 0.5  # how often the run is read while its answers are not sent yet


def _streams(run_id: int, deadline: float) -> list[str]:
    """The answers' stream ids once sent; [] if the run settled or time ran out first."""
    while time.monotonic() < deadline:
        run = CellRun.objects.only("status", "outputs").get(pk=run_id)
        ids = [a.get("stream") for a in (run.outputs or {}).get("answers") or []]
        if ids and all(ids):
            return ids
        if run.status not in LIVE:
            return []
        time.sleep(WAIT_S)
    return []


def _sse(payload: dict, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(payload)}\n\n".encode()


def _events(run_id: int) -> Iterator[bytes]:
    deadline = time.monotonic() + settings.API_CHAT_TIMEOUT_S
    for index, stream in enumerate(_streams(run_id, deadline)):
        for event in serving.events(stream, deadline):
            if event is None:
                yield b": keep-alive\n\n"
            elif event["t"] == "text":
                yield _sse({"answer": index, "text": event["text"]})
            else:
                yield _sse({"answer": index, "end": True})
    yield _sse({}, event="end")  # the page closes its EventSource: no reconnect


@login_required
@require_GET
def run_stream(request: HttpRequest, run_id: int) -> HttpResponse:
    run = get_for_user(CellRun.objects.select_related("cell__project__team"), request.user, run_id)
    if run.cell.kind != "playground" or not serving.enabled():
        raise Http404("This run has no answer stream.")
    response = StreamingHttpResponse(_events(run.pk), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response
