"""Notebook recipes: a project as portable JSON or YAML, and back.

References are what make a notebook a notebook, so a recipe keeps them portable:
a reference to an earlier cell becomes {"cell": n} (its 1-based place in the recipe)
and a reference to a team dataset becomes {"dataset": "<name>"}. Everything else in a
cell's config is copied as is and validated again by the kind's form on import.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from webapp.datasets.models import Dataset
from webapp.projects.cell_kinds import REGISTRY
from webapp.projects.models import Project
from webapp.projects.recipe_load import recipe_data_check, recipe_load
from webapp.projects.recipe_load import recipe_error as _fail

RECIPE_VERSION = 1
MAX_CELLS = 200
HEADER = (
    "# Tunebook notebook recipe. Re-create it from a team page (Import a recipe)\n"
    "# or with POST /api/projects/import.\n"
)


def recipe_from_project(*, project: Project) -> dict[str, Any]:
    cells = list(project.cells.order_by("position", "id"))
    place = {cell.pk: n for n, cell in enumerate(cells, start=1)}
    dataset_ids = {
        cell.config.get(key)
        for cell in cells
        if cell.kind in REGISTRY
        for key in REGISTRY[cell.kind].dataset_refs
    }
    names = dict(Dataset.objects.filter(pk__in=dataset_ids - {None}).values_list("pk", "name"))
    out = []
    for cell in cells:
        spec = REGISTRY.get(cell.kind)
        config = dict(cell.config)
        for key in spec.cell_refs if spec else ():
            if config.get(key) is not None:
                config[key] = {"cell": place.get(config[key])}
        for key in spec.dataset_refs if spec else ():
            if config.get(key) is not None:
                config[key] = {"dataset": names.get(config[key])}
        out.append({"kind": cell.kind, "title": cell.title, "config": config})
    return {
        "tunebook_recipe": RECIPE_VERSION,
        "name": project.name,
        "description": project.description,
        "cells": out,
    }


class _NoAliasDumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def recipe_dump(recipe: dict[str, Any], *, fmt: str) -> str:
    if fmt == "yaml":
        # Never anchors and aliases: the import refuses them.
        text = yaml.dump(recipe, Dumper=_NoAliasDumper, sort_keys=False, allow_unicode=True)
        return HEADER + text
    return json.dumps(recipe, indent=2, ensure_ascii=False) + "\n"


def recipe_parse(text: str | bytes) -> dict[str, Any]:
    """JSON or YAML text to a checked recipe dict; every problem names where it is."""
    return recipe_check(recipe_load(text))


def recipe_check(data: Any) -> dict[str, Any]:
    """Check parsed recipe data (from recipe_parse, or an API body) before any write."""
    recipe_data_check(data)  # plain JSON within the limits, before anything else reads it
    if not isinstance(data, dict):
        raise _fail("", "A recipe is a mapping with tunebook_recipe, name and cells.")
    if data.get("tunebook_recipe") != RECIPE_VERSION:
        raise _fail("tunebook_recipe", f"must be {RECIPE_VERSION} (this Tunebook's format).")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _fail("name", "give the notebook a name.")
    if not isinstance(data.get("description", ""), str):
        raise _fail("description", "must be text.")
    cells = data.get("cells")
    if not isinstance(cells, list):
        raise _fail("cells", "must be a list of cells.")
    if len(cells) > MAX_CELLS:
        raise _fail("cells", f"at most {MAX_CELLS} cells.")
    for n, cell in enumerate(cells, start=1):
        _check_cell(cell, n)
    return data


def _check_cell(cell: Any, n: int) -> None:
    where = f"cells[{n}]"
    if not isinstance(cell, dict):
        raise _fail(where, "must be a mapping with kind, title and config.")
    kind = cell.get("kind")
    if kind not in REGISTRY:
        known = ", ".join(REGISTRY)
        raise _fail(f"{where}.kind", f"unknown cell kind {kind!r} (known: {known}).")
    if not isinstance(cell.get("title", ""), str):
        raise _fail(f"{where}.title", "must be text.")
    config = cell.get("config", {})
    if not isinstance(config, dict):
        raise _fail(f"{where}.config", "must be a mapping.")
    spec = REGISTRY[kind]
    for key in spec.cell_refs:
        ref = config.get(key)
        if ref is None:
            continue
        target = ref.get("cell") if isinstance(ref, dict) else None
        if not isinstance(target, int) or isinstance(target, bool) or not 1 <= target < n:
            raise _fail(f"{where}.config.{key}", "must be {cell: k}, k an earlier cell's place.")
    for key in spec.dataset_refs:
        ref = config.get(key)
        if ref is None:
            continue
        if not isinstance(ref, dict) or not isinstance(ref.get("dataset"), str):
            raise _fail(f"{where}.config.{key}", 'must be {dataset: "<name in the team>"}.')
