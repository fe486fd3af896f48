"""Shared pieces for native routers: the caller, the error schema, list envelopes."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from django.db.models import Model, QuerySet
from django.http import HttpRequest
from ninja import Path, Schema
from pydantic import Field

from webapp.api.auth import Caller

T = TypeVar("T")
M = TypeVar("M", bound=Model)


class ErrorBody(Schema):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorOut(Schema):
    error: ErrorBody


# Declared on every endpoint, so the schema (and schemathesis) knows the error shape.
ERRORS: dict[int, type[Schema]] = {code: ErrorOut for code in (400, 401, 403, 404, 409, 413, 429)}


class ListOut(Schema, Generic[T]):
    object: str = "list"
    data: list[T]
    has_more: bool = False


def caller_of(request: HttpRequest) -> Caller:
    """The authenticated key (set by KeyAuth) for this request."""
    caller = request.auth  # type: ignore[attr-defined]
    assert isinstance(caller, Caller)
    return caller


MAX_LIMIT = 100
# Ids beyond this are refused by the schema, before any database sees them.
MAX_ID = 2**53


def paginate(qs: QuerySet[M], *, limit: int, after: int | None) -> tuple[list[M], bool]:
    """Newest first by id; `after` is the last id of the previous page."""
    qs = qs.order_by("-pk")
    if after is not None:
        qs = qs.filter(pk__lt=after)
    rows = list(qs[: limit + 1])
    return rows[:limit], len(rows) > limit


class Page(Schema):
    limit: int = Field(20, ge=1, le=MAX_LIMIT)
    after: int | None = Field(None, ge=1, le=MAX_ID)


def id_path() -> Any:
    """A path id: a positive integer the database can hold."""
    return Path(..., ge=1, le=MAX_ID)
