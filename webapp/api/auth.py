"""Bearer API keys and the decorator every /v1/ view goes through.

`api_view` checks the key before the body is read (uploads stream only once access is
known), turns ApiError / Http404 / PermissionDenied / ValidationError into OpenAI-shaped
errors, and exempts the view from CSRF: these views never look at cookies.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Callable
from datetime import timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import Http404, HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from webapp.api.errors import ApiError, error_response, from_api_error, from_validation_error
from webapp.api.models import ApiKey
from webapp.api.prepared import PreparedQuery
from webapp.teams.models import Membership, Team

KEY_START = "tb-"
PREFIX_LEN = 11  # "tb-" and 8 random characters
TOUCH_EVERY = timedelta(seconds=60)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _key_by_prefix(prefix: str) -> QuerySet[ApiKey]:
    # One query: the key, its team, its user and that user's role in the team now.
    role = Membership.objects.filter(team=OuterRef("team"), user=OuterRef("created_by"))
    return (
        ApiKey.objects.select_related("team", "created_by")
        .annotate(owner_role=Subquery(role.values("role")[:1]))
        .filter(prefix=prefix)
        .order_by()[:1]
    )


# Every API request looks its key up: compiled once, run (never cached) each time.
KEY_BY_PREFIX = PreparedQuery(_key_by_prefix, prefix=str)


def hash_key(full_key: str) -> str:
    return hashlib.sha256(full_key.encode()).hexdigest()


class Caller:
    """Who is calling: the key, its team, and the user whose membership it acts with."""

    def __init__(self, key: ApiKey) -> None:
        self.key = key
        self.team: Team = key.team
        self.user: AbstractBaseUser = key.created_by


def authenticate(request: HttpRequest) -> Caller:
    """The request's caller, or the ApiError that refuses it. Looked up once per request:
    the guard middleware (rate limit, Idempotency-Key) and the view share the answer."""
    known = getattr(request, "_api_caller", None)
    if known is None:
        try:
            known = _authenticate(request)
        except ApiError as exc:
            known = exc
        request._api_caller = known  # type: ignore[attr-defined]
    if isinstance(known, ApiError):
        raise known
    return known


def _authenticate(request: HttpRequest) -> Caller:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ApiError(
            401,
            "You didn't provide an API key. Send it as 'Authorization: Bearer tb-...'.",
            code="missing_api_key",
        )
    key = None
    if token.startswith(KEY_START) and len(token) > PREFIX_LEN:
        found = KEY_BY_PREFIX.run(prefix=token[:PREFIX_LEN])
        key = found[0] if found else None
    # Compare digests in constant time; unknown prefixes cost the same hash.
    expected = key.hashed_secret if key is not None else "0" * 64
    if not hmac.compare_digest(hash_key(token), expected) or key is None:
        raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")
    if key.revoked_at is not None:
        raise ApiError(401, "This API key has been revoked.", code="invalid_api_key")
    if key.owner_role is None or not key.created_by.is_active:  # type: ignore[attr-defined]
        raise ApiError(401, "This API key's owner left the team.", code="invalid_api_key")
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at >= TOUCH_EVERY:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return Caller(key)


ApiHandler = Callable[..., HttpResponse]


def api_view(
    methods: dict[str, ApiHandler], *, read_only_ok: frozenset[str] = SAFE_METHODS
) -> Callable[..., HttpResponse]:
    """One URL, one handler per HTTP method; each handler is called as f(request, caller, ...)."""

    @csrf_exempt
    def view(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        handler = methods.get(request.method or "")
        if handler is None:
            allowed = ", ".join(methods)
            response = error_response(
                405,
                f"{request.method} is not allowed here (allowed: {allowed}).",
                code="method_not_allowed",
            )
            response["Allow"] = allowed
            return response
        try:
            caller = authenticate(request)
            if request.method not in read_only_ok | SAFE_METHODS and caller.key.read_only:
                raise ApiError(
                    403,
                    "This API key is read-only; it cannot make changes.",
                    code="read_only_key",
                )
            return handler(request, caller, *args, **kwargs)
        except ApiError as exc:
            return from_api_error(exc)
        except Http404 as exc:
            message = str(exc) if str(exc) and str(exc) != "No such object" else "Not found."
            return error_response(404, message, code="not_found")
        except PermissionDenied as exc:
            return error_response(403, str(exc) or "Not allowed.", code="permission_denied")
        except ValidationError as exc:
            return from_validation_error(exc)

    functools.update_wrapper(view, next(iter(methods.values())))
    return view
