"""Base models are records an operator registers (issue 22): from a Hugging Face folder, a
GGUF file or a cached hub id, with the command or the admin; the facts come from the files;
a model that cannot be read is refused and nothing is written; the fine-tune form offers it
with its size and context; a real worker fine-tunes it by its registered name; and it cannot
be unregistered while a job uses it."""

from __future__ import annotations

import shutil
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.urls import reverse

from finetune_core.models.prepare import prepare
from finetune_core.models.registry import BUILTIN, gguf_path
from tests.web.conftest import client_for
from tests.web.test_finetune_worker import finished, job_of, notebook, run_cell, start_worker
from tests.web.worker_harness import wait_for
from webapp.core.catalog import model_choices
from webapp.core.models import BaseModel
from webapp.jobs.models import JobStatus
from webapp.projects.models import CellRun

SMOL = "smollm2-135m-instruct"
__all__ = ["start_worker"]  # the worker fixture, shared with the fine-tune tests


@pytest.fixture(scope="module")
def smol_folder() -> Path:
    """SmolLM2's converted Hugging Face folder (config, safetensors, tokenizer)."""
    return prepare(SMOL)


def register(source: str | Path, **options: str) -> str:
    out = StringIO()
    call_command("model_register", str(source), stdout=out, **options)
    return out.getvalue()


def test_a_folder_registers_with_the_facts_its_files_hold(db, smol_folder: Path) -> None:
    said = register(smol_folder, name="smol-local", label="Smol (folder)", licence="Apache-2.0")
    model = BaseModel.objects.get(name="smol-local")
    assert (model.kind, model.source, model.model_type) == ("local", str(smol_folder), "llama")
    assert (model.parameters, model.context_length) == (134_515_008, 8192)
    assert model.licence == "Apache-2.0" and model.offered and model.chat_template == ""
    assert "135M parameters" in said and "8k context" in said
    # The form offers it beside the built-ins, with its size and context.
    assert ("smol-local", "Smol (folder) · 135M parameters · 8k context") in model_choices()


def test_a_gguf_file_and_a_cached_hub_id_register(db, tmp_path: Path, monkeypatch) -> None:
    register(gguf_path(BUILTIN[SMOL]), name="smol-gguf", licence="Apache-2.0")
    gguf = BaseModel.objects.get(name="smol-gguf")
    assert (gguf.kind, gguf.parameters, gguf.context_length) == ("gguf", 134_515_008, 8192)
    # A hub id from this host's cache, laid out as huggingface_hub lays it out.
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    repo = tmp_path / "hub" / "models--acme--tiny"
    shutil.copytree(prepare("tiny-llama"), repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    register("acme/tiny")
    hub = BaseModel.objects.get(name="tiny")
    assert (hub.kind, hub.hub_id, hub.source) == ("hub", "acme/tiny", "acme/tiny")
    assert hub.licence == "https://huggingface.co/acme/tiny"  # the model card says it


def test_what_cannot_be_read_is_refused_and_nothing_is_registered(
    db, tmp_path: Path, smol_folder: Path, monkeypatch
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    before = BaseModel.objects.count()
    broken = tmp_path / "broken"
    shutil.copytree(smol_folder, broken)
    (broken / "model.safetensors").write_bytes(b"\x00" * 4)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(gguf_path(BUILTIN[SMOL]).read_bytes()[:4096])
    cases = {
        str(tmp_path / "nowhere"): "not a folder on this host",
        str(broken): "not a safetensors file",
        str(cut): "ends inside its GGUF header",
        "acme/missing": "not in this host's Hugging Face cache",
        str(smol_folder): "Say the model's licence",  # no LICENSE file beside it
    }
    for source, says in cases.items():
        with pytest.raises(CommandError, match=says):
            register(source, name="x")
    with pytest.raises(CommandError, match="registered already"):
        register(smol_folder, name=SMOL, licence="MIT")
    assert BaseModel.objects.count() == before


@pytest.fixture
def operator(db) -> User:
    return User.objects.create_superuser("root", "root@example.com", "correct-horse-battery-9")


def test_the_admin_registers_and_says_why_not(operator, smol_folder: Path, tmp_path: Path) -> None:
    client = client_for(operator)
    add = reverse("admin:core_basemodel_add")
    form = {"source": str(tmp_path / "nowhere"), "name": "smol-admin", "offered": "on"}
    refused = client.post(add, form)
    assert refused.status_code == 200 and b"not a folder on this host" in refused.content
    assert not BaseModel.objects.filter(name="smol-admin").exists()
    done = client.post(add, {**form, "source": str(smol_folder), "licence": "Apache-2.0"})
    assert done.status_code == 302, done.content.decode()[-2000:]
    model = BaseModel.objects.get(name="smol-admin")
    assert model.registered_by == operator and model.parameters == 134_515_008
    listing = client.get(reverse("admin:core_basemodel_changelist"))
    assert b"smol-admin" in listing.content and b"135M parameters" in listing.content


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_a_registered_folder_fine_tunes_and_is_held_while_its_job_runs(
    start_worker, team, owner, editor, operator, smol_folder: Path
) -> None:
    register(smol_folder, name="smol-local", label="Smol (folder)", licence="Apache-2.0")
    worker = start_worker()
    cells = notebook(
        team, owner, worker, base_model="smol-local", max_steps=1, max_length=64, batch_size=1
    )
    page = client_for(editor).get(reverse("project_detail", args=[cells["project"].pk]))
    assert "Smol (folder) · 135M parameters · 8k context" in page.content.decode()

    run = run_cell(cells["finetune"], editor)
    with pytest.raises(CommandError, match=r"cannot be unregistered while 1 job\(s\) use it"):
        call_command("model_unregister", "smol-local")
    model = BaseModel.objects.get(name="smol-local")
    admin = client_for(operator)
    refused = admin.post(reverse("admin:core_basemodel_delete", args=[model.pk]), {"post": "yes"})
    assert refused.status_code == 302
    shown = admin.get(refused["Location"]).content.decode()
    assert "cannot be unregistered while 1 job(s) use it" in shown
    assert BaseModel.objects.filter(name="smol-local").exists()

    wait_for(finished(run), timeout=240, what="fine-tune of the registered model", worker=worker)
    job, run = job_of(run), CellRun.objects.get(pk=run.pk)
    assert job.status == JobStatus.SUCCEEDED, (job.error, worker.tail())
    assert run.outputs["adapter_dir"]
    call_command("model_unregister", "smol-local")  # nothing holds it now
    assert not BaseModel.objects.filter(name="smol-local").exists()


def test_a_models_size_reads_as_a_number_however_small() -> None:
    from webapp.core.catalog import size_text

    assert size_text(134_515_008) == "135M parameters"
    assert size_text(1_711_376_384) == "1.7B parameters"
    assert size_text(103_424) == "103,424 parameters"  # tiny-llama's size, once "0M"
    assert size_text(None) == "size unknown"
