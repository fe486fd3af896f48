"""Files the product keeps, by storage key, on whichever backend STORAGE_URL chose.

The web host and the workers call these, never a host path: a key such as `runs/12/adapter`
means the same thing on every host. Folders travel as trees of keys; a tree is complete only
once its last files (the manifest) are there, so readers on other hosts never see half of one.
See webapp/storage_url.py for the two aliases and how STORAGE_URL picks the backend.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage, storages
from django.utils.functional import cached_property

CHUNK_BYTES = 8 * 1024 * 1024  # S3's multipart part size is at least 5 MiB


class DataDirStorage(FileSystemStorage):
    """The artifacts store as a local folder: DATA_DIR, read when used (as MEDIA_ROOT is)."""

    @cached_property
    def base_location(self) -> str:
        return self._value_or_setting(self._location, str(settings.DATA_DIR))

    def _clear_cached_properties(self, setting: str, **kwargs: object) -> None:
        super()._clear_cached_properties(setting, **kwargs)
        if setting == "DATA_DIR":
            self.__dict__.pop("base_location", None)
            self.__dict__.pop("location", None)


def artifacts() -> Storage:
    """What the workers make: run folders, evaluation results, transfer artifacts, exports."""
    return storages["artifacts"]


def uploads() -> Storage:
    """What people upload (dataset versions)."""
    return storages["default"]


def join(*parts: str) -> str:
    """A storage key from parts; refuses absolute keys and `..` so no key leaves its store."""
    key = PurePosixPath(*parts)
    if key.is_absolute() or ".." in key.parts:
        raise ValueError(f"not a storage key: {'/'.join(parts)!r}")
    return str(key)


def keys_under(prefix: str, *, store: Storage | None = None) -> list[str]:
    """Every file key under `prefix`, sorted (empty when there is none)."""
    store = store or artifacts()
    found: list[str] = []
    pending = [prefix.strip("/")]
    while pending:
        folder = pending.pop()
        try:
            dirs, files = store.listdir(folder)
        except FileNotFoundError:
            continue
        found += [join(folder, name) for name in files]
        pending += [join(folder, name) for name in dirs]
    return sorted(found)


def put_file(key: str, path: Path, *, store: Storage | None = None) -> str:
    """Uploads one local file to `key` (streamed; multipart on S3) and returns the key."""
    store = store or artifacts()
    with open(path, "rb") as handle:
        saved = store.save(key, File(handle, name=PurePosixPath(key).name))
    if saved != key:  # a backend that renames instead of replacing would break every reader
        raise RuntimeError(f"storage saved {key!r} as {saved!r}; it must overwrite")
    return key


def put_tree(
    prefix: str, folder: Path, *, last: Iterable[str] = (), store: Storage | None = None
) -> list[str]:
    """Uploads every file under `folder` to `prefix/...`; the names in `last` (relative to
    `folder`, e.g. the manifest) go after all the others, so their presence means complete."""
    store = store or artifacts()
    last = [name for name in last if (folder / name).is_file()]
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    rel = [p.relative_to(folder).as_posix() for p in files]
    ordered = [r for r in rel if r not in last] + list(last)
    return [put_file(join(prefix, r), folder / r, store=store) for r in ordered]


def _s3_object(store: Storage, key: str):  # noqa: ANN202 - boto3's types are generated
    """The boto3 object behind `key` on an S3 store (None on a local folder). Reads go to
    boto3 directly: django-storages' S3File downloads a whole object before the first read."""
    bucket = getattr(store, "bucket", None)
    return None if bucket is None else bucket.Object(join(store.location, key))


@contextmanager
def _missing_is_not_found(key: str) -> Iterator[None]:
    from botocore.exceptions import ClientError

    try:
        yield
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey"}:
            raise FileNotFoundError(f"no file at storage key {key!r}") from None
        raise


def read_chunks(
    key: str, *, store: Storage | None = None, size: int = CHUNK_BYTES
) -> Iterator[bytes]:
    """The bytes of `key` in chunks of `size`, streamed from the backend (never held whole)."""
    store = store or artifacts()
    if (obj := _s3_object(store, key)) is not None:
        with _missing_is_not_found(key):
            body = obj.get()["Body"]
        yield from body.iter_chunks(size)
        return
    with store.open(key, "rb") as handle:
        while chunk := handle.read(size):
            yield chunk


def read_bytes(key: str, *, store: Storage | None = None) -> bytes | None:
    """A small file's bytes (a manifest, a report), or None when there is none."""
    try:
        return b"".join(read_chunks(key, store=store))
    except FileNotFoundError:
        return None


def exists(key: str, *, store: Storage | None = None) -> bool:
    return (store or artifacts()).exists(key)


def get_file(key: str, path: Path, *, store: Storage | None = None) -> Path:
    """Downloads `key` to `path`, through a temporary file beside it: never half a file."""
    store = store or artifacts()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            if (obj := _s3_object(store, key)) is not None:
                with _missing_is_not_found(key):  # parallel ranged parts, as boto3 does
                    obj.download_fileobj(out, Config=store.transfer_config)
            else:
                for chunk in read_chunks(key, store=store):
                    out.write(chunk)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def get_tree(prefix: str, folder: Path, *, store: Storage | None = None) -> list[Path]:
    """Downloads every key under `prefix` into `folder`, keeping the relative layout."""
    prefix = prefix.strip("/")
    return [
        get_file(key, folder / key[len(prefix) + 1 :], store=store)
        for key in keys_under(prefix, store=store)
    ]


def delete_tree(prefix: str, *, store: Storage | None = None) -> int:
    """Deletes every key under `prefix`; returns how many."""
    store = store or artifacts()
    keys = keys_under(prefix, store=store)
    for key in keys:
        store.delete(key)
    return len(keys)


def local_path(key: str, *, store: Storage | None = None) -> Path | None:
    """The file behind `key` when the backend is a local folder (None on object storage)."""
    store = store or artifacts()
    return Path(store.path(key)) if isinstance(store, FileSystemStorage) else None


def unreachable() -> list[str]:
    """Why each object store STORAGE_URL names cannot be used (empty when all answer)."""
    problems = []
    for alias in ("default", "artifacts"):
        store = storages[alias]
        if isinstance(store, FileSystemStorage):
            continue  # a local folder is made when first written
        try:
            store.listdir("")
        except Exception as exc:  # noqa: BLE001 - any failure: the operator must see it at start
            name = getattr(store, "bucket_name", "?")
            endpoint = getattr(store, "endpoint_url", None) or "AWS"
            problems.append(f"storage {alias!r}: bucket {name!r} at {endpoint} failed: {exc}")
    return problems


def key_for_path(path: str, roots: list[Path]) -> str:
    """The storage key of a file that rows once named by its host path (before storage keys):
    its path under the first root that holds it; anything else is returned unchanged."""
    if not path or not Path(path).is_absolute():
        return path
    for root in roots:
        try:
            return Path(path).relative_to(root).as_posix()
        except ValueError:
            continue
    return path
