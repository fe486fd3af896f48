"""Ids like `file-12` and OpenAI's cursor lists: {"object": "list", "data", "has_more"}."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from django.db.models import Model, QuerySet
from django.http import HttpRequest

from webapp.api.errors import ApiError

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
MAX_ID_DIGITS = 18  # any more may not fit a 64-bit primary key
M = TypeVar("M", bound=Model)


def id_number(text: str) -> int | None:
    """`12` -> 12; None for signs, non-ASCII digits (int() takes "٣", not "²") and numbers too
    long for a key, which int() would refuse past 4300 digits or the database past 2**63."""
    if text.isascii() and text.isdigit() and len(text) <= MAX_ID_DIGITS:
        return int(text)
    return None


def parse_ref(prefix: str, value: str, *, what: str, param: str | None = None) -> int:
    """`file-12` -> 12; anything else is a 404 naming the id (or a 400 for a body param)."""
    head, _, number = value.rpartition("-")
    pk = id_number(number)
    if f"{head}-" == prefix and pk is not None:
        return pk
    if param is not None:
        raise ApiError(400, f"Invalid {what} id: {value!r}.", param=param, code="invalid_value")
    raise ApiError(404, f"No such {what}: {value!r}.", code="not_found")


def parse_limit(request: HttpRequest) -> int:
    raw = request.GET.get("limit")
    if raw in (None, ""):
        return DEFAULT_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        raise ApiError(400, "limit must be an integer.", param="limit") from None
    if limit < 1:
        raise ApiError(400, "limit must be at least 1.", param="limit")
    return min(limit, MAX_LIMIT)


def listing(data: Sequence[dict[str, Any]], *, has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": list(data),
        "has_more": has_more,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


def page(
    qs: QuerySet[M],
    request: HttpRequest,
    *,
    prefix: str,
    what: str,
    render: Callable[[M], dict[str, Any]],
) -> dict[str, Any]:
    """Newest first; `after` is the id of the last item of the previous page."""
    qs = qs.order_by("-pk")
    after = request.GET.get("after")
    if after:
        qs = qs.filter(pk__lt=parse_ref(prefix, after, what=what, param="after"))
    limit = parse_limit(request)
    rows = list(qs[: limit + 1])
    return listing([render(r) for r in rows[:limit]], has_more=len(rows) > limit)


def page_list(items: Sequence[dict[str, Any]], request: HttpRequest) -> dict[str, Any]:
    """The same paging over an already rendered list (newest first); `after` is an id."""
    after = request.GET.get("after")
    if after:
        ids = [item["id"] for item in items]
        if after not in ids:
            raise ApiError(400, f"Unknown cursor {after!r}.", param="after")
        items = items[ids.index(after) + 1 :]
    limit = parse_limit(request)
    return listing(items[:limit], has_more=len(items) > limit)
