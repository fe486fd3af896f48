"""Hostile input gets a clear 4xx in OpenAI's error shape, never a 500 (issue 20, item 9)."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from tests.web.conftest import client_for
from webapp.api.v1.services import fine_tuning_job_create
from webapp.datasets.models import VersionStatus
from webapp.datasets.services import dataset_version_mark

ERROR_KEYS = {"message", "type", "param", "code"}
DEEP = 100_000  # far past Python's recursion limit, far under the body size limit


def _client(key: str) -> Client:
    return Client(raise_request_exception=False, HTTP_AUTHORIZATION=f"Bearer {key}")


@pytest.mark.parametrize("path", ["/v1/fine_tuning/jobs", "/v1/chat/completions"])
@pytest.mark.parametrize(
    "body",
    [
        b"[" * DEEP + b"]" * DEEP,
        b'{"a":' * DEEP + b"1" + b"}" * DEEP,
        b'{"a":"\\u0000", "b":' + b"[" * DEEP + b"]" * DEEP + b"}",  # the NUL check reads it too
    ],
    ids=["arrays", "objects", "with-nul"],
)
def test_deeply_nested_json_is_a_400(owner_key, path: str, body: bytes) -> None:
    response = _client(owner_key).post(path, data=body, content_type="application/json")
    assert response.status_code == 400, response.content[:300]
    error = response.json()["error"]
    assert set(error) == ERROR_KEYS and error["code"] == "invalid_json"
    assert "nested too deeply" in error["message"] or "not valid JSON" in error["message"]


@pytest.mark.parametrize(
    "model",
    [
        "ft:tiny-llama:lab:x:ftjob-" + "9" * 5000,
        "ft:tiny-llama:lab:x:ftjob-" + "9" * 40,  # int() takes it; a 64-bit key does not
        "ft:tiny-llama:lab:x:ftjob-1:ckpt-step-" + "9" * 5000,
        "ft:tiny-llama:lab:x:run-" + "9" * 5000,
        "ft:tiny-llama:lab:x:ftjob-\u0663",  # an Arabic-Indic 3: a digit to isdigit() and int()
    ],
    ids=["5000-digits", "40-digits", "checkpoint-step", "notebook-run", "non-ascii-digit"],
)
def test_a_model_id_with_a_huge_number_is_not_found(owner_key, model: str) -> None:
    client = _client(owner_key)
    chat = client.post(
        "/v1/chat/completions",
        data={"model": model, "messages": [{"role": "user", "content": "hi"}]},
        content_type="application/json",
    )
    deleted = client.delete(f"/v1/models/{model}")
    for response in (chat, deleted):
        assert response.status_code == 404, response.content[:300]
        assert response.json()["error"]["code"] == "model_not_found"


@pytest.mark.parametrize("ref", ["file-" + "9" * 5000, "file-\u00b2", "file-\u0663"])
def test_a_file_id_with_a_huge_or_odd_number_is_not_found(owner_key, ref: str) -> None:
    client = _client(owner_key)
    assert client.get(f"/v1/files/{ref}").json()["error"]["code"] == "not_found"
    job = client.post(
        "/v1/fine_tuning/jobs",
        data={"model": "tiny-llama", "training_file": ref},
        content_type="application/json",
    )
    assert job.status_code == 400 and job.json()["error"]["param"] == "training_file"


@pytest.mark.parametrize("position", ["x", "-1", "9" * 5000, "\u00b2"])
def test_the_estimate_refuses_a_position_that_is_no_number(owner, project, position: str) -> None:
    url = reverse("cell_estimate", args=[project.pk]) + f"?position={position}"
    response = client_for(owner).post(url, {"base_model": "tiny-llama"})
    assert response.status_code == 400
    assert b"position must be a cell position" in response.content
    assert client_for(owner).post(url.split("?")[0] + "?position=2", {}).status_code == 200


@pytest.fixture
def tagged_jobs(team, owner, dataset_version) -> dict[str, str]:
    """Four jobs by their metadata; the keys look like ORM lookups on purpose."""
    dataset_version_mark(version_id=dataset_version.pk, status=VersionStatus.VALID)
    dataset_version.refresh_from_db()
    ids = {}
    for name, metadata in [
        ("a", {"env": "prod"}),
        ("b", {"env": "production"}),
        ("c", {"env__regex": "x", "contains": "y"}),
        ("d", {}),
    ]:
        ft = fine_tuning_job_create(
            team=team, created_by=owner, model="tiny-llama", training_file=dataset_version,
            suffix=name, seed=1, metadata=metadata, hyperparameters={}, extras={},
        )  # fmt: skip
        ids[f"ftjob-{ft.pk}"] = name
    return ids


@pytest.mark.parametrize(
    ("query", "found"),
    [
        ("metadata[env]=prod", {"a"}),  # equality: "production" does not start a match
        ("metadata[env__startswith]=prod", set()),  # a key, not a lookup
        ("metadata[env__regex]=.*", set()),
        ("metadata[env__regex]=x", {"c"}),  # ...which a job may really hold
        ("metadata[contains]=y", {"c"}),
        ("metadata[env__isnull]=True", set()),
        ("metadata[env]=prod&metadata[contains]=y", set()),
    ],
)
def test_metadata_filters_are_plain_equality(owner_key, tagged_jobs, query: str, found) -> None:
    response = _client(owner_key).get(f"/v1/fine_tuning/jobs?{query}")
    assert response.status_code == 200, response.content[:300]
    assert {tagged_jobs[row["id"]] for row in response.json()["data"]} == found


@pytest.mark.parametrize(
    "query",
    ["metadata[]=x", f"metadata[{'k' * 65}]=x", "&".join(f"metadata[k{i}]=x" for i in range(17))],
)
def test_metadata_filters_out_of_bounds_are_a_400(owner_key, query: str) -> None:
    response = _client(owner_key).get(f"/v1/fine_tuning/jobs?{query}")
    assert response.status_code == 400 and response.json()["error"]["param"] == "metadata"
