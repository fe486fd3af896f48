"""A run's folder on this worker host, kept in step with the artifacts store.

With local storage (the embedded default) the store's folder is the run folder: the engine
writes in place and nothing is copied. With object storage the run lives in a scratch folder
on this host: it starts from the run's latest complete checkpoint in the store (so a job
resumes on any host), each checkpoint is uploaded as soon as it is saved, the finished run
last of all with its manifest, and the scratch folder goes when the job ends.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from django.conf import settings

from finetune_core.contracts.layout import (
    CHECKPOINTS,
    MANIFEST,
    TRAINER_STATE,
    checkpoint_dir,
    checkpoint_step,
)
from webapp.core import storage

log = logging.getLogger(__name__)
COMPLETE = ".complete"  # a cached copy is whole once this marker is there


@dataclass(frozen=True)
class RunSpace:
    key: str  # the run folder's storage key, the same on every host
    folder: Path  # where the engine reads and writes on this host
    remote: bool  # folder is scratch, mirrored to object storage

    def publish_checkpoint(self, step: int) -> None:
        """Uploads the checkpoint just saved (its trainer state last: present means complete),
        the run's own top-level files, and drops from the store what the engine pruned."""
        if not self.remote:
            return
        for path in self.folder.iterdir():
            if path.is_file():
                storage.put_file(storage.join(self.key, path.name), path)
        folder = checkpoint_dir(self.folder, step)
        storage.put_tree(_rel(self, folder), folder, last=[TRAINER_STATE])
        kept = {p.name for p in (self.folder / CHECKPOINTS).iterdir()}
        for step_dir in stored_checkpoints(self.key, complete=False):
            if PurePosixPath(step_dir).name not in kept:
                storage.delete_tree(step_dir)

    def publish(self) -> list[str]:
        """Uploads the finished run (checkpoints are up already), its manifest last; returns
        the keys in the order sent."""
        if not self.remote:
            return []
        sent: list[str] = []
        for path in sorted(self.folder.iterdir()):
            if path.name in (CHECKPOINTS, MANIFEST):
                continue
            if path.is_dir():
                sent += storage.put_tree(_rel(self, path), path)
            else:
                sent.append(storage.put_file(_rel(self, path), path))
        if (self.folder / MANIFEST).is_file():
            sent.append(
                storage.put_file(_rel(self, self.folder / MANIFEST), self.folder / MANIFEST)
            )
        return sent

    def close(self) -> None:
        """Drops the scratch copy (the store keeps everything that was published)."""
        if self.remote:
            shutil.rmtree(self.folder, ignore_errors=True)


def _rel(space: RunSpace, path: Path) -> str:
    return storage.join(space.key, path.relative_to(space.folder).as_posix())


def stored_checkpoints(key: str, *, complete: bool = True) -> list[str]:
    """Keys of the run's checkpoint folders in the store (only complete ones unless told),
    oldest step first."""
    root = storage.join(key, CHECKPOINTS)
    folders: dict[str, bool] = {}
    for k in storage.keys_under(root):
        step_dir, _, rest = k[len(root) + 1 :].partition("/")
        done = folders.get(step_dir, False) or rest == TRAINER_STATE
        folders[step_dir] = done
    names = [name for name, done in folders.items() if done or not complete]
    return [storage.join(root, n) for n in sorted(names, key=checkpoint_step)]


def scratch_root() -> Path:
    return Path(settings.SCRATCH_DIR)


def make_room(keep: Path) -> None:
    """Deletes the oldest run and upload folders in scratch (never `keep`) while they hold more
    than SCRATCH_MAX_BYTES: a job killed with its host leaves its folder behind."""
    roots = [scratch_root() / name for name in ("runs", "uploads", "cache")]
    found = [p for root in roots if root.is_dir() for p in root.iterdir() if p != keep]
    folders = sorted(found, key=lambda p: p.stat().st_mtime)
    used = {p: sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) for p in folders}
    total = sum(used.values())
    for folder in folders:
        if total <= settings.SCRATCH_MAX_BYTES:
            break
        log.info("scratch over its cap: removing %s", folder.name)
        shutil.rmtree(folder, ignore_errors=True)
        total -= used[folder]


def open_run_space(key: str, *, whole: bool = False) -> RunSpace:
    """A run folder on this host: the store's own folder when it is local, else a scratch
    folder holding the run's files and its latest complete checkpoint (`whole`: every
    checkpoint, for choosing among them)."""
    local = storage.local_path(key)
    if local is not None:
        return RunSpace(key, local, remote=False)
    folder = scratch_root() / key
    make_room(keep=folder)
    shutil.rmtree(folder, ignore_errors=True)  # what a killed attempt left here may be partial
    folder.mkdir(parents=True)
    started = time.monotonic()
    checkpoints = storage.join(key, CHECKPOINTS) + "/"
    for k in storage.keys_under(key):
        if whole or not k.startswith(checkpoints):
            storage.get_file(k, folder / k[len(key) + 1 :])
    if not whole and (saved := stored_checkpoints(key)):
        storage.get_tree(saved[-1], folder / saved[-1][len(key) + 1 :])
        log.info("fetched %s in %.1f s", saved[-1], time.monotonic() - started)
    return RunSpace(key, folder, remote=True)


def local_copy(key: str) -> Path:
    """A stored folder (an adapter) as files on this host: in place on a local store, else
    downloaded once into scratch's cache, again only when its weights were replaced."""
    if (local := storage.local_path(key)) is not None:
        return local
    keys = storage.keys_under(key)
    if not keys:
        raise FileNotFoundError(f"nothing stored under {key!r}")
    stamp = max(str(storage.artifacts().get_modified_time(k)) for k in keys)
    folder = scratch_root() / "cache" / hashlib.sha256(f"{key}@{stamp}".encode()).hexdigest()[:24]
    if not (folder / COMPLETE).is_file():
        make_room(keep=folder)
        shutil.rmtree(folder, ignore_errors=True)
        storage.get_tree(key, folder)
        (folder / COMPLETE).touch()
    return folder


def fetch_upload(name: str) -> Path:
    """A local path to an uploaded file (a dataset version): in place on a local folder, else
    copied into this host's scratch folder (kept for the next job that reads it)."""
    store = storage.uploads()
    if (local := storage.local_path(name, store=store)) is not None:
        return local
    folder = scratch_root() / "uploads" / hashlib.sha256(name.encode()).hexdigest()[:24]
    path = folder / PurePosixPath(name).name
    if not path.is_file():  # an upload never changes under its name
        make_room(keep=folder)
        storage.get_file(name, path, store=store)
    return path


def localize_run_config(folder: Path, data_key: str | None) -> None:
    """A run's config.json names its training data as the training host saw it; in a copy
    fetched from object storage, point it at this host's copy of the upload (if it still
    exists), so the engine finds the data the run was trained on."""
    config_path = folder / "config.json"
    if not data_key or not config_path.is_file():
        return
    config = json.loads(config_path.read_text())
    exists = storage.exists(data_key, store=storage.uploads())
    config["data"] = str(fetch_upload(data_key)) if exists else data_key
    config_path.write_text(json.dumps(config))
