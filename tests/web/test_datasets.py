"""Dataset upload: streaming to disk, size limit enforced mid-stream, versioning."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.uploadhandler import StopUpload
from django.urls import reverse

from tests.web.conftest import CHAT_JSONL, Upload, client_for
from webapp.datasets.models import Dataset, DatasetVersion, VersionStatus
from webapp.datasets.uploads import LimitedStreamingUploadHandler
from webapp.jobs.models import Job


def upload(client, team, name: str, content: bytes, **extra):
    return client.post(
        reverse("dataset_upload", args=[team.pk]),
        {"name": name, "file": Upload.make("data.jsonl", content)},
        **extra,
    )


def leftover_files() -> list[str]:
    tmp = Path(settings.FILE_UPLOAD_TEMP_DIR)
    return [p.name for p in tmp.iterdir()] if tmp.exists() else []


def test_upload_streams_to_storage_and_queues_validation(
    team, editor, django_capture_on_commit_callbacks
) -> None:
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = upload(client_for(editor), team, "greetings", CHAT_JSONL)
    version = DatasetVersion.objects.get()
    assert response["Location"] == reverse("dataset_version_detail", args=[version.pk])
    assert version.version == 1 and version.size == len(CHAT_JSONL)
    assert version.sha256 == hashlib.sha256(CHAT_JSONL).hexdigest()
    assert version.status == VersionStatus.UPLOADED
    assert Path(version.file.path).read_bytes() == CHAT_JSONL
    assert str(settings.MEDIA_ROOT) in version.file.path
    job = version.validation_job
    assert job.kind == "validate_dataset" and job.celery_task_id and job.team == team
    assert len(callbacks) == 1  # the task is sent only after commit
    assert leftover_files() == []


def test_reupload_same_name_adds_a_version(team, owner) -> None:
    client = client_for(owner)
    upload(client, team, "greetings", CHAT_JSONL)
    upload(client, team, "greetings", CHAT_JSONL + CHAT_JSONL)
    dataset = Dataset.objects.get(team=team, name="greetings")
    v1, v2 = dataset.versions.order_by("version")
    assert (v1.version, v2.version) == (1, 2)
    assert v1.file.path != v2.file.path
    assert Path(v1.file.path).read_bytes() == CHAT_JSONL  # never overwritten
    assert v2.size == 2 * len(CHAT_JSONL)
    page = client.get(reverse("dataset_detail", args=[dataset.pk])).content.decode()
    assert "v1" in page and "v2" in page


def test_upload_over_limit_is_aborted_while_streaming(team, owner, settings) -> None:
    settings.MAX_UPLOAD_BYTES = 100_000
    big = b"x" * 300_000  # several 64 KiB chunks: some are written before the abort
    response = upload(client_for(owner), team, "huge", big)
    assert response.status_code == 413
    assert "larger than the 97.7\xa0KB upload limit" in response.content.decode()
    assert not DatasetVersion.objects.exists() and not Job.objects.exists()
    assert leftover_files() == []
    media = Path(settings.MEDIA_ROOT)
    assert not media.exists() or not any(p.is_file() for p in media.rglob("*"))


def test_declared_oversized_body_refused_before_reading(team, owner, settings) -> None:
    settings.MAX_UPLOAD_BYTES = 1_000
    response = upload(client_for(owner), team, "huge", b"y" * 1_200_000)
    assert response.status_code == 413
    assert "upload limit" in response.content.decode()
    assert not DatasetVersion.objects.exists()
    assert leftover_files() == []


def test_handler_deletes_the_partial_file_when_the_limit_is_crossed(settings) -> None:
    handler = LimitedStreamingUploadHandler(max_bytes=10)
    handler.new_file("file", "data.jsonl", "application/json", None)
    handler.receive_data_chunk(b"12345678", 0)
    partial = handler.partial_path
    assert partial and os.path.exists(partial)  # streamed to disk, chunk by chunk
    with pytest.raises(StopUpload):
        handler.receive_data_chunk(b"9abc", 8)
    assert not os.path.exists(partial)
    assert "upload limit" in handler.error


def test_json_client_gets_json_errors_and_redirects(team, owner, settings) -> None:
    client = client_for(owner)
    ok = upload(client, team, "greetings", CHAT_JSONL, HTTP_ACCEPT="application/json")
    assert ok.status_code == 200 and ok.json()["redirect"].startswith("/dataset-versions/")
    settings.MAX_UPLOAD_BYTES = 10
    bad = upload(client, team, "greetings", CHAT_JSONL, HTTP_ACCEPT="application/json")
    assert bad.status_code == 413 and "upload limit" in bad.json()["error"]
    empty = upload(client, team, "greetings", b"", HTTP_ACCEPT="application/json")
    assert empty.status_code == 400 and empty.json()["ok"] is False


def test_upload_page_renders_dropzone_and_progress(team, owner) -> None:
    page = client_for(owner).get(reverse("dataset_upload", args=[team.pk])).content.decode()
    assert 'id="dropzone"' in page and "<progress" in page and "upload.js" in page


def test_version_page_shows_status_and_report(dataset_version, viewer) -> None:
    DatasetVersion.objects.filter(pk=dataset_version.pk).update(
        status=VersionStatus.INVALID,
        report={"ok": False, "errors": [{"line": 3, "message": "bad role"}]},
    )
    client = client_for(viewer)
    page = client.get(reverse("dataset_version_detail", args=[dataset_version.pk])).content.decode()
    assert "Invalid" in page and "bad role" in page and "hx-trigger" not in page
    fragment = client.get(
        reverse("dataset_version_detail", args=[dataset_version.pk]), HTTP_HX_REQUEST="true"
    ).content.decode()
    assert fragment.lstrip().startswith("<section") and "bad role" in fragment


# Evaluation prompt datasets: the purpose is chosen at upload and decides the validator.

PROMPTS_OK = (
    b'{"prompt": "Name a fruit.", "reference": "apple", "category": "food"}\n'
    b'{"prompt": "Is the sky blue?", "target": ["yes", "Yes."], "category": "science"}\n'
    b"\n"
    b'{"prompt": "Write a haiku about rain.", "category": "food"}\n'
)
PROMPTS_BAD = (
    b'{"prompt": "Fine line."}\n'
    b'{"prompt": "missing a brace"\n'
    b'["a list"]\n'
    b'{"question": "wrong key"}\n'
    b'{"prompt": "Also fine.", "reference": 4}\n'
)


def validated(client, team, name: str, content: bytes, purpose: str) -> DatasetVersion:
    from workers import tasks

    response = client.post(
        reverse("dataset_upload", args=[team.pk]),
        {"name": name, "purpose": purpose, "file": Upload.make("prompts.jsonl", content)},
    )
    assert response.status_code == 302, response.content.decode()[:500]
    version = DatasetVersion.objects.filter(dataset__name=name).order_by("-version").first()
    tasks.validate_dataset_version.apply(args=[version.pk])  # the worker's task, in process
    version.refresh_from_db()
    return version


def test_prompt_file_validates_as_evaluation_prompts(team, editor, viewer) -> None:
    version = validated(client_for(editor), team, "quiz", PROMPTS_OK, "evaluation")
    assert version.dataset.purpose == "evaluation"
    assert version.status == VersionStatus.VALID, version.report
    assert version.n_examples == 3
    prompts = version.report["prompts"]
    assert (prompts["with_references"], prompts["without_references"]) == (2, 1)
    assert prompts["categories"] == {"food": 2, "science": 1}
    # Line numbers count the blank line: the third prompt is on line 4 of the file.
    assert [r["line"] for r in version.report["preview"]] == [1, 2, 4]
    assert version.report["preview"][1]["references"] == ["yes", "Yes."]  # BIG-bench "target"
    page = client_for(viewer).get(reverse("dataset_version_detail", args=[version.pk]))
    html = page.content.decode()
    assert "Valid" in html and "3 prompts." in html and "Evaluation prompts" in html
    assert "With reference answers" in html and "Write a haiku about rain." in html
    assert "Token statistics" not in html  # no training-data report for a prompt set


def test_the_same_prompt_file_as_training_data_is_invalid(team, editor) -> None:
    version = validated(client_for(editor), team, "quiz-as-data", PROMPTS_OK, "training")
    assert version.dataset.purpose == "training" and version.status == VersionStatus.INVALID


def test_malformed_prompt_file_lists_every_bad_line(team, editor, viewer) -> None:
    version = validated(client_for(editor), team, "broken", PROMPTS_BAD, "evaluation")
    assert version.status == VersionStatus.INVALID and version.n_examples is None
    errors = [(e["line"], e["code"]) for e in version.report["errors"]]
    assert errors == [
        (2, "invalid_json"),
        (3, "not_an_object"),
        (4, "no_prompt"),
        (5, "bad_field"),
    ]
    assert version.report["prompts"]["n"] == 1  # line 1 still reads
    html = client_for(viewer).get(reverse("dataset_version_detail", args=[version.pk]))
    html = html.content.decode()
    assert "Invalid" in html and "line 4" in html and "no_prompt" in html
    assert "Readable prompts" in html and "upload the file again under the same name" in html


def test_not_utf8_and_empty_prompt_files_say_why(team, editor) -> None:
    client = client_for(editor)
    latin = validated(client, team, "latin", b'{"prompt": "caf\xe9"}\n', "evaluation")
    assert [(e["line"], e["code"]) for e in latin.report["errors"]] == [(1, "not_utf8")]
    blank = validated(client, team, "blank", b"\n\n\n", "evaluation")
    assert [e["code"] for e in blank.report["errors"]] == ["no_prompts"]


def test_bigbench_task_uploads_as_prompts(team, editor) -> None:
    task = Path(settings.BASE_DIR) / "finetune_core/assets/bigbench/sports_understanding.json"
    version = validated(client_for(editor), team, "sports", task.read_bytes(), "evaluation")
    assert version.status == VersionStatus.VALID and version.format == "bigbench"
    assert version.report["source"] == "BIG-bench task"
    assert version.report["prompts"]["with_choices"] == version.n_examples > 100
    assert version.report["preview"][0]["where"] == "example"


def test_a_new_version_keeps_the_dataset_purpose(team, editor, viewer) -> None:
    client = client_for(editor)
    validated(client, team, "quiz", PROMPTS_OK, "evaluation")
    refused = client.post(
        reverse("dataset_upload", args=[team.pk]),
        {"name": "quiz", "purpose": "training", "file": Upload.make("d.jsonl", CHAT_JSONL)},
    )
    assert refused.status_code == 400 and "holds evaluation prompts" in refused.content.decode()
    assert Dataset.objects.get(name="quiz").versions.count() == 1
    # "Upload a new version" starts the form with the dataset's purpose.
    form = client.get(reverse("dataset_upload", args=[team.pk]), {"name": "quiz"})
    assert '<option value="evaluation" selected>' in form.content.decode()
    assert client_for(viewer).post(reverse("dataset_upload", args=[team.pk])).status_code == 403


def test_cells_offer_only_datasets_of_their_purpose(team, editor, project) -> None:
    from webapp.projects.cell_kinds import REGISTRY

    client = client_for(editor)
    quiz = validated(client, team, "quiz", PROMPTS_OK, "evaluation").dataset
    chats = validated(client, team, "chats", CHAT_JSONL, "training").dataset
    position = {"project": project, "position": 9}
    ds_field = REGISTRY["dataset"].form(**position).fields["dataset"]
    ev_field = REGISTRY["evaluation"].form(**position).fields["prompt_dataset"]
    assert [c for c, _ in ds_field.choices] == ["", chats.pk]
    assert [c for c, _ in ev_field.choices] == ["", quiz.pk]
    wrong = REGISTRY["evaluation"].form(
        {"source": "prompt_dataset", "prompt_dataset": chats.pk, "base_model_2": "tiny-llama"},
        **position,
    )
    assert not wrong.is_valid() and "prompt_dataset" in wrong.errors


def test_the_chosen_format_is_one_the_engine_reads(team, editor, viewer) -> None:
    """The form offers the engine's formats; choosing the right one validates, the wrong one
    names the line and what it lacks, and "detect" records what validation found."""
    from workers import tasks

    form = client_for(editor).get(reverse("dataset_upload", args=[team.pk])).content.decode()
    assert 'value="chat"' in form and "Preference pairs (JSONL)" in form
    assert 'value="jsonl"' not in form  # a container, not a format the engine reads

    def send(name: str, fmt: str) -> DatasetVersion:
        data = {"name": name, "format": fmt, "file": Upload.make("data.jsonl", CHAT_JSONL)}
        response = client_for(editor).post(reverse("dataset_upload", args=[team.pk]), data)
        assert response.status_code == 302, response.content.decode()[:500]
        version = DatasetVersion.objects.get(dataset__name=name)
        tasks.validate_dataset_version.apply(args=[version.pk])
        version.refresh_from_db()
        return version

    chat = send("as-chat", "chat")
    assert chat.status == VersionStatus.VALID and chat.report["format"] == "chat", chat.report
    pairs = send("as-pairs", "preference")
    assert pairs.status == VersionStatus.INVALID
    assert pairs.report["issues"][0]["line"] == 1, pairs.report["issues"]
    assert pairs.report["issues"][0]["code"] == "missing_input"
    detected = send("detected", "")
    assert detected.status == VersionStatus.VALID and detected.format == "chat"
    page = client_for(viewer).get(reverse("dataset_version_detail", args=[detected.pk]))
    assert "Chat messages (JSONL)" in page.content.decode()
    refused = client_for(editor).post(
        reverse("dataset_upload", args=[team.pk]),
        {"name": "old", "format": "jsonl", "file": Upload.make("data.jsonl", CHAT_JSONL)},
    )
    assert refused.status_code == 400 and not Dataset.objects.filter(name="old").exists()
    assert "Select a valid choice" in refused.content.decode()
