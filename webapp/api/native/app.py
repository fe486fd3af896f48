"""The native API: one NinjaAPI, Bearer keys, OpenAI-shaped errors, a router per area.

To add an area (transfers, evaluations, ...): write a module with
`router = Router(tags=["..."])` whose endpoints take `request.auth` (a Caller) and fetch
through webapp.teams.access, then add ONE line to ROUTERS below:

    ("/transfers", "webapp.transfers.api:router"),

Errors: raise ApiError / Http404 / PermissionDenied / ValidationError; the handlers
here render them as {"error": {message, type, param, code}} with the right status.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.utils.module_loading import import_string
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError
from ninja.errors import ValidationError as InputError
from ninja.security import HttpBearer

from webapp.api.auth import SAFE_METHODS, Caller, authenticate
from webapp.api.errors import ApiError, error_response, from_api_error, from_validation_error

# (URL prefix, "module:router"). One line per area; order is the docs' order.
ROUTERS: list[tuple[str, str]] = [
    ("/teams", "webapp.api.native.teams:router"),
    ("/projects", "webapp.api.native.projects:router"),
    ("/transfers", "webapp.transfers.api:router"),
    ("/cells", "webapp.api.native.cells:router"),
    ("/runs", "webapp.api.native.cells:runs_router"),
    ("/evaluations", "webapp.evaluations.api:router"),
    ("/exports", "webapp.exports.api:router"),
]


class KeyAuth(HttpBearer):
    """The same keys and checks as /v1/; read-only keys may only read."""

    def __call__(self, request: HttpRequest) -> Caller:
        caller = authenticate(request)
        if request.method not in SAFE_METHODS and caller.key.read_only:
            raise ApiError(
                403, "This API key is read-only; it cannot make changes.", code="read_only_key"
            )
        return caller

    def authenticate(self, request: HttpRequest, token: str) -> Caller | None:  # pragma: no cover
        return None  # __call__ does the work, with /v1/'s messages


IDEMPOTENCY_HEADER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Send the same key again to get the first response back instead of a "
    "second object (kept 24 h, per API key). A different request with a used key is a 409.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}


class TunebookAPI(NinjaAPI):
    # Building the schema walks every route (~0.1 s of CPU); routes are fixed once the
    # process has started, so each process builds it once per prefix.
    _schemas: dict[str, Any]

    def get_openapi_schema(self, **kwargs: Any) -> Any:
        """Ninja's schema, plus the Idempotency-Key header the API guard honours on POST."""
        cache = self.__dict__.setdefault("_schemas", {})
        key = repr(sorted(kwargs.items()))
        if key not in cache:
            cache[key] = self._build_schema(**kwargs)
        return cache[key]

    def _build_schema(self, **kwargs: Any) -> Any:
        schema = super().get_openapi_schema(**kwargs)
        for operations in schema["paths"].values():
            post = operations.get("post")
            if post is not None:
                post.setdefault("parameters", []).append(dict(IDEMPOTENCY_HEADER))
        return schema


api = TunebookAPI(
    title="Tunebook API",
    version="1",
    description=(
        "Teams, projects and notebooks of Tunebook. Send `Authorization: Bearer tb-...` "
        "(create a key on the team's API keys page). Errors are "
        '`{"error": {"message", "type", "param", "code"}}`.'
    ),
    auth=KeyAuth(),
    openapi_url="/schema/",
    docs_url="/docs/",
    urls_namespace="native_api",
)


@api.exception_handler(ApiError)
def _api_error(request: HttpRequest, exc: ApiError) -> HttpResponse:
    return from_api_error(exc)


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    message = str(exc) if str(exc) and str(exc) != "No such object" else "Not found."
    return error_response(404, message, code="not_found")


@api.exception_handler(PermissionDenied)
def _denied(request: HttpRequest, exc: PermissionDenied) -> HttpResponse:
    return error_response(403, str(exc) or "Not allowed.", code="permission_denied")


@api.exception_handler(ValidationError)
def _invalid(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    return from_validation_error(exc)


@api.exception_handler(InputError)
def _bad_input(request: HttpRequest, exc: InputError) -> HttpResponse:
    # pydantic's errors: report the first, naming the field as a dotted path.
    first = exc.errors[0] if exc.errors else {}
    loc = [str(part) for part in first.get("loc", ())]
    # ("body", "body", "name") -> "name": drop the source and the `body` argument's name.
    while loc and loc[0] in ("body", "query", "path", "page"):
        loc = loc[1:]
    param = ".".join(loc) or None
    message = f"{param}: {first.get('msg')}" if param else str(first.get("msg", "Bad input."))
    return error_response(400, message, param=param, code="invalid_value")


@api.exception_handler(AuthenticationError)
def _unauthenticated(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return error_response(401, "Invalid API key.", code="invalid_api_key")


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    return error_response(exc.status_code, str(exc))


for _prefix, _path in ROUTERS:
    api.add_router(_prefix, import_string(_path.replace(":", ".")))
