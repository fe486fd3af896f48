"""A full disk while training (issue 20, "Faults to survive"): the run stops with DiskFull,
a message that says what to do, no half-written checkpoint, and resumes once there is room.
The disk is a small tmpfs the test mounts (as root; skipped, saying why, elsewhere)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from finetune_core.errors import DiskFull
from finetune_core.train import train
from finetune_core.train.checkpoint import (
    disk_full_errno,
    disk_full_reported,
    list_checkpoints,
)
from tests.core.test_train import config, watching
from tests.tmpfs import fill, small_tmpfs


def test_disk_full_is_recognised_however_the_writer_words_it() -> None:
    from safetensors import SafetensorError

    assert disk_full_errno(OSError(errno.ENOSPC, "No space left on device")) == errno.ENOSPC
    assert disk_full_errno(OSError(errno.EDQUOT, "Disk quota exceeded")) == errno.EDQUOT
    rust = SafetensorError(
        "Error while serializing: I/O error: No space left on device (os error 28)"
    )
    assert disk_full_errno(rust) == errno.ENOSPC
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as exc:
            raise RuntimeError("saving failed") from exc
    except RuntimeError as wrapped:
        assert disk_full_errno(wrapped) == errno.ENOSPC
    assert disk_full_errno(OSError(errno.EACCES, "Permission denied")) is None
    assert disk_full_errno(RuntimeError("out of memory")) is None
    with pytest.raises(PermissionError), disk_full_reported(Path("."), "writing"):
        raise PermissionError(errno.EACCES, "Permission denied")


def test_a_full_disk_stops_training_cleanly_and_the_run_resumes(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk", 4096) as disk:
        cfg = config(
            tmp_path, "run", max_steps=6, save_every=2, eval_every=6, output_dir=str(disk / "run")
        )
        out = Path(cfg.output_dir)
        ballast: list[Path] = []
        steps: list[int] = []

        def on_event(event) -> None:  # fills the disk as soon as the first checkpoint is in
            if event.kind == "checkpoint" and not ballast:
                ballast.append(fill(disk))
            if event.kind == "step":
                steps.append(event.step)

        with pytest.raises(DiskFull) as failed:
            train(cfg, hooks=watching(on_event))
        message = str(failed.value)
        assert failed.value.code == "disk_full"
        assert f"The disk holding {out} is full (No space left on device)" in message
        assert "while saving the checkpoint at step 4" in message
        assert "free there, a checkpoint takes about" in message
        assert "the checkpoint at step 2 is complete" in message
        assert "Free space on that disk, then resume the run: it continues from step 2" in message
        assert steps == [1, 2, 3, 4]
        # No half-written checkpoint: only complete step folders, no staging folder.
        assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-000002"]
        assert [p.name for p in list_checkpoints(out)] == ["step-000002"]
        assert not [p for p in out.rglob(".*") if p != out]

        ballast[0].unlink()
        resumed = train(cfg, resume=True, hooks=watching(on_event))
        assert resumed.status == "succeeded" and resumed.steps == 6
        assert steps == [1, 2, 3, 4, 3, 4, 5, 6]  # from the checkpoint at step 2
        assert [h["step"] for h in resumed.history] == [1, 2, 3, 4, 5, 6]
        assert (out / "adapter" / "adapter_model.safetensors").is_file()
        assert (out / "manifest.json").is_file()


def test_a_full_disk_before_the_first_checkpoint_says_the_run_starts_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import finetune_core.train.checkpoint as checkpoint

    def refused(*_args, **_kwargs) -> None:
        raise OSError(errno.EDQUOT, "Disk quota exceeded")

    monkeypatch.setattr(checkpoint, "save_file", refused)
    cfg = config(tmp_path, "quota", max_steps=2, save_every=1)
    with pytest.raises(DiskFull) as failed:
        train(cfg)
    message = str(failed.value)
    assert f"The disk quota for {cfg.output_dir} is used up (Disk quota exceeded)" in message
    assert "there is no complete checkpoint yet" in message
    assert "it starts from step 0" in message
    checkpoints = Path(cfg.output_dir) / "checkpoints"
    assert not list(checkpoints.iterdir())  # the staging folder went with the failure
