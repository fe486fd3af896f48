"""Every package the code imports is declared in pyproject.toml (issue 22: images that run).

Two checks, both stdlib-only (the second runs inside a venv that has nothing else):

  static   reads every import of every module (the AST, so function-level and conditional
           imports count too), maps each top-level name to the distribution that installs it
           (importlib.metadata.packages_distributions() of the venv it runs in; the standard
           library and the repo's own packages are left out) and checks that distribution is
           declared for that part of the code. An import in the `except ImportError:` branch
           of a try is a fallback and is not required; an optional extra (demo-models) may
           only be imported inside a function, so every module still imports without it.
  venv     builds a clean venv under a temporary folder from the declared production set
           only (torch==2.13.0 first, then `pip install -e .[web]`: no dev extra) and, with
           that venv's python, runs `imports`.
  imports  imports every module of finetune_core, webapp and workers, with Django set up,
           plus what the configuration loads by name (middleware, the production database,
           broker and storage backends, gunicorn); fails naming each module that does not.

    python scripts/check_deps.py static                          # the repo (make test runs it)
    python scripts/check_deps.py static --part workers FILE...   # given files as one part
    python scripts/check_deps.py venv [--keep DIR]               # make check-deps
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.metadata
import os
import re
import subprocess
import sys
import tempfile
import time
import tomllib
import traceback
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# What each part of the code may import: "" is [project] dependencies, the rest are extras.
# The engine runs without Django; the web and the workers run from one install (.[web]);
# tests, benchmarks and scripts run in the development venv.
PARTS: dict[str, tuple[str, ...]] = {
    "finetune_core": ("",),
    "webapp": ("", "web"),
    "workers": ("", "web"),
    "tests": ("", "web", "dev", "demo-models"),
    "benchmarks": ("", "web", "dev", "demo-models"),
    "scripts": ("", "web", "dev"),
    # The web image's gunicorn settings and healthcheck: that image has the web extra only.
    "docker": ("web",),
}
# Extras a part may use only lazily (inside a function, with a clear error when absent).
LAZY_EXTRAS: dict[str, tuple[str, ...]] = {"finetune_core": ("demo-models",)}
# Files run by another interpreter environment, and the top-level packages that environment
# gives them: vLLM's loader source, unpacked from its wheel by scripts/vllm_loader.py (not
# installable here: its pins would replace torch), is on the probe's subprocess path only.
SEPARATE_ENVIRONMENTS: dict[str, frozenset[str]] = {
    "tests/core/vllm_adapter_probe.py": frozenset({"vllm"}),
}
# The packages an image runs: what `imports` imports, in the clean production venv.
PRODUCTION_PACKAGES = ("finetune_core", "webapp", "workers")
# Loaded by name from settings, the environment or the command line, never by an import
# statement: the production database, broker and storage backends, middleware, gunicorn.
CONFIG_IMPORTS: dict[str, tuple[str, ...]] = {
    "webapp": (
        "psycopg",
        "redis",
        "kombu.transport.redis",
        "kombu.transport.sqlalchemy",
        "sqlalchemy",
        "storages.backends.s3",
        "whitenoise.middleware",
        "gunicorn.app.wsgiapp",
    ),
}
TORCH_PIN = "torch==2.13.0"  # the CPU/CUDA-neutral pin (see requirements/production.lock)


def normalize(name: str) -> str:
    """A distribution's name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    """The distribution a requirement string names ("django-storages[s3]>=1.14" -> ...)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if not match:
        raise ValueError(f"cannot read a distribution name from {requirement!r}")
    return normalize(match.group(1))


def declared(pyproject: Path = ROOT / "pyproject.toml") -> dict[str, set[str]]:
    """Distribution names per extra ("" for [project] dependencies), normalized."""
    project = tomllib.loads(pyproject.read_text())["project"]
    groups = {"": project.get("dependencies", [])} | project.get("optional-dependencies", {})
    return {extra: {requirement_name(r) for r in reqs} for extra, reqs in groups.items()}


@cache
def _owners() -> dict[str, list[str]]:
    """Top-level import name -> the installed distributions that provide it."""
    return importlib.metadata.packages_distributions()


def first_party(root: Path = ROOT) -> set[str]:
    """Top-level names the repo itself provides (its packages and root modules)."""
    names = {p.parent.name for p in root.glob("*/__init__.py")}
    names |= {p.stem for p in root.glob("*.py")}
    return names | set(PARTS)


@dataclass(frozen=True)
class Import:
    path: Path
    line: int
    module: str  # the full dotted name as written
    lazy: bool  # inside a function (runs only when called)


@dataclass(frozen=True)
class Finding:
    path: Path
    line: int
    module: str
    distribution: str | None
    part: str
    reason: str

    def __str__(self) -> str:
        where = _shown(self.path)
        return f"{where}:{self.line}: {self.part} imports {self.module!r}: {self.reason}"


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    names = []
    if handler.type is None:
        return False
    for node in handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]:
        if isinstance(node, ast.Name):
            names.append(node.id)
        elif isinstance(node, ast.Attribute):
            names.append(node.attr)
    return bool({"ImportError", "ModuleNotFoundError"} & set(names))


class _Imports(ast.NodeVisitor):
    """Every absolute import of a module, with whether it runs only when a function does.

    Imports in an `except ImportError:` branch are fallbacks and are skipped; so are
    relative imports (first party). importlib.import_module("x") and __import__("x") with
    a literal name count as imports of x.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.found: list[Import] = []
        self._depth = 0

    def _add(self, node: ast.AST, module: str) -> None:
        self.found.append(Import(self.path, node.lineno, module, self._depth > 0))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(node, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level == 0 and node.module:
            self._add(node, node.module)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if (
            name in {"import_module", "__import__"}
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and not node.args[0].value.startswith(".")
        ):
            self._add(node, node.args[0].value)
        self.generic_visit(node)

    def _function(self, node: ast.AST) -> None:
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_Try(self, node: ast.Try) -> None:
        for child in [*node.body, *node.orelse, *node.finalbody]:
            self.visit(child)
        for handler in node.handlers:
            if not _catches_import_error(handler):
                self.visit(handler)

    visit_TryStar = visit_Try


def imports_of(path: Path) -> list[Import]:
    visitor = _Imports(path)
    visitor.visit(ast.parse(path.read_bytes(), filename=str(path)))
    return visitor.found


def _given(path: Path) -> frozenset[str]:
    """The packages a file's own environment provides (SEPARATE_ENVIRONMENTS)."""
    try:
        name = Path(path).resolve().relative_to(ROOT).as_posix()
    except ValueError:  # a file outside the repository (a test's fixture module)
        return frozenset()
    return SEPARATE_ENVIRONMENTS.get(name, frozenset())


def part_files(part: str, root: Path = ROOT) -> list[Path]:
    return sorted(p for p in (root / part).rglob("*.py") if "__pycache__" not in p.parts)


def check_files(
    files: list[Path],
    part: str,
    *,
    pyproject: Path = ROOT / "pyproject.toml",
    config_imports: tuple[str, ...] = (),
) -> list[Finding]:
    """What in `files`, read as code of `part`, imports a package not declared for it."""
    groups = declared(pyproject)
    allowed = set().union(*(groups.get(extra, set()) for extra in PARTS[part]))
    lazy_only = set().union(*(groups.get(e, set()) for e in LAZY_EXTRAS.get(part, ())))
    names = {extra or "base": extra for extra in PARTS[part]}
    allowed_text = " + ".join(names)
    ours = first_party()
    owners = _owners()
    found = [i for f in files for i in imports_of(Path(f))]
    found += [Import(pyproject, 0, m, False) for m in config_imports]
    findings = []
    for imp in found:
        top = imp.module.split(".")[0]
        if top in sys.stdlib_module_names or top in ours or top in _given(imp.path):
            continue
        dists = sorted({normalize(d) for d in owners.get(top, [])} - {"tunebook"})
        if not dists:
            reason = "no installed distribution provides it here: install it and declare it"
            findings.append(Finding(imp.path, imp.line, imp.module, None, part, reason))
            continue
        if allowed & set(dists):
            continue
        if lazy_only & set(dists) and imp.lazy:
            continue
        dist = dists[0]
        if lazy_only & set(dists):
            reason = (
                f"distribution {dist!r} is in an optional extra, which {part} may import only "
                "inside a function (so the module imports without it)"
            )
        else:
            reason = (
                f"distribution {dist!r} is not declared in pyproject.toml for {part} "
                f"({allowed_text}): add it to [project] dependencies or to an extra {part} uses"
            )
        findings.append(Finding(imp.path, imp.line, imp.module, dist, part, reason))
    return findings


def check_repo(root: Path = ROOT) -> list[Finding]:
    findings = []
    for part in PARTS:
        if (root / part).is_dir():
            findings += check_files(
                part_files(part, root), part, config_imports=CONFIG_IMPORTS.get(part, ())
            )
    return findings


# --- imports: run inside the clean venv --------------------------------------------------------


def module_names(package: str, root: Path = ROOT) -> list[str]:
    names = []
    for path in part_files(package, root):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__main__":  # running it is its import
            continue
        if parts[-1] == "__init__":
            parts.pop()
        names.append(".".join(parts))
    return names


def import_all(modules: list[str]) -> list[str]:
    """Import each module; one line per failure, naming what was missing."""
    failures = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            missing = f" (missing: {exc.name})" if exc.name else ""
            failures.append(f"{name}: ImportError: {exc}{missing}")
        except Exception as exc:  # noqa: BLE001 - any module that cannot import is reported
            last = traceback.format_exception(exc)[-1].strip()
            failures.append(f"{name}: {last}")
    return failures


def run_imports() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    scratch = Path(tempfile.mkdtemp(prefix="tunebook-imports-"))
    os.environ.setdefault("DATA_DIR", str(scratch / "data"))
    os.environ.setdefault("FINETUNE_CORE_CACHE", str(scratch / "cache"))
    os.environ.setdefault("SECRET_KEY", "check-deps-" + "x" * 40)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    modules = [m for p in PRODUCTION_PACKAGES for m in module_names(p)]
    modules += [m for ms in CONFIG_IMPORTS.values() for m in ms]
    failures = import_all(modules)
    try:
        from django.core.wsgi import get_wsgi_application

        get_wsgi_application()  # loads every MIDDLEWARE class by name
    except Exception as exc:  # noqa: BLE001
        failures.append(f"webapp.wsgi application: {type(exc).__name__}: {exc}")
    for line in failures:
        print(f"check-deps: {line}", file=sys.stderr)
    print(f"check-deps: imported {len(modules) - len(failures)} of {len(modules)} modules")
    return 1 if failures else 0


# --- venv: build the clean production venv ---------------------------------------------------


def build_and_check(keep: Path | None) -> int:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tunebook-check-deps-") as tmp:
        venv = keep or Path(tmp) / "venv"
        python = venv / "bin" / "python"
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "install", "-q"]
        # torch first: a CPU machine gets its CPU build, never a multi-GB CUDA one.
        subprocess.run([*pip, TORCH_PIN], check=True)
        subprocess.run([*pip, "-e", f"{ROOT}[web]"], check=True)
        built = time.monotonic() - started
        rc = subprocess.run([str(python), str(Path(__file__).resolve()), "imports"], cwd=tmp)
    print(
        f"check-deps: venv built in {built:.0f} s, whole check {time.monotonic() - started:.0f} s"
    )
    return rc.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    static = sub.add_parser("static", help="the import statements against pyproject.toml")
    static.add_argument("--part", choices=sorted(PARTS), help="read FILES as this part's code")
    static.add_argument("files", nargs="*", type=Path)
    venv = sub.add_parser("venv", help="a clean production venv imports every module")
    venv.add_argument("--keep", type=Path, help="build (or reuse) the venv here")
    sub.add_parser("imports", help="import every module here (run inside the clean venv)")
    args = parser.parse_args(argv)
    if args.command == "imports":
        return run_imports()
    if args.command == "venv":
        return build_and_check(args.keep)
    if args.files:
        if not args.part:
            parser.error("give --part with FILES")
        findings = check_files(args.files, args.part)
    else:
        findings = check_repo()
    for finding in findings:
        print(finding, file=sys.stderr)
    if not findings:
        print("check-deps: every import is declared in pyproject.toml")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
