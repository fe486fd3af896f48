"""Facts about each built-in model for `models` listings, without converting anything."""

from __future__ import annotations

from typing import Any

from finetune_core.models.registry import BUILTIN, ModelSpec, is_cached, package_dir, read_marker


def _gguf_facts(spec: ModelSpec) -> dict[str, Any]:
    """Read architecture, context and parameter count from the GGUF header (memory-mapped)."""
    folder = package_dir(spec.source)
    path = folder / spec.gguf_file if folder else None
    if path is None or not path.exists():
        return {}
    from gguf import GGUFReader

    reader = GGUFReader(path)
    field = reader.fields.get("general.architecture")
    arch = bytes(field.parts[field.data[0]]).decode() if field else "?"
    ctx = reader.fields.get(f"{arch}.context_length")
    return {
        "architecture": arch,
        "context_length": int(ctx.parts[ctx.data[0]][0]) if ctx else None,
        "parameters": sum(int(t.n_elements) for t in reader.tensors),
    }


def describe(spec: ModelSpec) -> dict[str, Any]:
    cached = is_cached(spec)
    facts = read_marker(spec) if cached else {}
    if not facts and spec.kind == "gguf":
        facts = _gguf_facts(spec)
        if not facts:
            facts = {"note": f"package {spec.source} not installed"}
    return {
        "name": spec.name,
        "kind": spec.kind,
        "description": spec.description,
        "cached": cached,
        **facts,
    }


def describe_all() -> list[dict[str, Any]]:
    return [describe(spec) for spec in BUILTIN.values()]
