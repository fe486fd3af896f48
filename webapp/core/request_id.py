"""One id per web request, carried into the tasks it sends and onto every log line of both.

A client's own `X-Request-ID` is kept when it is a plain token (so a proxy's or a client's
id correlates end to end), else one is made; the answer names it in the same header. Jobs
keep it with their task (webapp.jobs.dispatch), so the worker that runs the task, and a
later re-send by recovery, log under it too (workers/celery.py).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from django.core.signals import request_finished
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse

HEADER = "X-Request-ID"
REQUEST_ID_VAR: ContextVar[str] = ContextVar("request_id", default="")
# Set while a web request is served, not while a task runs under its request's id.
IN_REQUEST_VAR: ContextVar[bool] = ContextVar("in_request", default=False)
_PLAIN = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def current() -> str:
    """The id of the request (or task) this code runs for; "" outside both."""
    return REQUEST_ID_VAR.get()


def current_request() -> str:
    """The id of the web request being served; "" in a task, even one that carries an id."""
    return REQUEST_ID_VAR.get() if IN_REQUEST_VAR.get() else ""


def accepted(value: str | None) -> str:
    """The client's id when it is a plain token of at most 64 characters, else a new one
    (an id lands in log lines: nothing that could forge or break one)."""
    return value if value and _PLAIN.fullmatch(value) else uuid.uuid4().hex


@contextmanager
def bound(request_id: str, *, web: bool = False) -> Iterator[None]:
    token, web_token = REQUEST_ID_VAR.set(request_id), IN_REQUEST_VAR.set(web)
    try:
        yield
    finally:
        REQUEST_ID_VAR.reset(token)
        IN_REQUEST_VAR.reset(web_token)


class RequestIdMiddleware:
    """Names the request for everything that runs for it, Django's own closing log line
    ("Not Found: ...", written after the middleware returns) included: so the id is set
    here and cleared only once the request has finished (request_finished, below)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = accepted(request.headers.get(HEADER))
        REQUEST_ID_VAR.set(request_id)
        IN_REQUEST_VAR.set(True)
        response = self.get_response(request)
        response[HEADER] = request_id
        return response


@receiver(request_finished)
def _request_done(**kwargs: object) -> None:
    REQUEST_ID_VAR.set("")
    IN_REQUEST_VAR.set(False)
