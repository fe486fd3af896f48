"""Per-team limits on /v1 (the OpenAI SDK) and /api/: 413 storage, 429 jobs, OpenAI's error
shape with a stable code."""

from __future__ import annotations

import openai
import pytest
import requests

from tests.api.test_api_basics import GOOD, mark_valid
from webapp.datasets.models import DatasetVersion
from webapp.jobs.models import Job
from webapp.projects.models import CellRun

ERROR_KEYS = {"message", "type", "param", "code"}


def test_storage_limit_is_a_413(sdk, owner_key, settings) -> None:
    settings.TEAM_STORAGE_BYTES = len(GOOD) * 2 - 1
    client = sdk(owner_key)
    client.files.create(file=("a.jsonl", GOOD), purpose="fine-tune")
    with pytest.raises(openai.APIStatusError) as over:
        client.files.create(file=("b.jsonl", GOOD), purpose="fine-tune")
    exc = over.value
    assert exc.status_code == 413 and exc.code == "team_storage_limit"
    assert set(exc.body) == ERROR_KEYS and exc.body["param"] == "file"
    assert "dataset storage limit" in exc.message
    assert DatasetVersion.objects.count() == 1


def test_job_limit_is_a_429_on_v1_and_the_native_api(
    live_server, sdk, owner_key, cells, settings
) -> None:
    settings.TEAM_ACTIVE_JOBS = 1
    client = sdk(owner_key)
    file_id = client.files.create(file=("t.jsonl", GOOD), purpose="fine-tune").id
    mark_valid(file_id)
    client.fine_tuning.jobs.create(model="tiny-llama", training_file=file_id)
    with pytest.raises(openai.RateLimitError) as over:
        client.fine_tuning.jobs.create(model="tiny-llama", training_file=file_id)
    exc = over.value
    assert exc.status_code == 429 and exc.code == "team_job_limit"
    assert exc.body["type"] == "rate_limit_error" and "its limit is 1" in exc.message
    native = requests.post(
        f"{live_server.url}/api/cells/{cells['finetune'].pk}/runs",
        headers={"Authorization": f"Bearer {owner_key}"},
        timeout=30,
    )
    assert native.status_code == 429 and native.json()["error"]["code"] == "team_job_limit"
    assert CellRun.objects.count() == 1 and Job.objects.filter(kind="cell.finetune").count() == 1


def test_max_steps_cap_is_a_400_naming_the_cap(sdk, owner_key, settings) -> None:
    settings.TEAM_MAX_STEPS = 5
    client = sdk(owner_key)
    file_id = client.files.create(file=("t.jsonl", GOOD), purpose="fine-tune").id
    mark_valid(file_id)
    with pytest.raises(openai.BadRequestError) as over:
        client.fine_tuning.jobs.create(
            model="tiny-llama", training_file=file_id, extra_body={"tunebook": {"max_steps": 6}}
        )
    exc = over.value
    assert exc.code == "max_steps_limit" and exc.param == "tunebook.max_steps"
    assert "cap of 5 steps" in exc.message
    job = client.fine_tuning.jobs.create(
        model="tiny-llama", training_file=file_id, extra_body={"tunebook": {"max_steps": 5}}
    )
    assert job.status in ("queued", "validating_files")
