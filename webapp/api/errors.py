"""OpenAI-shaped errors: {"error": {"message", "type", "param", "code"}} with the right status."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.http import JsonResponse

from webapp.core.limits import LimitExceeded

TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}
# The SDK retries 408/409/429/5xx unless told otherwise; these cannot get better by retrying.
RETRYABLE = frozenset({408, 409, 429})


class ApiError(Exception):
    def __init__(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def error_body(
    message: str, *, status: int, param: str | None = None, code: str | None = None
) -> dict[str, dict[str, str | None]]:
    kind = TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(
    status: int, message: str, *, param: str | None = None, code: str | None = None
) -> JsonResponse:
    response = JsonResponse(
        error_body(message, status=status, param=param, code=code), status=status
    )
    if 400 <= status < 500 and status not in RETRYABLE:
        response["x-should-retry"] = "false"
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="tunebook"'
    return response


def from_api_error(exc: ApiError) -> JsonResponse:
    return error_response(exc.status, exc.message, param=exc.param, code=exc.code)


def from_validation_error(
    exc: ValidationError, *, params: dict[str, str] | None = None
) -> JsonResponse:
    """A service's ValidationError as a 400; its first field names the `param`. A team
    over a limit gets the limit's status (413, 429) and code."""
    params = params or {}
    if isinstance(exc, LimitExceeded):
        param = params.get(exc.field, exc.field) or None
        return error_response(exc.status, " ".join(exc.messages), param=param, code=exc.api_code)
    if hasattr(exc, "error_dict"):
        field, errors = next(iter(exc.error_dict.items()))
        message = " ".join(m for e in errors for m in e.messages)
        param = params.get(field, field if field != "__all__" else None)
        return error_response(400, message, param=param, code="invalid_value")
    return error_response(400, " ".join(exc.messages), code="invalid_value")
