"""Querysets compiled to SQL once, then run with new values: the hot reads of /v1/.

Why: on the API's hot paths (the key lookup, the job and model lists) Django spends
~0.5-1 ms of CPU building and compiling each queryset (joins, select_related columns,
ordering) against ~0.02 ms for the round trip to PostgreSQL. The SQL of a given shape
never changes, so it is compiled once per thread (a compiler is tied to its thread's
connection) with placeholder values, and each call only swaps in the real values.

Rows still become model instances the way QuerySet does it (converters, from_db,
select_related populators, annotations), so callers get the same objects as before,
and every call still runs its query: nothing is cached but the SQL text.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from django.db import connections
from django.db.models import Model, QuerySet
from django.db.models.query import ModelIterable, get_related_populators

M = TypeVar("M", bound=Model)
# Placeholder values no real row uses, found again in the compiled parameters.
_INT_MARK = 7_301_000_000_000_000
_STR_MARK = "\x00tb-prepared-"


def mark(name: str, kind: type) -> Any:
    """The placeholder that stands for `name` while the queryset is compiled."""
    number = sum(ord(c) * 31**i for i, c in enumerate(name)) % 1_000_000
    return _INT_MARK + number if kind is int else f"{_STR_MARK}{name}"


class _Compiled:
    def __init__(self, qs: QuerySet[Any], marks: dict[str, Any]) -> None:
        if qs._iterable_class is not ModelIterable or qs._prefetch_related_lookups:
            raise TypeError("PreparedQuery takes plain model querysets (no values(), prefetch)")
        self.db = qs.db
        self.connection = connections[self.db]
        self.compiler = qs.query.get_compiler(using=self.db)
        self.sql, params = self.compiler.as_sql()  # also fills select and klass_info
        self.params = list(params)
        self.slots: dict[str, list[int]] = {}
        for name, value in marks.items():
            found = [i for i, p in enumerate(self.params) if p == value]
            if not found:
                raise ValueError(f"{name!r} does not reach the compiled query")
            self.slots[name] = found
        klass_info, select = self.compiler.klass_info, self.compiler.select
        self.model: type[Model] = klass_info["model"]
        fields = klass_info["select_fields"]
        self.start, self.end = fields[0], fields[-1] + 1
        self.init_list = [f[0].target.attname for f in select[self.start : self.end]]
        self.populators = get_related_populators(klass_info, select, self.db)
        self.annotations = dict(self.compiler.annotation_col_map or {})
        # What results_iter() would look up on every call (JSON decoding, timezones, ...).
        columns = [col[0] for col in select[: self.compiler.col_count]]
        self.converters = self.compiler.get_converters(columns)
        if self.compiler.has_composite_fields(columns):
            raise TypeError("PreparedQuery does not handle composite primary keys")

    def run(self, values: dict[str, Any]) -> list[Any]:
        params = list(self.params)
        for name, slots in self.slots.items():
            for i in slots:
                params[i] = values[name]
        with self.connection.cursor() as cursor:
            cursor.execute(self.sql, params)
            rows = cursor.fetchall()
        if self.compiler.has_extra_select:
            rows = [r[: self.compiler.col_count] for r in rows]
        if self.converters:
            rows = self.compiler.apply_converters(rows, self.converters)
        objects = []
        for row in rows:
            obj = self.model.from_db(self.db, self.init_list, row[self.start : self.end])
            for populator in self.populators:
                populator.populate(row, obj)
            for attr, pos in self.annotations.items():
                setattr(obj, attr, row[pos])
            objects.append(obj)
        return objects


class PreparedQuery(Generic[M]):
    """`build(**placeholders)` returns the queryset; `run(**values)` its rows, as a list.

    Each keyword of `params` names a value and its type (int or str); `build` must use
    each one in a filter, never in Python logic, since it only ever sees placeholders.
    """

    def __init__(self, build: Callable[..., QuerySet[M]], **params: type) -> None:
        self.build = build
        self.marks = {name: mark(name, kind) for name, kind in params.items()}
        self._local = threading.local()

    def run(self, **values: Any) -> list[M]:
        if set(values) != set(self.marks):
            raise TypeError(f"expected {sorted(self.marks)}, got {sorted(values)}")
        compiled: _Compiled | None = getattr(self._local, "compiled", None)
        if compiled is None or compiled.connection is not connections[compiled.db]:
            compiled = _Compiled(self.build(**self.marks), self.marks)
            self._local.compiled = compiled
        return compiled.run(values)
