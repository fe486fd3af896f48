"""The guard in front of /v1/ and /api/: body size, per-key rate limit, Idempotency-Key.

It runs before the views, so an oversized request costs no database work and an
over-limit one costs only its key's lookup (which the view then reuses), and one place
gives both APIs the same limits and the same replay rules.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from webapp.api.auth import authenticate
from webapp.api.errors import ApiError, error_response
from webapp.api.idempotency import (
    MAX_KEY_LENGTH,
    idempotent_request_abandon,
    idempotent_request_begin,
    idempotent_request_finish,
    replay,
    request_fingerprint,
)
from webapp.api.limits import Verdict, rate_limit_check
from webapp.api.models import IdempotentRequest
from webapp.datasets.uploads import FORM_OVERHEAD_BYTES

API_PREFIXES = ("/v1/", "/api/")
# The schema and docs are public pages, not API calls.
UNLIMITED = ("/api/schema/", "/api/docs/")


def _too_large(request: HttpRequest) -> HttpResponse | None:
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return error_response(400, "Content-Length is not a number.", code="invalid_request")
    if request.META.get("CONTENT_TYPE", "").startswith("multipart/"):
        # The upload handler enforces the exact file limit; this stops absurd bodies early.
        if length > settings.MAX_UPLOAD_BYTES + FORM_OVERHEAD_BYTES:
            return error_response(
                413, "The upload is larger than the upload limit.", param="file",
                code="file_too_large",
            )  # fmt: skip
        return None
    if length > settings.API_MAX_BODY_BYTES:
        return error_response(
            413,
            f"The request body is larger than {settings.API_MAX_BODY_BYTES} bytes.",
            code="request_too_large",
        )
    return None


def _holds_nul(body: bytes) -> bool:
    """Whether the JSON body really decodes to a NUL (not, say, an escaped backslash-u)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return b"\x00" in body  # not JSON: the view answers; only a raw NUL is refused here
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str) and "\x00" in item:
            return True
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _nul_text(request: HttpRequest) -> HttpResponse | None:
    """PostgreSQL text cannot hold NUL, so a JSON body carrying one is refused up front
    (uploads are exempt: binary files get the validator's own message)."""
    if request.method not in ("POST", "PUT", "PATCH") or request.META.get(
        "CONTENT_TYPE", ""
    ).startswith("multipart/"):
        return None
    body = request.body
    if (b"\x00" in body or b"\\u0000" in body) and _holds_nul(body):
        return error_response(
            400, "Text in the request cannot contain NUL (\\u0000) characters.",
            code="invalid_request",
        )  # fmt: skip
    return None


def _rate_headers(response: HttpResponse, verdict: Verdict) -> HttpResponse:
    # OpenAI's header names, so clients that read them work unchanged.
    response["x-ratelimit-limit-requests"] = str(verdict.limit)
    response["x-ratelimit-remaining-requests"] = str(verdict.remaining)
    response["x-ratelimit-reset-requests"] = f"{verdict.reset_s}s"
    return response


def _over_limit(verdict: Verdict) -> HttpResponse:
    response = error_response(
        429,
        f"Rate limit reached: {verdict.limit} requests per "
        f"{settings.API_RATE_LIMIT_WINDOW_S} s for {verdict.who}. "
        f"Try again in {verdict.reset_s} s.",
        code="rate_limit_exceeded",
    )
    response["Retry-After"] = str(verdict.reset_s)
    return response


def _as_api_error(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    """Django's and ninja's own 404/405/500 pages become OpenAI-shaped JSON on the API paths."""
    status = response.status_code
    if status not in (404, 405, 500) or "json" in response.get("Content-Type", ""):
        return response
    if status == 500:  # the traceback is logged by Django; the client gets OpenAI's shape
        return error_response(
            500, "The server had an error processing your request.", code="server_error"
        )
    if status == 404:
        return error_response(
            404, f"Unknown request URL: {request.method} {request.path}.", code="unknown_url"
        )
    allowed = response.get("Allow", "")
    shaped = error_response(
        405,
        f"{request.method} is not allowed here (allowed: {allowed}).",
        code="method_not_allowed",
    )
    shaped["Allow"] = allowed
    return shaped


class ApiGuardMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        path = request.path
        if not path.startswith(API_PREFIXES) or path.startswith(UNLIMITED):
            return self.get_response(request)
        rejected = _too_large(request)
        if rejected is None:
            rejected = _nul_text(request)
        if rejected is not None:
            return rejected
        verdict = rate_limit_check(request)
        if verdict is not None and not verdict.allowed:
            return _rate_headers(_over_limit(verdict), verdict)
        response = _as_api_error(request, self._idempotent(request))
        return _rate_headers(response, verdict) if verdict is not None else response

    def _idempotent(self, request: HttpRequest) -> HttpResponse:
        key = request.headers.get("Idempotency-Key")
        if request.method != "POST" or key is None:
            return self.get_response(request)
        if not 0 < len(key) <= MAX_KEY_LENGTH or not key.isprintable():
            return error_response(
                400,
                f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable characters.",
                param="Idempotency-Key",
                code="invalid_idempotency_key",
            )
        try:
            caller = authenticate(request)
        except ApiError:
            return self.get_response(request)  # the view answers with the 401
        fingerprint = request_fingerprint(request)
        row, first = idempotent_request_begin(
            api_key=caller.key, key=key, request=request, fingerprint=fingerprint
        )
        if not first:
            return self._repeat(row, fingerprint)
        try:
            response = self.get_response(request)
        except BaseException:
            idempotent_request_abandon(row=row)
            raise
        idempotent_request_finish(row=row, response=response)
        return response

    @staticmethod
    def _repeat(row: IdempotentRequest, fingerprint: str) -> HttpResponse:
        if row.fingerprint != fingerprint:
            response = error_response(
                409,
                "This Idempotency-Key was already used with a different request; "
                "use a new key for a new request.",
                param="Idempotency-Key",
                code="idempotency_key_reused",
            )
            response["x-should-retry"] = "false"  # the same request can never succeed
            return response
        if row.status_code is None:
            return error_response(
                409,
                "A request with this Idempotency-Key is still being answered; retry shortly.",
                param="Idempotency-Key",
                code="idempotency_request_in_progress",
            )
        return replay(row)
