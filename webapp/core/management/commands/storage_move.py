"""`manage.py storage_move --from DATA_DIR`: a one-box install's files into object storage.

Run once, on the host that holds the old folder, with STORAGE_URL naming the bucket. Each
file keeps its key: uploads (the old MEDIA_ROOT, `--media`) go to the uploads store as
`datasets/...`, run folders (`DATA_DIR/runs/...`) to the artifacts store as `runs/...`,
which is what the rows name after migration `projects 0003`. Every file is then read back
from the bucket and its SHA-256 compared; the local copy is deleted only with `--delete`,
and only once it checked. Run it again at will: files already there and equal are skipped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.core.files.storage import FileSystemStorage, Storage
from django.core.management.base import BaseCommand, CommandError

from webapp.core import storage

MOVED = ("runs",)  # DATA_DIR's folders that hold what workers made


def local_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(storage.CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def stored_sha256(key: str, store: Storage) -> str | None:
    digest = hashlib.sha256()
    try:
        for chunk in storage.read_chunks(key, store=store):
            digest.update(chunk)
    except FileNotFoundError:
        return None
    return digest.hexdigest()


def files_to_move(data_dir: Path, media: Path) -> Iterator[tuple[Path, str, str]]:
    """(local file, key, store alias) for every file the product keeps."""
    for folder in MOVED:
        for path in sorted((data_dir / folder).rglob("*")):
            if path.is_file():
                yield path, path.relative_to(data_dir).as_posix(), "artifacts"
    for path in sorted(media.rglob("*")):
        if path.is_file():
            yield path, path.relative_to(media).as_posix(), "uploads"


class Command(BaseCommand):
    help = "Copy a local DATA_DIR's runs and uploads into STORAGE_URL's bucket, and check them."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--from", dest="source", required=True, help="the old DATA_DIR")
        parser.add_argument("--media", help="the old MEDIA_ROOT (default: <DATA_DIR>/media)")
        parser.add_argument("--delete", action="store_true", help="delete each checked file")
        parser.add_argument("--dry-run", action="store_true", help="list, copy nothing")

    def handle(self, *args: Any, source: str, media: str | None, **options: Any) -> None:
        data_dir = Path(source).resolve()
        media_root = Path(media).resolve() if media else data_dir / "media"
        if not data_dir.is_dir():
            raise CommandError(f"{data_dir} is not a folder")
        stores = {"artifacts": storage.artifacts(), "uploads": storage.uploads()}
        for alias, store in stores.items():
            if isinstance(store, FileSystemStorage) and Path(store.location) in (
                data_dir,
                media_root,
            ):
                raise CommandError(
                    f"the {alias} store is this folder itself: set STORAGE_URL to the bucket first"
                )
        copied = skipped = 0
        bad: list[str] = []
        for path, key, alias in files_to_move(data_dir, media_root):
            store = stores[alias]
            if options["dry_run"]:
                self.stdout.write(f"would copy {path} -> {alias}:{key}")
                continue
            want = local_sha256(path)
            if stored_sha256(key, store) == want:
                skipped += 1
            else:
                storage.put_file(key, path, store=store)
                copied += 1
                if stored_sha256(key, store) != want:
                    bad.append(key)
                    continue
            if options["delete"]:
                path.unlink()
        self.stdout.write(f"copied {copied}, already there {skipped}, failed the check {len(bad)}")
        if bad:
            raise CommandError("read back differently (kept locally): " + ", ".join(bad[:20]))
