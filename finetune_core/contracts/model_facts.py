"""What a model says about itself, read with the standard library alone.

The web registers base models (webapp.ops.base_models) without torch, so the facts it
stores (architecture, parameter count, context length, chat template) come from files,
not from loading: a Hugging Face folder's config.json, tokenizer files and safetensors
headers, a GGUF file's header, or a hub id's snapshot in this host's Hugging Face cache.
Whatever cannot be read raises ModelUnreadable naming the file and what to do.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

from finetune_core.errors import ModelUnreadable

SourceKind = Literal["local", "gguf", "hub"]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")
GGUF_MAGIC = b"GGUF"
# Bounds on a GGUF header, so a hostile or corrupt file cannot make us allocate wildly.
MAX_GGUF_STRING = 64 * 2**20
MAX_GGUF_COUNT = 10_000_000


@dataclass(frozen=True)
class ModelFacts:
    kind: SourceKind
    source: str  # the folder, the .gguf file, or the hub id
    model_type: str
    architecture: str
    parameters: int
    context_length: int
    chat_template: str  # the tokenizer's own; "" when it has none
    hub_id: str = ""
    # What training memory follows besides the weights (webapp's estimate): 0 if unknown.
    vocab_size: int = 0
    layers: int = 0
    hidden_size: int = 0


def source_kind(source: str) -> SourceKind:
    """A .gguf file, a folder, or else an owner/name hub id."""
    path = Path(source).expanduser()
    if source.endswith(".gguf"):
        return "gguf"
    if path.exists() or source.startswith(("/", ".", "~")):
        return "local"
    if source.count("/") == 1:
        return "hub"
    raise ModelUnreadable(
        f"{source!r} is neither a model folder, a .gguf file nor an owner/name hub id"
    )


def read_facts(source: str) -> ModelFacts:
    kind = source_kind(source)
    if kind == "gguf":
        return gguf_facts(Path(source).expanduser())
    if kind == "hub":
        folder = hub_snapshot(source)
        return folder_facts(folder, kind="hub", source=source, hub_id=source)
    return folder_facts(Path(source).expanduser().resolve(), kind="local", source="")


# -- Hugging Face folders ------------------------------------------------------------------


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelUnreadable(f"{path} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelUnreadable(f"{path} cannot be read as JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ModelUnreadable(f"{path} holds {type(data).__name__}, not a JSON object")
    return data


def folder_facts(folder: Path, *, kind: SourceKind, source: str, hub_id: str = "") -> ModelFacts:
    if not folder.is_dir():
        raise ModelUnreadable(f"{folder} is not a folder on this host")
    config = _json(folder / "config.json")
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise ModelUnreadable(f"{folder / 'config.json'} names no model_type")
    if not any((folder / name).exists() for name in TOKENIZER_FILES):
        raise ModelUnreadable(
            f"{folder} has no tokenizer ({' or '.join(TOKENIZER_FILES)}): save the tokenizer "
            "beside the weights (tokenizer.save_pretrained)"
        )
    # Text models nest their sizes under text_config in multimodal configs (Gemma 3).
    sizes = {**config, **(config.get("text_config") or {})}
    context = _first_int(sizes, CONTEXT_KEYS)
    architectures = config.get("architectures") or [model_type]
    tokenizer = (folder / "tokenizer_config.json").exists() and _json(
        folder / "tokenizer_config.json"
    )
    template = (tokenizer or {}).get("chat_template") or ""
    if not template and (folder / "chat_template.jinja").exists():
        template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
    return ModelFacts(
        kind=kind,
        source=source or str(folder),
        model_type=model_type,
        architecture=str(architectures[0]),
        parameters=safetensors_parameters(folder),
        context_length=context,
        chat_template=template if isinstance(template, str) else "",
        hub_id=hub_id,
        vocab_size=_first_int(sizes, ("vocab_size",)),
        layers=_first_int(sizes, ("num_hidden_layers", "n_layer", "num_layers")),
        hidden_size=_first_int(sizes, ("hidden_size", "n_embd", "d_model")),
    )


def _first_int(sizes: dict[str, Any], keys: tuple[str, ...]) -> int:
    return next((int(sizes[k]) for k in keys if isinstance(sizes.get(k), int)), 0)


def safetensors_parameters(folder: Path) -> int:
    """The parameter count from the safetensors headers (8-byte length, then JSON)."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ModelUnreadable(
            f"{folder} holds no .safetensors weights (save with safe_serialization=True)"
        )
    total = 0
    for file in files:
        with file.open("rb") as f:
            head = f.read(8)
            (length,) = struct.unpack("<Q", head) if len(head) == 8 else (0,)
            if not 2 <= length <= min(100 * 2**20, file.stat().st_size):
                raise ModelUnreadable(f"{file} is not a safetensors file (bad header length)")
            try:
                header = json.loads(f.read(length))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ModelUnreadable(f"{file} has a corrupt safetensors header: {exc}") from None
        for name, tensor in header.items():
            if name != "__metadata__":
                total += _product(tensor.get("shape", []) if isinstance(tensor, dict) else [])
    return total


def _product(shape: list[Any]) -> int:
    out = 1
    for size in shape:
        out *= int(size)
    return out


def hub_cache() -> Path:
    """The Hugging Face hub cache as huggingface_hub finds it (HF_HUB_CACHE, HF_HOME)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface"
    return Path(home) / "hub"


def hub_snapshot(hub_id: str) -> Path:
    """The snapshot of `hub_id`'s main revision in this host's cache (no network)."""
    repo = hub_cache() / f"models--{hub_id.replace('/', '--')}"
    ref = repo / "refs" / "main"
    if not ref.exists():
        raise ModelUnreadable(
            f"{hub_id} is not in this host's Hugging Face cache ({hub_cache()}): download it "
            f"first (huggingface-cli download {hub_id}) or register its local folder"
        )
    return repo / "snapshots" / ref.read_text().strip()


# -- GGUF ----------------------------------------------------------------------------------

# GGUF metadata value types: 0-7 and 10-12 are scalars, 8 a string, 9 an array.
_SCALARS = {
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "?",
    10: "Q",
    11: "q",
    12: "d",
}


class _Reader:
    def __init__(self, f: BinaryIO, path: Path) -> None:
        self.f, self.path = f, path

    def take(self, fmt: str) -> Any:
        size = struct.calcsize("<" + fmt)
        raw = self.f.read(size)
        if len(raw) != size:
            raise ModelUnreadable(f"{self.path} ends inside its GGUF header (truncated file?)")
        return struct.unpack("<" + fmt, raw)[0]

    def count(self) -> int:
        n = self.take("Q")
        if n > MAX_GGUF_COUNT:
            raise ModelUnreadable(f"{self.path}: a GGUF header count of {n} is not plausible")
        return n

    def string(self) -> str:
        n = self.take("Q")
        if n > MAX_GGUF_STRING:
            raise ModelUnreadable(f"{self.path}: a GGUF string of {n} bytes is not plausible")
        raw = self.f.read(n)
        if len(raw) != n:
            raise ModelUnreadable(f"{self.path} ends inside its GGUF header (truncated file?)")
        return raw.decode("utf-8", errors="replace")

    def value(self, kind: int) -> Any:
        if kind in _SCALARS:
            return self.take(_SCALARS[kind])
        if kind == 8:
            return self.string()
        if kind == 9:
            item, n = self.take("I"), self.count()
            values = [self.value(item) for _ in range(n)]
            return values if item != 8 or n < 64 else len(values)  # vocabularies: a count
        raise ModelUnreadable(f"{self.path}: unknown GGUF value type {kind}")


def gguf_header(path: Path) -> tuple[dict[str, Any], int]:
    """The metadata (long string arrays replaced by their length) and parameter count."""
    try:
        f = path.open("rb")
    except OSError as exc:
        raise ModelUnreadable(f"{path} cannot be opened: {exc.strerror}") from None
    with f:
        r = _Reader(f, path)
        if f.read(4) != GGUF_MAGIC:
            raise ModelUnreadable(f"{path} is not a GGUF file (no GGUF magic at its start)")
        version = r.take("I")
        if version not in (2, 3):
            raise ModelUnreadable(f"{path} is GGUF version {version}; versions 2 and 3 are read")
        n_tensors, n_meta = r.count(), r.count()
        try:
            meta = {r.string(): r.value(r.take("I")) for _ in range(n_meta)}
        except RecursionError:  # arrays nested thousands deep: no model writes that
            raise ModelUnreadable(f"{path}: GGUF arrays nested too deep") from None
        params = 0
        for _ in range(n_tensors):
            r.string()
            dims = [r.take("Q") for _ in range(r.take("I"))]
            r.take("I"), r.take("Q")  # type and offset
            params += _product(dims)
    return meta, params


def gguf_facts(path: Path) -> ModelFacts:
    if not path.is_file():
        raise ModelUnreadable(f"{path} is not a file on this host")
    meta, params = gguf_header(path)
    arch = meta.get("general.architecture")
    if not isinstance(arch, str):
        raise ModelUnreadable(f"{path} names no general.architecture in its GGUF metadata")
    template = meta.get("tokenizer.chat_template")
    return ModelFacts(
        kind="gguf",
        source=str(path.resolve()),
        model_type=arch,
        architecture=arch,
        parameters=params,
        context_length=int(meta.get(f"{arch}.context_length") or 0),
        chat_template=template if isinstance(template, str) else "",
        vocab_size=_gguf_int(meta, f"{arch}.vocab_size", "tokenizer.ggml.tokens"),
        layers=_gguf_int(meta, f"{arch}.block_count"),
        hidden_size=_gguf_int(meta, f"{arch}.embedding_length"),
    )


def _gguf_int(meta: dict[str, Any], *keys: str) -> int:
    """The first key that holds a number (a long string array reads as its length)."""
    return next((int(meta[k]) for k in keys if isinstance(meta.get(k), int)), 0)
