"""JSON request bodies, checked field by field with OpenAI-style `param` errors."""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest

from webapp.api.errors import ApiError


def json_body(request: HttpRequest) -> dict[str, Any]:
    try:
        data = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "The request body is not valid JSON.", code="invalid_json") from None
    except RecursionError:
        raise ApiError(
            400, "The request body is nested too deeply to be read.", code="invalid_json"
        ) from None
    if not isinstance(data, dict):
        raise ApiError(400, "The request body must be a JSON object.", code="invalid_json")
    return data


def field(
    data: dict[str, Any],
    name: str,
    kind: type | tuple[type, ...],
    *,
    required: bool = False,
    default: Any = None,
    param: str | None = None,
) -> Any:
    value = data.get(name)
    if value is None:
        if required:
            raise ApiError(
                400,
                f"Missing required parameter: '{param or name}'.",
                param=param or name,
                code="missing_required_parameter",
            )
        return default
    # bool is an int in Python; JSON true is never a number here.
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _tuple(kind)):
        raise ApiError(
            400, f"Invalid type for '{param or name}'.", param=param or name, code="invalid_type"
        )
    return value


def _tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)
