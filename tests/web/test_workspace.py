"""A run's folder on a worker host (workers/workspace.py), on a local folder and on S3.

The files stand in for what the engine writes (the real-worker tests train for real); what
is tested here is how they travel: checkpoints up as saved, complete ones only coming back,
on a host whose scratch folder starts empty.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.s3server import S3Server, s3, use_s3
from webapp.core import storage
from workers.workspace import make_room, open_run_space, stored_checkpoints

__all__ = ["s3"]  # the fixture


def save_checkpoint(run: Path, step: int) -> dict[str, bytes]:
    """What the engine leaves for a checkpoint: weights, then its trainer state."""
    folder = run / "checkpoints" / f"step-{step:06d}"
    folder.mkdir(parents=True)
    files = {"adapter_model.safetensors": os.urandom(2000), "trainer_state.json": b"{}"}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return files


@pytest.fixture
def on_s3(s3: S3Server, settings, monkeypatch, tmp_path: Path) -> None:
    use_s3(s3, settings, monkeypatch, f"ws-{tmp_path.name[-40:]}".lower().replace("_", "-"))
    settings.SCRATCH_DIR = str(tmp_path / "host-a-scratch")


def test_on_a_local_folder_the_engine_writes_in_place_and_nothing_is_copied(
    settings, tmp_path: Path
) -> None:
    settings.SCRATCH_DIR = str(tmp_path / "scratch")
    space = open_run_space("runs/12")
    assert (space.folder, space.remote) == (Path(settings.DATA_DIR) / "runs/12", False)
    save_checkpoint(space.folder, 2)
    space.publish_checkpoint(2)
    space.close()
    assert stored_checkpoints("runs/12") == ["runs/12/checkpoints/step-000002"]
    assert not (tmp_path / "scratch").exists()


def test_checkpoints_go_up_as_saved_and_an_empty_host_resumes_from_the_last_complete_one(
    on_s3: None, settings, tmp_path: Path
) -> None:
    space = open_run_space("runs/7")
    assert space.remote and space.folder == tmp_path / "host-a-scratch/runs/7"
    (space.folder / "config.json").write_text('{"lr": 1}')
    save_checkpoint(space.folder, 2)
    space.publish_checkpoint(2)
    assert stored_checkpoints("runs/7") == ["runs/7/checkpoints/step-000002"]

    # The engine keeps one checkpoint: the store drops what the engine pruned.
    kept = save_checkpoint(space.folder, 4)
    for path in sorted((space.folder / "checkpoints/step-000002").iterdir()):
        path.unlink()
    (space.folder / "checkpoints/step-000002").rmdir()
    space.publish_checkpoint(4)
    assert stored_checkpoints("runs/7") == ["runs/7/checkpoints/step-000004"]

    # Host A dies while uploading step 6: its weights are up, its trainer state is not.
    partial = save_checkpoint(space.folder, 6)
    step6 = space.folder / "checkpoints/step-000006"
    storage.put_file(
        "runs/7/checkpoints/step-000006/adapter_model.safetensors",
        step6 / "adapter_model.safetensors",
    )
    assert stored_checkpoints("runs/7") == ["runs/7/checkpoints/step-000004"]
    assert len(stored_checkpoints("runs/7", complete=False)) == 2
    assert partial  # written on host A only

    # Host B starts with an empty scratch folder and gets the run's files and step 4 only.
    settings.SCRATCH_DIR = str(tmp_path / "host-b-scratch")
    other = open_run_space("runs/7")
    assert other.folder == tmp_path / "host-b-scratch/runs/7"
    got = {p.relative_to(other.folder).as_posix() for p in other.folder.rglob("*") if p.is_file()}
    assert got == {"config.json"} | {f"checkpoints/step-000004/{n}" for n in kept}
    assert (other.folder / "checkpoints/step-000004/adapter_model.safetensors").read_bytes() == (
        kept["adapter_model.safetensors"]
    )

    # The finished run goes up with its manifest last; the scratch copy goes.
    (other.folder / "adapter").mkdir()
    (other.folder / "adapter/adapter_model.safetensors").write_bytes(b"final")
    (other.folder / "manifest.json").write_text("{}")
    sent = other.publish()
    assert sent[-1] == "runs/7/manifest.json" and "runs/7/adapter/adapter_model.safetensors" in sent
    other.close()
    assert not other.folder.exists()
    assert storage.local_path("runs/7") is None  # nothing of it on this host's DATA_DIR


def test_scratch_drops_the_oldest_leftovers_over_its_cap(settings, tmp_path: Path) -> None:
    settings.SCRATCH_DIR = str(tmp_path)
    settings.SCRATCH_MAX_BYTES = 2500
    for age, job in enumerate((3, 2, 1)):  # job 3 is the oldest
        folder = tmp_path / "runs" / str(job)
        folder.mkdir(parents=True)
        (folder / "w.bin").write_bytes(b"x" * 1000)
        os.utime(folder, (1000 + age, 1000 + age))
    keep = tmp_path / "runs" / "9"
    keep.mkdir()
    (keep / "w.bin").write_bytes(b"x" * 5000)
    make_room(keep=keep)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["1", "2", "9"]
