"""A declared setting: one dataclass field with its type, default, bounds and help.

A config dataclass declares each field with `setting(...)`; its validator, the web form,
the API mapping and the worker's config building all read the same declaration.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any

# Where a setting is offered: the notebook's form, the APIs, or only the engine (CLI, YAML).
FORM = "form"
API = "api"
ENGINE = "engine"
EVERYWHERE = frozenset({FORM, API, ENGINE})


@dataclass(frozen=True)
class Setting:
    name: str
    kind: type
    default: Any
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    choice_labels: tuple[tuple[str, str], ...] = ()  # (choice, words for people), where useful
    surfaces: frozenset[str] = EVERYWHERE
    label: str = ""
    openai_name: str | None = None  # OpenAI's hyperparameter name, where it has one
    aliases: tuple[str, ...] = ()  # short names an API client may use

    @property
    def title(self) -> str:
        return self.label or self.name.replace("_", " ").capitalize()

    def problem(self, value: Any) -> str | None:
        """What is wrong with `value`, in words that say the allowed range; None if fine."""
        if value is None:
            return None if self.default is None else f"{self.name} is required"
        if self.choices and not isinstance(value, list):  # a list (of layers) is the engine's
            if value not in self.choices:
                *rest, last = self.choices
                allowed = f"{', '.join(rest)} or {last}" if rest else last
                return f"{self.name} must be {allowed}, got {value!r}"
            return None
        if self.kind in (int, float) and (isinstance(value, bool) or not _is_number(value)):
            return f"{self.name} must be a number, got {value!r}"
        low, high = self.minimum, self.maximum
        if low is not None and value < low:
            also = f" (and at most {high:g})" if high is not None else ""
            return f"{self.name} must be at least {low:g}{also}, got {value}"
        if high is not None and value > high:
            where = f"in [{low:g}, {high:g}]" if low is not None else f"at most {high:g}"
            return f"{self.name} must be {where}, got {value}"
        return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float)


def setting(
    default: Any,
    help: str,
    *,
    kind: type | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    choices: tuple[str, ...] = (),
    choice_labels: tuple[tuple[str, str], ...] = (),
    surfaces: frozenset[str] = EVERYWHERE,
    label: str = "",
    openai_name: str | None = None,
    aliases: tuple[str, ...] = (),
) -> Any:
    """A dataclass field carrying its Setting (the name is filled in by `settings_of`)."""
    spec = Setting(
        name="",
        kind=kind or type(default),
        default=default,
        help=help,
        minimum=minimum,
        maximum=maximum,
        choices=choices,
        choice_labels=choice_labels,
        surfaces=surfaces,
        label=label,
        openai_name=openai_name,
        aliases=aliases,
    )
    if isinstance(default, dict | list):
        return field(default_factory=lambda: type(default)(default), metadata={"setting": spec})
    return field(default=default, metadata={"setting": spec})


def settings_of(config_class: type, surface: str | None = None) -> tuple[Setting, ...]:
    """The declared settings of a config dataclass, in field order; only `surface`'s if given."""
    found = []
    for f in dataclasses.fields(config_class):
        spec = f.metadata.get("setting")
        if spec is not None and (surface is None or surface in spec.surfaces):
            found.append(dataclasses.replace(spec, name=f.name))
    return tuple(found)


def problems_of(config: Any) -> list[str]:
    """Every declared setting of a config instance that is out of its bounds."""
    found = (s.problem(getattr(config, s.name)) for s in settings_of(type(config)))
    return [p for p in found if p]


def scalar_settings(specs: tuple[Setting, ...], *, skip: tuple[str, ...] = ()) -> list[Setting]:
    """The settings a command line takes as `--flag value` (lists, maps and switches aside)."""
    return [s for s in specs if s.kind in (str, int, float) and s.name not in skip]


def add_flags(
    parser: argparse.ArgumentParser, specs: list[Setting], aliases: dict[str, str] | None = None
) -> None:
    """One `--flag` per setting, its help naming the choices and the default; a flag left
    out stays None, so the config's own default applies."""
    for spec in specs:
        choices = f" ({', '.join(spec.choices)})" if spec.choices else ""
        names = ["--" + spec.name.replace("_", "-")]
        if aliases and spec.name in aliases:
            names.append(aliases[spec.name])
        helptext = f"{spec.help}{choices} Default: {spec.default}.".replace("%", "%%")
        parser.add_argument(*names, dest=spec.name, type=spec.kind, help=helptext)


def given_flags(args: argparse.Namespace, specs: list[Setting]) -> dict[str, Any]:
    return {s.name: getattr(args, s.name) for s in specs if getattr(args, s.name) is not None}
