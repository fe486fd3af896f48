"""A cell's settings as people read them: each by its form label, references by what they name.

The config stores keys and database ids (`dataset_cell 5`, `keep_transferable True`); the
notebook shows "Dataset cell: cell 2 · Greetings" and "Keep transferable: Yes".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django import forms
from django.forms.utils import pretty_name

from webapp.datasets.models import Dataset
from webapp.projects.cell_kinds import REGISTRY, CellKind, cell_reference
from webapp.projects.models import Cell


def _label(field: forms.Field | None, key: str) -> str:
    label = str(field.label) if field is not None and field.label else pretty_name(key)
    return label.split(" (")[0]  # "Fine-tuned model cell (blank: ...)": the help is elsewhere


def _choice_text(field: forms.Field, value: Any) -> str | None:
    for key, text in getattr(field, "choices", None) or ():
        if str(key) == str(value):
            return str(text).split(" — ")[0]  # "Yes — keep 5 seeds ...": the gist
    return None


def _value_text(
    kind: CellKind, key: str, value: Any, cells: Mapping[int, Cell], project_id: int
) -> str:
    if key in kind.cell_refs or key in kind.team_refs:
        ref = cells.get(int(value)) if str(value).isdigit() else None
        return cell_reference(ref, here=project_id)
    if key in kind.dataset_refs:
        dataset = Dataset.objects.filter(pk=value).only("name").first()
        return dataset.name if dataset else "a deleted dataset"
    field = kind.form.base_fields.get(key)
    if isinstance(value, bool):
        return "Yes" if value else "No"
    if field is not None and (text := _choice_text(field, value)) is not None:
        return text
    return str(value)


def referenced_cells(cells: list[Cell]) -> dict[int, Cell]:
    """Every cell the given cells name, by id: their notebook's and other notebooks' ones."""
    known = {c.pk: c for c in cells}
    wanted: set[int] = set()
    for cell in cells:
        kind = REGISTRY.get(cell.kind)
        for key in (*kind.cell_refs, *kind.team_refs) if kind else ():
            if str(cell.config.get(key, "")).isdigit():
                wanted.add(int(cell.config[key]))
    missing = wanted - known.keys()
    known |= Cell.objects.select_related("project").in_bulk(missing) if missing else {}
    return known


def _in_effect(kind: CellKind, key: str, config: Mapping[str, Any]) -> bool:
    """False for a setting the cell ignores: one its form hides for the chosen options
    (show_when), or one that does nothing beside another setting (unused_when)."""
    shown = kind.form.show_when.get(key)
    if shown and shown[0] in config and str(config[shown[0]]) not in shown[1]:
        return False
    unused = kind.form.unused_when.get(key)
    other = config.get(unused[0]) if unused else None
    if unused and other is not None and other != "":
        return "*" not in unused[1] and str(other) not in unused[1]
    return True


def cell_settings(cell: Cell, cells: Mapping[int, Cell]) -> list[tuple[str, str]]:
    """(label, value) for each setting the cell has and uses, in the form's order."""
    kind = REGISTRY.get(cell.kind)
    if kind is None:
        return [(pretty_name(k), str(v)) for k, v in cell.config.items()]
    present = {
        k: v
        for k, v in cell.config.items()
        if v is not None and v != "" and _in_effect(kind, k, cell.config)
    }
    order = [k for k in kind.form.base_fields if k in present]
    order += [k for k in present if k not in order]
    return [
        (
            _label(kind.form.base_fields.get(k), k),
            _value_text(kind, k, present[k], cells, cell.project_id),
        )
        for k in order
    ]
