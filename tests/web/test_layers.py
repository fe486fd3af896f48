"""The webapp's apps import only downward, in the layers ARCHITECTURE.md draws."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WEBAPP = ROOT / "webapp"


def layers() -> dict[str, int]:
    """App -> height, from the fenced block after the marker in ARCHITECTURE.md."""
    text = (ROOT / "ARCHITECTURE.md").read_text()
    block = re.search(r"test_layers\.py reads these lines -->\n```\n(.*?)```", text, re.S)
    assert block, "ARCHITECTURE.md lost its layers block"
    rows = [line.split() for line in block.group(1).strip().splitlines()]
    return {app: len(rows) - i for i, row in enumerate(rows) for app in row}


def imported_apps(path: Path) -> set[tuple[str, int]]:
    """(app, line) for every `webapp.<app>` this module imports, at any depth."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "webapp" and len(parts) > 1 and (WEBAPP / parts[1]).is_dir():
                found.add((parts[1], node.lineno))
    return found


def test_every_app_is_drawn_in_a_layer() -> None:
    apps = {p.parent.name for p in WEBAPP.glob("*/apps.py")}
    assert apps == set(layers()), "ARCHITECTURE.md's layers and webapp's apps differ"


def test_apps_import_only_apps_below_them() -> None:
    height = layers()
    wrong = []
    for path in sorted(WEBAPP.glob("*/**/*.py")):
        app = path.relative_to(WEBAPP).parts[0]
        if app not in height or "migrations" in path.parts:
            continue  # a migration names the apps its schema depends on, as Django requires
        for other, line in sorted(imported_apps(path)):
            if other != app and height.get(other, 0) >= height[app]:
                wrong.append(f"{path.relative_to(ROOT)}:{line}: {app} imports {other}")
    assert not wrong, "imports against ARCHITECTURE.md's layers:\n" + "\n".join(wrong)


def test_the_check_sees_a_wrong_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from webapp.projects.models import Cell\n")
    assert imported_apps(module) == {("projects", 2)}
