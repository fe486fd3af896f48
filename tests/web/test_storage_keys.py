"""Rows name files by storage key, never by a host's path (issue 21), and the migration
turns the paths that older rows hold into keys, after which their files are found again."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from django.apps import apps as django_apps
from django.urls import reverse

from tests.web.conftest import client_for
from webapp.api.models import ChatCompletion
from webapp.core import storage
from webapp.jobs.services import job_start, job_succeed
from webapp.projects.models import CellRun, RunStatus

to_keys = importlib.import_module("webapp.projects.migrations.0003_storage_keys").to_keys


def test_old_rows_with_host_paths_become_keys_and_their_files_are_found(
    cell_run: CellRun, owner, team, settings
) -> None:
    data_dir, media = Path(settings.DATA_DIR), Path(settings.MEDIA_ROOT)
    out = data_dir / "runs" / str(cell_run.job_id)
    (out / "adapter").mkdir(parents=True)
    (out / "adapter/adapter_config.json").write_text('{"r": 8}')
    (out / "manifest.json").write_text(json.dumps({"final": "last"}))
    old = {
        "output_dir": str(out),
        "adapter_dir": str(out / "adapter"),
        "config": {"data": str(media / "datasets/a.jsonl"), "output_dir": str(out), "lr": 1},
        "report": {"adapter": str(out / "transferred/adapter")},
        "checkpoints": [{"step": 2}],
    }
    job_start(job_id=cell_run.job_id)
    CellRun.objects.filter(pk=cell_run.pk).update(status=RunStatus.SUCCEEDED, outputs=old)
    job_succeed(job_id=cell_run.job_id)
    elsewhere = ChatCompletion.objects.create(team=team, base_model="m", adapter_dir="/mnt/x/a")
    chat = ChatCompletion.objects.create(
        team=team, base_model="m", adapter_dir=str(out / "adapter")
    )

    to_keys(django_apps, None)

    key = f"runs/{cell_run.job_id}"
    assert CellRun.objects.get(pk=cell_run.pk).outputs == {
        "output_dir": key,
        "adapter_dir": f"{key}/adapter",
        "config": {"data": "datasets/a.jsonl", "output_dir": key, "lr": 1},
        "report": {"adapter": f"{key}/transferred/adapter"},
        "checkpoints": [{"step": 2}],
    }
    assert ChatCompletion.objects.get(pk=chat.pk).adapter_dir == f"{key}/adapter"
    assert ChatCompletion.objects.get(pk=elsewhere.pk).adapter_dir == "/mnt/x/a"  # not ours
    zipped = client_for(owner).get(reverse("run_artifacts", args=[cell_run.pk]))
    assert zipped.status_code == 200
    assert b"adapter/adapter_config.json" in b"".join(zipped.streaming_content)
    to_keys(django_apps, None)  # again: keys stay keys
    assert CellRun.objects.get(pk=cell_run.pk).outputs["adapter_dir"] == f"{key}/adapter"
    assert storage.local_path(key) == out
