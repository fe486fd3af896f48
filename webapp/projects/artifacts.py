"""Where fine-tune runs write, and the streamed zip of a run's adapter and manifest."""

from __future__ import annotations

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
