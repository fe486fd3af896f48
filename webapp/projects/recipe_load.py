"""Recipe text (JSON or YAML) to plain JSON data, with every limit checked before anything
is built from it.

YAML anchors and aliases let a few hundred bytes name a structure of any size: 496 bytes of
nested aliases became a 122 MB string when the import serialised the cells. So a recipe may
use none; its depth, value count and text sizes are capped while YAML composes the
document, before any Python object exists; and what comes out must be JSON data (text
keys, finite numbers), which the API's already-parsed recipes are checked for too.
"""

from __future__ import annotations

import json
import math
from typing import Any

import yaml
from django.core.exceptions import ValidationError

MAX_RECIPE_BYTES = 1024 * 1024
MAX_DEPTH = 32
MAX_VALUES = 50_000
MAX_TEXT_CHARS = 100_000


def recipe_error(where: str, message: str) -> ValidationError:
    return ValidationError(f"{where}: {message}" if where else message)


class _Budget:
    """Counts values as a document is walked; refuses one past a cap, saying where it is."""

    def __init__(self) -> None:
        self.values = 0

    def spend(self, *, depth: int, chars: int, where: str) -> None:
        self.values += 1
        if depth > MAX_DEPTH:
            raise recipe_error(where, f"nested deeper than {MAX_DEPTH} levels.")
        if self.values > MAX_VALUES:
            raise recipe_error(where, f"a recipe holds at most {MAX_VALUES} values.")
        if chars > MAX_TEXT_CHARS:
            raise recipe_error(where, f"a text is at most {MAX_TEXT_CHARS} characters.")


def _line(mark: yaml.Mark | None) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""


class _RecipeLoader(yaml.SafeLoader):
    """SafeLoader that checks each node as it is composed, before construction."""

    # Dates stay text: a recipe is JSON data, and JSON has no date type.
    yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.budget = _Budget()
        self.depth = 0

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node:
        event = self.peek_event()
        where = _line(event.start_mark)
        if isinstance(event, yaml.AliasEvent) or event.anchor is not None:
            raise recipe_error(
                where, "anchors and aliases (& and *) are not allowed; write the value out."
            )
        chars = len(event.value) if isinstance(event, yaml.ScalarEvent) else 0
        self.depth += 1
        try:
            self.budget.spend(depth=self.depth, chars=chars, where=where)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _from_yaml(text: str) -> Any:
    try:
        return yaml.load(text, Loader=_RecipeLoader)  # a SafeLoader: no arbitrary objects
    except yaml.YAMLError as exc:
        where = _line(getattr(exc, "problem_mark", None))
        problem = getattr(exc, "problem", None) or exc
        raise recipe_error(where, f"not valid JSON or YAML ({problem}).") from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise recipe_error("", f"a value YAML cannot read ({exc}).") from None


def _from_json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise recipe_error(where, f"not valid JSON ({exc.msg}).") from None
    except RecursionError:
        raise recipe_error("", f"nested deeper than {MAX_DEPTH} levels.") from None
    except ValueError as exc:
        raise recipe_error("", f"a value JSON cannot read ({exc}).") from None


def recipe_load(text: str | bytes) -> Any:
    """JSON or YAML text, at most MAX_RECIPE_BYTES, to JSON data; each problem says where."""
    if isinstance(text, bytes):
        if len(text) > MAX_RECIPE_BYTES:
            raise recipe_error("", f"A recipe is at most {MAX_RECIPE_BYTES // 1024} KiB.")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise recipe_error("", f"The recipe is not UTF-8 text (byte {exc.start}).") from None
    if len(text.encode("utf-8", "surrogatepass")) > MAX_RECIPE_BYTES:
        raise recipe_error("", f"A recipe is at most {MAX_RECIPE_BYTES // 1024} KiB.")
    data = _from_json(text) if text.lstrip().startswith("{") else _from_yaml(text)
    recipe_data_check(data)
    return data


def _child(where: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{where}[{key + 1}]"
    return f"{where}.{key}" if where else key


def _chars(where: str, value: Any) -> int:
    """The text size a scalar counts for; refuses what JSON cannot hold."""
    if isinstance(value, str):
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise recipe_error(where, "text with an unpaired surrogate.") from None
        return len(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise recipe_error(where, "numbers must be finite.")
    if value is None or isinstance(value, bool | int | float):
        return 0
    raise recipe_error(where, f"a {type(value).__name__} is not JSON data; quote it as text.")


def recipe_data_check(data: Any) -> None:
    """Refuse data that is not plain JSON or is past a limit (walked without recursion)."""
    budget = _Budget()
    stack: list[tuple[Any, str, int]] = [(data, "", 1)]
    while stack:
        value, where, depth = stack.pop()
        if isinstance(value, dict):
            budget.spend(depth=depth, chars=0, where=where)
            for key, item in value.items():
                if not isinstance(key, str):
                    raise recipe_error(_child(where, str(key)), "keys must be text.")
                budget.spend(depth=depth + 1, chars=_chars(where, key), where=_child(where, key))
                stack.append((item, _child(where, key), depth + 1))
        elif isinstance(value, list):
            budget.spend(depth=depth, chars=0, where=where)
            stack.extend((item, _child(where, i), depth + 1) for i, item in enumerate(value))
        else:
            budget.spend(depth=depth, chars=_chars(where, value), where=where)
