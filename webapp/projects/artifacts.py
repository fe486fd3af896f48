"""Where fine-tune runs keep their files (storage keys), and the streamed zip of a run's
adapter and manifest, read from whichever store holds them (webapp.core.storage)."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator

from finetune_core.contracts.layout import ADAPTER, MANIFEST, Manifest, parse_manifest
from webapp.core import storage

CHUNK = 64 * 1024


def run_key(job_id: int) -> str:
    """The storage key of the folder a job's run writes: the same on every host."""
    return storage.join("runs", str(job_id))


def artifact_files(run: str | None) -> list[tuple[str, str]]:
    """(storage key, name in the zip) for a run's final adapter folder and its manifest."""
    if not run:
        return []
    adapter = storage.join(run, ADAPTER)
    files = [(key, key[len(run) + 1 :]) for key in storage.keys_under(adapter)]
    if storage.exists(manifest := storage.join(run, MANIFEST)):
        files.append((manifest, MANIFEST))
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


def stream_zip(files: list[tuple[str, str]]) -> Iterator[bytes]:
    """Zip stored files on the fly: memory stays at one chunk, however large the adapter,
    and nothing is staged on the web host."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as archive:  # type: ignore[arg-type]
        for key, name in files:
            with archive.open(name, "w", force_zip64=True) as dst:
                for chunk in storage.read_chunks(key, size=CHUNK):
                    dst.write(chunk)
                    if data := sink.take():
                        yield data
            if data := sink.take():
                yield data
    if data := sink.take():
        yield data


def run_manifest(run: str | None) -> Manifest | None:
    """A run's manifest from the store, or None when it has none (yet)."""
    data = storage.read_bytes(storage.join(run, MANIFEST)) if run else None
    return parse_manifest(data) if data is not None else None


def manifest_trained_tokens(run: str | None) -> int | None:
    """Tokens a finished run trained on, from its manifest: tokens per row x rows seen.

    The worker stores it in the run's outputs when the run succeeds, so readers (the API's
    job lists) never open the manifest; None when there is no manifest (OpenAI's unknown).
    """
    manifest = run_manifest(run)
    return manifest.trained_tokens if manifest else None
