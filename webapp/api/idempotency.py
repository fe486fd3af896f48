"""Idempotency-Key on POST: the first response is stored and replayed to retries.

Reads and writes of IdempotentRequest rows (the services the guard middleware calls).
A retry with the same key and the same request gets the stored response; the same key
with a different request is a 409 that retrying cannot fix; a retry that arrives while
the first is still being answered is a 409 that may be retried, until the request time
limit says that first request died.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from webapp.api.models import ApiKey, IdempotentRequest

MAX_KEY_LENGTH = 255


def request_fingerprint(request: HttpRequest) -> str:
    """What makes two requests "the same": method, path, query and body.

    Multipart bodies carry a random boundary on every send, so they are compared by
    their length instead of their bytes (the SDK's boundaries are all the same length).
    """
    digest = hashlib.sha256()
    digest.update(
        f"{request.method} {request.path}?{request.META.get('QUERY_STRING', '')}".encode()
    )
    content_type = request.META.get("CONTENT_TYPE", "")
    if content_type.startswith("multipart/"):
        digest.update(f"multipart:{request.META.get('CONTENT_LENGTH', '')}".encode())
    else:
        digest.update(request.body)
    return digest.hexdigest()


def idempotent_request_purge_expired() -> int:
    """Forget answers older than the TTL, and requests still "in progress" after the request
    time limit: their process died (a crash, a killed worker) and will never finish them."""
    now = timezone.now()
    expired = Q(created_at__lt=now - timedelta(seconds=settings.API_IDEMPOTENCY_TTL_S))
    abandoned = Q(
        status_code__isnull=True,
        created_at__lt=now - timedelta(seconds=settings.API_REQUEST_TIME_LIMIT_S),
    )
    return IdempotentRequest.objects.filter(expired | abandoned).delete()[0]


def idempotent_request_begin(
    *, api_key: ApiKey, key: str, request: HttpRequest, fingerprint: str
) -> tuple[IdempotentRequest, bool]:
    """(row, True) when this request is the first with `key`, else (the earlier row, False)."""
    idempotent_request_purge_expired()
    try:
        with transaction.atomic():
            row = IdempotentRequest.objects.create(
                api_key=api_key,
                key=key,
                method=request.method or "",
                path=request.path[:500],
                fingerprint=fingerprint,
            )
        return row, True
    except IntegrityError:
        return IdempotentRequest.objects.get(api_key=api_key, key=key), False


def idempotent_request_finish(*, row: IdempotentRequest, response: HttpResponse) -> None:
    """Keep a successful response to replay. Errors are forgotten: nothing was created,
    so a corrected retry with the same key simply runs (a stream cannot be replayed)."""
    if response.streaming or response.status_code >= 400:
        IdempotentRequest.objects.filter(pk=row.pk).delete()
        return
    IdempotentRequest.objects.filter(pk=row.pk).update(
        status_code=response.status_code,
        content_type=response.get("Content-Type", ""),
        body=response.content,
    )


def idempotent_request_abandon(*, row: IdempotentRequest) -> None:
    IdempotentRequest.objects.filter(pk=row.pk).delete()


def replay(row: IdempotentRequest) -> HttpResponse:
    response = HttpResponse(bytes(row.body), status=row.status_code or 200)
    response["Content-Type"] = row.content_type or "application/json"
    response["Idempotent-Replayed"] = "true"
    return response
