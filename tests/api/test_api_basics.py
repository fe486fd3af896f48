"""Keys, errors, files and jobs through the real `openai` SDK against a live server.

No worker here: validation results are written with the same service the worker uses.
"""

from __future__ import annotations

import json

import openai
import pytest
import requests
from django.urls import reverse

from tests.web.conftest import client_for
from webapp.api.keys import api_key_create
from webapp.api.models import ApiKey, ChatCompletion
from webapp.datasets.models import DatasetVersion, VersionStatus
from webapp.datasets.services import dataset_version_mark
from webapp.jobs.models import Job, JobStatus
from webapp.projects.models import Cell

GOOD = (
    b'{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]}\n'
) * 3
ERROR_KEYS = {"message", "type", "param", "code"}


def mark_valid(file_id: str) -> None:
    dataset_version_mark(version_id=int(file_id.split("-")[1]), status=VersionStatus.VALID)


def test_key_page_creates_lists_and_revokes(team, owner, viewer, outsider) -> None:
    url = reverse("api_keys", args=[team.pk])
    page = client_for(owner).post(url, {"name": "laptop", "read_only": "on"})
    assert page.status_code == 200
    full = page.context["new_key"]
    assert full.startswith("tb-") and full in page.content.decode()
    key = ApiKey.objects.get(team=team)
    assert key.read_only and full.startswith(key.prefix) and full not in key.hashed_secret
    listing = client_for(viewer).get(url).content.decode()
    assert key.prefix in listing and full not in listing and "never" in listing
    assert client_for(viewer).post(url, {"name": "x"}).status_code == 403
    assert client_for(outsider).get(url).status_code == 404
    revoke = reverse("api_key_revoke", args=[key.pk])
    assert client_for(viewer).post(revoke).status_code == 403
    assert client_for(outsider).post(revoke).status_code == 404
    assert client_for(owner, csrf=True).post(revoke).status_code == 403  # CSRF kept on pages
    assert client_for(owner).post(revoke).status_code == 302
    assert ApiKey.objects.get(pk=key.pk).revoked_at is not None


def test_auth_errors_are_openai_shaped(live_server, sdk, team, owner, owner_key) -> None:
    raw = requests.get(f"{live_server.url}/v1/models")
    assert raw.status_code == 401 and raw.headers["x-should-retry"] == "false"
    assert set(raw.json()["error"]) == ERROR_KEYS
    assert raw.json()["error"]["code"] == "missing_api_key"
    with pytest.raises(openai.AuthenticationError) as bad:
        sdk("tb-notarealkey-at-all").models.list()
    assert bad.value.code == "invalid_api_key" and set(bad.value.body) == ERROR_KEYS
    assert bad.value.response.headers["x-should-retry"] == "false"
    key, full = api_key_create(team=team, created_by=owner, name="old")
    assert sdk(full).models.list().data
    ApiKey.objects.filter(pk=key.pk).update(revoked_at="2024-01-01T00:00:00Z")
    with pytest.raises(openai.AuthenticationError, match="revoked"):
        sdk(full).models.list()
    assert ApiKey.objects.get(pk=key.pk).last_used_at is not None
    unknown = requests.get(f"{live_server.url}/v1/nope", headers={"Authorization": "Bearer x"})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_url"
    wrong = requests.put(
        f"{live_server.url}/v1/files", headers={"Authorization": f"Bearer {owner_key}"}
    )
    assert wrong.status_code == 405 and wrong.json()["error"]["type"] == "invalid_request_error"


def test_read_only_keys_and_other_teams(sdk, team, owner, viewer, other_team, outsider) -> None:
    _, read_only = api_key_create(team=team, created_by=owner, name="ro", read_only=True)
    with pytest.raises(openai.PermissionDeniedError) as denied:
        sdk(read_only).files.create(file=("a.jsonl", GOOD), purpose="fine-tune")
    assert denied.value.code == "read_only_key"
    assert denied.value.response.headers["x-should-retry"] == "false"
    _, viewer_key = api_key_create(team=team, created_by=viewer, name="v")
    with pytest.raises(openai.PermissionDeniedError):
        sdk(viewer_key).files.create(file=("a.jsonl", GOOD), purpose="fine-tune")
    _, theirs = api_key_create(team=other_team, created_by=outsider, name="theirs")
    their_file = sdk(theirs).files.create(file=("secret.jsonl", GOOD), purpose="fine-tune")
    assert sdk(read_only).files.list().data == []
    with pytest.raises(openai.NotFoundError) as missing:
        sdk(read_only).files.retrieve(their_file.id)
    assert set(missing.value.body) == ERROR_KEYS and missing.value.code == "not_found"
    assert missing.value.response.headers["x-should-retry"] == "false"
    with pytest.raises(openai.NotFoundError):
        sdk(viewer_key).files.content(their_file.id)


def test_files_upload_list_page_content_delete(sdk, owner_key, settings) -> None:
    client = sdk(owner_key)
    ids = [
        client.files.create(file=(f"f{i}.jsonl", GOOD), purpose="fine-tune").id for i in range(3)
    ]
    first = client.files.retrieve(ids[0])
    assert (first.object, first.status, first.bytes, first.filename) == (
        "file", "uploaded", len(GOOD), "f0.jsonl",
    )  # fmt: skip
    page = client.files.list(limit=2)
    assert [f.id for f in page.data] == ids[:0:-1] and page.has_more
    assert [f.id for f in client.files.list(limit=2)] == ids[::-1]  # auto-paging via `after`
    assert client.files.content(ids[1]).content == GOOD
    mark_valid(ids[1])
    assert client.files.retrieve(ids[1]).status == "processed"
    assert client.files.delete(ids[2]).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(ids[2])
    with pytest.raises(openai.BadRequestError) as bad:
        client.files.create(file=("x.jsonl", GOOD), purpose="assistants")
    assert bad.value.param == "purpose"
    settings.MAX_UPLOAD_BYTES = 50
    with pytest.raises(openai.APIStatusError) as big:
        client.files.create(file=("big.jsonl", GOOD * 10), purpose="fine-tune")
    assert big.value.status_code == 413 and big.value.code == "file_too_large"
    assert DatasetVersion.objects.count() == 2


def test_jobs_create_list_pause_resume_cancel(sdk, owner_key) -> None:
    client = sdk(owner_key)
    file_id = client.files.create(file=("train.jsonl", GOOD), purpose="fine-tune").id
    with pytest.raises(openai.BadRequestError, match="not ready") as early:
        client.fine_tuning.jobs.create(model="tiny-llama", training_file=file_id)
    assert early.value.param == "training_file"
    mark_valid(file_id)
    with pytest.raises(openai.BadRequestError) as bad_model:
        client.fine_tuning.jobs.create(model="gpt-5", training_file=file_id)
    assert bad_model.value.param == "model"
    with pytest.raises(openai.BadRequestError) as bad_extra:
        client.fine_tuning.jobs.create(
            model="tiny-llama", training_file=file_id, extra_body={"tunebook": {"lora_r": 0}}
        )
    assert bad_extra.value.param == "tunebook.lora_r"
    job = client.fine_tuning.jobs.create(
        model="tiny-llama",
        training_file=file_id,
        suffix="greet",
        seed=7,
        metadata={"ticket": "42"},
        method={
            "type": "supervised",
            "supervised": {
                "hyperparameters": {
                    "n_epochs": 3,
                    "batch_size": "auto",
                    "learning_rate_multiplier": 2,
                }
            },
        },
        extra_body={"tunebook": {"max_steps": 5, "lora_r": 4, "quantization": "none"}},
    )
    assert (job.object, job.status, job.model, job.seed) == (
        "fine_tuning.job",
        "queued",
        "tiny-llama",
        7,
    )
    assert job.hyperparameters.n_epochs == 3 and job.hyperparameters.learning_rate_multiplier == 2
    assert job.metadata == {"ticket": "42"} and job.fine_tuned_model is None
    extra = job.model_extra["tunebook"]
    assert extra["config"]["max_steps"] == 5 and extra["config"]["lora_r"] == 4
    second = client.fine_tuning.jobs.create(model="tiny-llama", training_file=file_id)
    assert [j.id for j in client.fine_tuning.jobs.list(limit=1)] == [second.id, job.id]
    paused = client.fine_tuning.jobs.pause(job.id)
    assert paused.status == "paused" and paused.finished_at is None
    assert client.fine_tuning.jobs.resume(job.id).status == "queued"
    assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    with pytest.raises(openai.BadRequestError, match="already finished"):
        client.fine_tuning.jobs.cancel(job.id)
    client.fine_tuning.jobs.pause(second.id)
    assert client.fine_tuning.jobs.cancel(second.id).status == "cancelled"
    assert Job.objects.get(pk=Job.objects.filter(kind="cell.finetune").first().pk).status in (
        JobStatus.CANCELLED,
    )
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100)]
    assert "Job queued" in messages and any("paused by" in m for m in messages)
    assert client.fine_tuning.jobs.checkpoints.list(job.id).data == []
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.retrieve("ftjob-999999")
    models = {m.id for m in client.models.list()}
    assert {"tiny-llama", "smollm2-135m-instruct"} <= models
    with pytest.raises(openai.NotFoundError) as nomodel:
        client.chat.completions.create(
            model="ft:tiny-llama:lab::ftjob-1", messages=[{"role": "user", "content": "hi"}]
        )
    assert nomodel.value.code == "model_not_found"
    with pytest.raises(openai.PermissionDeniedError):
        client.models.delete("tiny-llama")


def test_validation_file_and_target_modules(sdk, owner_key, other_team, outsider) -> None:
    client = sdk(owner_key)
    file_id = client.files.create(file=("t.jsonl", GOOD), purpose="fine-tune").id
    val_id = client.files.create(file=("v.jsonl", GOOD), purpose="fine-tune").id
    mark_valid(file_id)
    mark_valid(val_id)
    job = client.fine_tuning.jobs.create(
        model="tiny-llama",
        training_file=file_id,
        validation_file=val_id,
        extra_body={"tunebook": {"target_modules": ["q_proj", "v_proj"], "max_steps": 1}},
    )
    assert job.validation_file == val_id
    assert client.fine_tuning.jobs.retrieve(job.id).validation_file == val_id
    tune = Cell.objects.get(kind="finetune")
    assert tune.config["target_modules"] == "q_proj,v_proj"
    val_cell = Cell.objects.get(pk=tune.config["val_dataset_cell"])
    assert val_cell.config["dataset"] == DatasetVersion.objects.get(pk=int(val_id[5:])).dataset_id

    with pytest.raises(openai.BadRequestError) as modules:
        client.fine_tuning.jobs.create(
            model="tiny-llama",
            training_file=file_id,
            extra_body={"tunebook": {"target_modules": ["q_proj"]}},
        )
    assert modules.value.param == "tunebook.target_modules" and "'attention'" in str(modules.value)
    other_key = api_key_create(team=other_team, created_by=outsider, name="theirs")[1]
    theirs = sdk(other_key).files.create(file=("o.jsonl", GOOD), purpose="fine-tune").id
    with pytest.raises(openai.BadRequestError) as foreign:
        client.fine_tuning.jobs.create(
            model="tiny-llama", training_file=file_id, validation_file=theirs
        )
    assert foreign.value.param == "validation_file" and foreign.value.code == "invalid_file"
    assert foreign.value.response.headers["x-should-retry"] == "false"
    with pytest.raises(openai.BadRequestError) as unknown:
        client.fine_tuning.jobs.create(
            model="tiny-llama", training_file=file_id, extra_body={"tunebook": {"rnak": 8}}
        )
    assert unknown.value.param == "tunebook" and "rnak" in unknown.value.message
    assert [j.id for j in client.fine_tuning.jobs.list().data] == [job.id]


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"stop": ""}, "stop"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stop": ["ok", 3]}, "stop"),
        ({"stop": "x" * 201}, "stop"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"seed": 2**63}, "seed"),
        ({"seed": "7"}, "seed"),
    ],
)
def test_chat_sampling_options_are_checked(sdk, owner_key, extra: dict, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        sdk(owner_key).chat.completions.create(
            model="tiny-llama", messages=[{"role": "user", "content": "hi"}], **extra
        )
    assert bad.value.param == param
    assert not ChatCompletion.objects.exists()  # nothing was queued


def test_a_stream_no_worker_answers_ends_with_an_error_event(live_server, owner_key, settings):
    """The stream opens at once; when generation times out its last event is an OpenAI-shaped
    error, then [DONE] (the SDK raises it as an APIError)."""
    settings.API_CHAT_TIMEOUT_S = 1
    raw = requests.post(
        f"{live_server.url}/v1/chat/completions",
        json={"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}], "stream": 1},
        headers={"Authorization": f"Bearer {owner_key}"},
        timeout=30,
    )
    assert raw.status_code == 400 and raw.json()["error"]["param"] == "stream"
    with requests.post(
        f"{live_server.url}/v1/chat/completions",
        json={
            "model": "tiny-llama",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
        },
        headers={"Authorization": f"Bearer {owner_key}"},
        stream=True,
        timeout=30,
    ) as streamed:
        events = [line[6:] for line in streamed.iter_lines(decode_unicode=True) if line]
    assert streamed.headers["Content-Type"].startswith("text/event-stream")
    first, error = json.loads(events[0]), json.loads(events[-2])
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "system_fingerprint" not in first
    assert error["error"]["code"] == "timeout" and set(error["error"]) == ERROR_KEYS
    assert events[-1] == "[DONE]"


def test_base_models_list_their_size_context_and_the_workers_that_can_take_them(
    sdk, owner_key, settings
) -> None:
    """The catalog's user side in /v1/models: each offered base model with its facts and
    which training queues' alive workers fit a default fine-tune of it now."""
    from django.utils import timezone

    from webapp.core.models import BaseModel
    from webapp.ops.models import WorkerHost

    settings.TRAINING_QUEUES = ["gpu-small", "gpu"]
    now = timezone.now()
    for name, queue, size in (("w1", "gpu-small", 2**20), ("w2", "gpu", 8 * 2**30)):
        WorkerHost.objects.create(
            name=name, host="h", pid=1, device="cuda", device_memory_bytes=size, queues=[queue],
            cached_models=["tiny-llama"], started_at=now, last_seen_at=now,
        )  # fmt: skip
    BaseModel.objects.filter(name="gemma-3-270m").update(offered=False)
    client = sdk(owner_key)
    listed = {m.id: m for m in client.models.list()}
    assert "gemma-3-270m" not in listed and "tiny-llama-wide" not in listed
    smol = listed["smollm2-135m-instruct"].model_extra["tunebook"]
    assert (smol["parameters"], smol["context_length"]) == (134_515_008, 8192)
    assert smol["label"] == "SmolLM2 135M Instruct" and smol["default_finetune_memory_bytes"] > 0
    workers = {w["queue"]: w for w in smol["workers"]}
    assert [w["queue"] for w in smol["workers"]] == ["gpu-small", "gpu"]  # the operator's order
    assert not workers["gpu-small"]["fits_default_settings"]  # 1 MiB fits nothing
    assert workers["gpu"]["fits_default_settings"] and workers["gpu"]["workers"] == 1
    assert not workers["gpu"]["model_ready"]
    tiny = {w["queue"]: w for w in listed["tiny-llama"].model_extra["tunebook"]["workers"]}
    assert tiny["gpu"]["model_ready"]
