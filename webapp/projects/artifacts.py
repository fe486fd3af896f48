"""Where fine-tune runs write, and the streamed zip of a run's adapter and manifest."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings

CHUNK = 64 * 1024


def run_output_dir(job_id: int) -> Path:
    return Path(settings.DATA_DIR) / "runs" / str(job_id)


def artifact_files(output_dir: Path) -> list[tuple[Path, str]]:
    """(file, name in the zip) for the final adapter folder and the manifest."""
    files: list[tuple[Path, str]] = []
    adapter = output_dir / "adapter"
    if adapter.is_dir():
        files += [(p, f"adapter/{p.name}") for p in sorted(adapter.iterdir()) if p.is_file()]
    manifest = output_dir / "manifest.json"
    if manifest.is_file():
        files.append((manifest, "manifest.json"))
    return files


class _Sink:
    """A write-only, unseekable stream whose bytes are collected and handed out in pieces."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.offset = 0

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        self.offset += len(data)
        return len(data)

    def tell(self) -> int:
        return self.offset

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data, self.parts = b"".join(self.parts), []
        return data


def stream_zip(files: list[tuple[Path, str]]) -> Iterator[bytes]:
    """Zip the files on the fly: memory stays at one chunk, however large the adapter."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as archive:  # type: ignore[arg-type]
        for path, name in files:
            with open(path, "rb") as src, archive.open(name, "w", force_zip64=True) as dst:
                while chunk := src.read(CHUNK):
                    dst.write(chunk)
                    if data := sink.take():
                        yield data
            if data := sink.take():
                yield data
    if data := sink.take():
        yield data


def manifest_trained_tokens(output_dir: str | Path | None) -> int | None:
    """Tokens a finished run trained on, from its manifest: tokens per row x rows seen.

    The worker stores it in the run's outputs when the run succeeds, so readers (the API's
    job lists) never open the manifest; None when there is no manifest (OpenAI's unknown).
    """
    if not output_dir:
        return None
    try:
        manifest = json.loads((Path(output_dir) / "manifest.json").read_text())
        data, hyper = manifest["data"], manifest["hyperparameters"]
        rows_seen = manifest["metrics"]["steps"] * hyper["batch_size"] * hyper["grad_accum"]
        per_row = data["train_tokens"] / max(1, data["n_train_rows"])
        return round(per_row * rows_seen)
    except (OSError, TypeError, ValueError, KeyError):
        return None
