"""Trans-LoRA in the notebook without a worker process: the transfer cell kind, keep
transferable, every view's access by persona, bad input messages, lineage, re-basing,
and the report page. Worker-written state is laid out on disk as a worker leaves it."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from tests.web.conftest import client_for
from webapp.core import storage
from webapp.jobs.models import Job, JobStatus
from webapp.jobs.services import job_start, job_succeed
from webapp.projects.artifacts import run_key
from webapp.projects.cell_kinds import REGISTRY
from webapp.projects.models import Cell, CellRun, RunStatus
from webapp.projects.services import cell_create, cell_run_create
from webapp.transfers.charts import accuracy_bars, paper_bar
from webapp.transfers.selectors import adapter_lineage, transferable_state
from webapp.transfers.services import (
    transferable_after_finetune,
    transferable_job_create,
    transfers_rebase_project,
)
from workers import tasks

PERSONAS = ("owner", "editor", "viewer", "outsider")
READ = {"owner": 200, "editor": 200, "viewer": 200, "outsider": 404}
WRITE = {"owner": 302, "editor": 302, "viewer": 403, "outsider": 404}


def finish(run: CellRun, outputs: dict[str, Any]) -> CellRun:
    job_start(job_id=run.job_id)
    CellRun.objects.filter(pk=run.pk).update(status=RunStatus.SUCCEEDED, outputs=outputs)
    job_succeed(job_id=run.job_id)
    return CellRun.objects.select_related("cell").get(pk=run.pk)


def make_transferable(run: CellRun) -> None:
    out = storage.local_path(run.outputs["output_dir"])
    (out / "transfer").mkdir(parents=True, exist_ok=True)
    (out / "transfer" / "seeds.jsonl").write_text("{}\n")
    (out / "discriminator").mkdir(parents=True, exist_ok=True)
    (out / "discriminator" / "discriminator.json").write_text('{"task": "t"}')


@pytest.fixture
def source_run(cell_run: CellRun, dataset_version) -> CellRun:
    """A succeeded fine-tune whose dataset still exists, not yet transferable."""
    key = run_key(cell_run.job_id)
    out = storage.local_path(key)
    (out / "adapter").mkdir(parents=True)
    (out / "adapter" / "adapter_config.json").write_text('{"r": 8}')
    return finish(
        cell_run,
        {
            "output_dir": key,
            "adapter_dir": f"{key}/adapter",
            "dataset_version": dataset_version.pk,
            "config": {"data": dataset_version.file.name, "final": "last"},
            "checkpoints": [{"step": 2}],
        },
    )


@pytest.fixture
def transfer_cell(source_run: CellRun, owner) -> Cell:
    return cell_create(
        project=source_run.cell.project,
        kind="transfer",
        config={"source_cell": source_run.cell_id, "base_model": "gemma-3-270m"},
        created_by=owner,
    )


REPORT = {
    "source_model": "tiny-llama",
    "target_model": "gemma-3-270m",
    "task": "plus",
    "eval_examples": 20,
    "accuracy": {
        "source_adapter": {"accuracy": 0.6, "low": 0.4, "high": 0.8, "n": 20},
        "target_base": {"accuracy": 0.1, "low": 0.0, "high": 0.25, "n": 20},
        "transferred": {"accuracy": 0.55, "low": 0.35, "high": 0.75, "n": 20},
    },
    "synthesis": {
        "accepted": 8,
        "attempts": 20,
        "acceptance_rate": 0.4,
        "filtered": True,
        "sample_accepted": ["What is 7 plus one?"],
        "sample_rejected": ["zzqx"],
    },
    "distillation_pairs": 13,
    "sample_pairs": [{"input": "What is 7 plus one?", "teacher": "8"}],
    "phase_seconds": {"synthesize": 1.5, "teacher": 0.5},
    "config": {"include_seeds": True, "distillation": "logits"},
}


@pytest.fixture
def transfer_run(transfer_cell: Cell, source_run: CellRun, owner) -> CellRun:
    """A succeeded transfer run with its adapter, manifest and report on disk."""
    run = cell_run_create(cell=transfer_cell, created_by=owner)
    key = run_key(run.job_id)
    out = storage.local_path(key)
    (out / "transferred" / "adapter").mkdir(parents=True)
    (out / "transferred" / "adapter" / "adapter_config.json").write_text('{"r": 8}')
    (out / "transferred" / "adapter" / "adapter_model.safetensors").write_bytes(b"\1" * 1000)
    (out / "transferred" / "manifest.json").write_text('{"base_model": "gemma-3-270m"}')
    (out / "report.json").write_text(json.dumps(REPORT))
    phases = {"generate": {"label": "Generate synthetic inputs", "status": "done", "current": 20}}
    return finish(
        run,
        {
            "output_dir": key,
            "adapter_dir": f"{key}/transferred/adapter",
            "report": REPORT,
            "phases": phases,
            "source": {"run": source_run.pk, "checkpoint": 2, "lineage": []},
        },
    )


def test_transfer_kind_is_registered_and_playgrounds_can_use_it() -> None:
    kind = REGISTRY["transfer"]
    assert kind.runnable and kind.queue == "gpu"
    assert kind.cell_refs == {"eval_cell": ("dataset",)}  # sources are checked by the form
    assert "transfer" in REGISTRY["playground"].cell_refs["model_cell"]
    fields = kind.form.base_fields
    assert (
        fields["learning_rate"].initial == 5e-4
        and fields["target_modules"].initial == ""  # the source adapter's shape
        and fields["lora_r"].initial is None
        and not fields["lora_r"].required
        and fields["sample_max_new_tokens"].initial is None  # twice the longest seed's
        and not fields["sample_max_new_tokens"].required
    )
    assert fields["n_synthetic"].initial == 250
    assert [c for c, _ in fields["distillation"].choices] == ["sequence", "logits"]


def test_keep_transferable_is_on_by_default_and_can_be_turned_off(cells, owner) -> None:
    # No worker alive here: the fleet is not known, so on (test_keep_transferable_default).
    assert cells["finetune"].config["keep_transferable"] is True
    off = cell_create(
        project=cells["finetune"].project,
        kind="finetune",
        config={**cells["finetune"].config, "keep_transferable": "False"},
        created_by=owner,
    )
    assert off.config["keep_transferable"] is False
    page = client_for(owner).get(reverse("project_detail", args=[off.project_id])).content.decode()
    assert "Keep transferable" in page and "train the Trans-LoRA discriminator" in page


def test_transfer_source_must_be_an_earlier_finetune_cell(cells, owner) -> None:
    with pytest.raises(ValidationError, match="must be a fine-tune cell of this team"):
        cell_create(
            project=cells["finetune"].project,
            kind="transfer",
            config={"source_cell": cells["dataset"].pk, "base_model": "gemma-3-270m"},
            created_by=owner,
        )


@pytest.mark.parametrize("persona", PERSONAS)
def test_transferable_views_access(persona: str, personas, source_run: CellRun) -> None:
    client = client_for(personas[persona])
    panel = client.get(reverse("transferable_panel", args=[source_run.pk]))
    assert panel.status_code == READ[persona]
    train = client.post(reverse("transferable_train", args=[source_run.pk]))
    assert train.status_code == WRITE[persona]
    started = Job.objects.filter(kind="transferable").count()
    assert started == (1 if persona in ("owner", "editor") else 0)
    assert (
        client_for(None).get(reverse("transferable_panel", args=[source_run.pk])).status_code == 302
    )


@pytest.mark.parametrize("persona", PERSONAS)
def test_transfer_download_access(persona: str, personas, transfer_run: CellRun) -> None:
    response = client_for(personas[persona]).get(
        reverse("transfer_download", args=[transfer_run.pk])
    )
    assert response.status_code == READ[persona]
    if response.status_code == 200:
        archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
        assert sorted(archive.namelist()) == [
            "adapter/adapter_config.json",
            "adapter/adapter_model.safetensors",
            "manifest.json",
            "report.json",
        ]


def test_download_of_a_finetune_run_is_404(personas, source_run: CellRun) -> None:
    url = reverse("transfer_download", args=[source_run.pk])
    assert client_for(personas["owner"]).get(url).status_code == 404


@pytest.mark.parametrize("persona", PERSONAS)
def test_rebase_views_access(persona: str, personas, source_run: CellRun) -> None:
    make_transferable(source_run)
    client = client_for(personas[persona])
    url = reverse("project_rebase", args=[source_run.cell.project_id])
    assert client.get(url).status_code == READ[persona]
    data = {"source_model": "tiny-llama", "target_model": "gemma-3-270m", "n_synthetic": 10}
    response = client.post(url, {**data, "quantization": "nf4"})
    assert response.status_code == WRITE[persona]
    created = Cell.objects.filter(kind="transfer").count()
    assert created == (0 if persona in ("viewer", "outsider") else 1)


def test_transferable_job_is_queued_once_and_shown(source_run: CellRun, owner, viewer) -> None:
    job = transferable_job_create(run=source_run, created_by=owner)
    assert job.kind == "transferable" and job.params["_task"]["queue"] == "background"
    source_run.refresh_from_db()
    assert source_run.outputs["transferable"] == {"status": "queued", "job": job.pk}
    with pytest.raises(ValidationError, match="already"):
        transferable_job_create(run=source_run, created_by=owner)
    panel = client_for(viewer).get(reverse("transferable_panel", args=[source_run.pk]))
    body = panel.content.decode()
    assert "Keeping seeds and training the discriminator" in body and "hx-trigger" in body
    assert "Waiting in the <strong>background</strong> queue: number 1 of 1" in body
    assert "Stop training the discriminator" not in body  # viewers read only
    editor_panel = client_for(owner).get(reverse("transferable_panel", args=[source_run.pk]))
    assert reverse("job_cancel", args=[job.pk]) in editor_panel.content.decode()


def test_no_discriminator_without_the_data(source_run: CellRun, owner, dataset_version) -> None:
    Path(dataset_version.file.path).unlink()
    with pytest.raises(ValidationError, match="dataset this adapter was trained on is gone"):
        transferable_job_create(run=source_run, created_by=owner)
    assert transferable_after_finetune(run_id=source_run.pk) is None  # never fails the run
    source_run.refresh_from_db()
    assert source_run.outputs["transferable"]["status"] == "failed"
    page = client_for(owner).get(reverse("run_detail", args=[source_run.pk])).content.decode()
    assert "can no longer be made" in page and "Train the discriminator" not in page


def test_run_page_offers_training_when_not_transferable(source_run, owner, viewer) -> None:
    url = reverse("run_detail", args=[source_run.pk])
    assert (
        "Train the discriminator and keep seeds now" in client_for(owner).get(url).content.decode()
    )
    viewer_page = client_for(viewer).get(url).content.decode()
    assert "cannot be transferred" in viewer_page and "keep seeds now" not in viewer_page
    make_transferable(source_run)
    ready = client_for(viewer).get(url).content.decode()
    assert "Ready" in ready and "the dataset may be deleted" in ready


def test_notebook_shows_the_source_status_with_a_button(transfer_cell, source_run, owner) -> None:
    url = reverse("project_detail", args=[transfer_cell.project_id])
    page = client_for(owner).get(url).content.decode()
    assert "has no seeds, so it cannot be transferred" in page
    assert reverse("transferable_train", args=[source_run.pk]) in page
    make_transferable(source_run)
    assert "transferable</span>" in client_for(owner).get(url).content.decode()


def test_transfer_of_a_non_transferable_adapter_fails_with_a_clear_message(
    transfer_cell, owner
) -> None:
    run = cell_run_create(cell=transfer_cell, created_by=owner)
    tasks.run_cell.apply(args=[run.pk])
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert "is not transferable: it has no seeds" in run.outputs["error"]
    assert Job.objects.get(pk=run.job_id).status == JobStatus.FAILED


def test_transfer_without_held_out_data_asks_for_an_eval_cell(
    transfer_cell, source_run, owner, dataset_version
) -> None:
    make_transferable(source_run)
    Path(dataset_version.file.path).unlink()
    run = cell_run_create(cell=transfer_cell, created_by=owner)
    tasks.run_cell.apply(args=[run.pk])
    run.refresh_from_db()
    assert (
        run.status == RunStatus.FAILED and "pick an evaluation dataset cell" in run.outputs["error"]
    )


def test_transfer_from_a_missing_checkpoint_names_the_ones_there(source_run, owner) -> None:
    make_transferable(source_run)
    cell = cell_create(
        project=source_run.cell.project,
        kind="transfer",
        config={
            "source_cell": source_run.cell_id,
            "base_model": "gemma-3-270m",
            "source_checkpoint": 9,
        },
        created_by=owner,
    )
    run = cell_run_create(cell=cell, created_by=owner)
    tasks.run_cell.apply(args=[run.pk])
    run.refresh_from_db()
    assert "no checkpoint at step 9 (it has: 2)" in run.outputs["error"]


def test_rebase_creates_one_transfer_per_transferable_adapter(cells, source_run, owner) -> None:
    project = source_run.cell.project
    other = cell_create(
        project=project, kind="finetune", config={**cells["finetune"].config}, created_by=owner
    )
    make_transferable(source_run)
    result = transfers_rebase_project(
        project=project, source_model="tiny-llama", target_model="gemma-3-270m", created_by=owner
    )
    assert [c.config["source_cell"] for c in result.created] == [source_run.cell_id]
    assert [(c.pk, why) for c, why in result.skipped] == [(other.pk, "it has no finished run")]
    created = result.created[0]
    assert created.config["base_model"] == "gemma-3-270m" and created.runs.count() == 1
    page = client_for(owner).get(reverse("project_rebase", args=[project.pk])).content.decode()
    assert str(created) in page and "Queued" in page
    with pytest.raises(ValidationError, match="other than the source"):
        transfers_rebase_project(
            project=project, source_model="tiny-llama", target_model="tiny-llama", created_by=owner
        )
    with pytest.raises(ValidationError, match="No fine-tune cell"):
        transfers_rebase_project(
            project=project,
            source_model="gemma-3-270m",
            target_model="tiny-llama",
            created_by=owner,
        )


def test_lineage_from_dataset_version_to_transfer(
    transfer_run, source_run, dataset_version, viewer
) -> None:
    steps = adapter_lineage(run=source_run)
    assert [s["kind"] for s in steps] == ["dataset", "finetune", "checkpoint"]
    assert steps[0]["pk"] == dataset_version.pk and "tiny-llama" in steps[1]["label"]
    moved = adapter_lineage(run=transfer_run)
    assert [s["kind"] for s in moved] == ["dataset", "finetune", "checkpoint", "transfer"]
    assert moved[2]["label"] == "checkpoint step 2" and "gemma-3-270m" in moved[3]["label"]
    page = client_for(viewer).get(reverse("run_detail", args=[transfer_run.pk])).content.decode()
    assert (
        "Lineage" in page and reverse("dataset_version_detail", args=[dataset_version.pk]) in page
    )
    ft_page = client_for(viewer).get(reverse("run_detail", args=[source_run.pk])).content.decode()
    assert "Lineage" in ft_page and "adapter: last" in ft_page
    assert "Moved to:" in ft_page and reverse("run_detail", args=[transfer_run.pk]) in ft_page


def test_report_page_has_chart_rates_samples_and_download(transfer_run, viewer) -> None:
    page = client_for(viewer).get(reverse("run_detail", args=[transfer_run.pk])).content.decode()
    assert 'class="accuracy-chart"' in page and page.count('<g class="bar') == 3
    assert "40.0%" in page and "20 sampled" in page and "13 distillation pairs" in page
    assert "✓ What is 7 plus one?" in page and "✗ zzqx" in page
    assert (
        "synthesize 1.5 s" in page and reverse("transfer_download", args=[transfer_run.pk]) in page
    )
    assert "Generate synthetic inputs" in page and "logits-level" in page
    assert "✓ at least as good as the target base" in page and "✓ within the source" in page
    assert "Resumed" not in page  # a first attempt
    report = {**REPORT, "attempts": 2, "reused": ["synthesis", "teacher"]}
    CellRun.objects.filter(pk=transfer_run.pk).update(
        outputs={**transfer_run.outputs, "report": report}
    )
    page = client_for(viewer).get(reverse("run_detail", args=[transfer_run.pk])).content.decode()
    assert "attempt 2; reused from earlier attempts: synthesis, teacher" in page
    assert "Filter" not in page  # a report from before the filter was named


def test_report_names_the_filter_rule(transfer_run, viewer) -> None:
    rules = [
        ({"threshold": 0.0, "real_recall": None, "real_passing": 0.83}, "the paper's p(yes) &gt; p(no), which 83.0% of held-out real inputs pass"),
        ({"threshold": 1.234, "real_recall": 0.9, "real_passing": 0.9}, "stricter: margin above 1.23, which 90.0% of held-out real inputs beat"),
    ]  # fmt: skip
    for rule, text in rules:
        report = {**REPORT, "synthesis": {**REPORT["synthesis"], "filter": rule}}
        outputs = {**transfer_run.outputs, "report": report}
        CellRun.objects.filter(pk=transfer_run.pk).update(outputs=outputs)
        page = client_for(viewer).get(reverse("run_detail", args=[transfer_run.pk]))
        assert text in page.content.decode()


def test_report_shows_the_teacher_confidence_filter_and_what_it_left_out(
    transfer_run, viewer
) -> None:
    dropped = [{"input": "What is 58 plus 67?", "teacher": "115", "confidence": -0.912}]
    teacher = {"keep": 0.8, "kept": 800, "answers": 1000, "sample_dropped": dropped}
    for keep, shown in ((teacher, True), ({**teacher, "keep": 1.0, "sample_dropped": []}, False)):
        outputs = {**transfer_run.outputs, "report": {**REPORT, "teacher_filter": keep}}
        CellRun.objects.filter(pk=transfer_run.pk).update(outputs=outputs)
        page = client_for(viewer).get(reverse("run_detail", args=[transfer_run.pk]))
        html = page.content.decode()
        assert ("the 800 answers of 1000 the teacher was surest of (80.0%)" in html) is shown
        assert ("What is 58 plus 67?" in html and "-0.912" in html) is shown


def test_the_stricter_filter_setting_reaches_the_transfer(source_run: CellRun, editor) -> None:
    from workers.transfer_run import transfer_config

    project_id = source_run.cell.project_id
    posted = {"kind": "transfer", "title": "Strict", "source_cell": source_run.cell_id,
              "base_model": "gemma-3-270m", "real_recall": "0.9", "teacher_keep": "0.8"}  # fmt: skip
    client = client_for(editor)
    assert client.post(reverse("cell_add", args=[project_id]), posted).status_code == 302
    cell = Cell.objects.get(kind="transfer", title="Strict")
    assert cell.config["real_recall"] == 0.9
    cfg = transfer_config(cell.config, source_run, "adapter", Path("out"), Path("run"))
    assert cfg.real_recall == 0.9 and cfg.filtered
    assert cell.config["teacher_keep"] == 0.8 and cfg.teacher_keep == 0.8
    assert cfg.lora_r is None and cfg.target_modules is None  # left blank: the source's
    assert cfg.sample_max_new_tokens is None  # left blank: from the seeds
    paper = transfer_config(
        {**cell.config, "real_recall": None, "lora_r": 8, "target_modules": "q_proj,v_proj",
         "sample_max_new_tokens": 40, "teacher_keep": None},
        source_run, "a", Path("o"), Path("run"),
    )  # fmt: skip
    assert paper.real_recall is None and paper.teacher_keep == 1.0  # blank: all, as the paper
    assert paper.lora_r == 8 and paper.target_modules == ["q_proj", "v_proj"]
    assert paper.sample_max_new_tokens == 40
    bad = client.post(reverse("cell_add", args=[project_id]), {**posted, "real_recall": "1.5"})
    assert "less than or equal to 1" in bad.content.decode()
    bad = client.post(reverse("cell_add", args=[project_id]), {**posted, "teacher_keep": "0"})
    assert "greater than or equal to 0.05" in bad.content.decode()
    assert Cell.objects.filter(kind="transfer", title="Strict").count() == 1  # none added


def test_cancelled_transfer_keeps_what_was_done(transfer_cell, owner, viewer) -> None:
    run = cell_run_create(cell=transfer_cell, created_by=owner)
    partial = {
        "synthesis": {**REPORT["synthesis"], "accepted": 3, "attempts": 9},
        "accuracy": {"target_base": REPORT["accuracy"]["target_base"]},
    }
    CellRun.objects.filter(pk=run.pk).update(
        status=RunStatus.CANCELLED, outputs={"partial": partial, "phases": {}}
    )
    page = client_for(viewer).get(reverse("run_detail", args=[run.pk])).content.decode()
    assert (
        "Synthetic inputs so far" in page
        and "3 accepted of 9 sampled before the run stopped" in page
    )
    assert "Download transferred" not in page
    assert "Evaluated before the run stopped" in page and "Target base: 10.0%" in page


def test_accuracy_bars_draw_intervals() -> None:
    svg = str(accuracy_bars(REPORT["accuracy"]))
    assert svg.startswith("<svg") and svg.count('class="ci"') == 9  # 3 lines per whisker
    assert "Transferred: 55.0% (95% CI 35.0% to 75.0%, n=20)" in svg
    assert "appears once" in str(accuracy_bars({}))


def test_transferable_state_reads_files_and_job(source_run) -> None:
    state = transferable_state(run=source_run)
    assert not state["ready"] and state["data_exists"] and not state["active"]
    make_transferable(source_run)
    assert transferable_state(run=source_run)["ready"]


def test_rebase_page_lists_transfer_results(transfer_run, viewer) -> None:
    url = reverse("project_rebase", args=[transfer_run.cell.project_id])
    page = client_for(viewer).get(url).content.decode()
    assert str(transfer_run.cell) in page and "gemma-3-270m" in page
    assert "60.0%" in page and "10.0%" in page and "55.0%" in page  # source, target, moved
    assert "Move every adapter</button>" not in page  # viewers cannot start transfers


def test_source_may_be_in_another_notebook_of_the_team_never_another_team(
    source_run: CellRun, owner, outsider
) -> None:
    from webapp.projects.services import project_create
    from webapp.teams.services import team_create

    team = source_run.cell.project.team
    other = project_create(team=team, name="Second notebook", created_by=owner)
    cell = cell_create(
        project=other,
        kind="transfer",
        config={"source_cell": source_run.cell_id, "base_model": "gemma-3-270m"},
        created_by=owner,
    )
    page = client_for(owner).get(reverse("project_detail", args=[other.pk])).content.decode()
    assert f"First notebook / {source_run.cell}" in page  # offered, with its notebook's name
    assert "has no seeds, so it cannot be transferred" in page
    make_transferable(source_run)
    run = cell_run_create(cell=cell, created_by=owner)
    assert run.inputs["source_cell"] == source_run.cell_id

    foreign = project_create(
        team=team_create(name="Elsewhere", owner=outsider), name="Theirs", created_by=outsider
    )
    with pytest.raises(ValidationError, match="must be a fine-tune cell of this team"):
        cell_create(
            project=foreign,
            kind="transfer",
            config={"source_cell": source_run.cell_id, "base_model": "gemma-3-270m"},
            created_by=outsider,
        )


def test_notebook_shows_the_latest_report_inline(transfer_run, viewer) -> None:
    url = reverse("project_detail", args=[transfer_run.cell.project_id])
    page = client_for(viewer).get(url).content.decode()
    assert 'class="latest-run"' in page and 'class="accuracy-chart"' in page
    assert "✓ What is 7 plus one?" in page and 'hx-trigger="every 2s"' not in page  # finished
    CellRun.objects.filter(pk=transfer_run.pk).update(status=RunStatus.RUNNING)
    live = client_for(viewer).get(url).content.decode()
    fragment = reverse("cell_live", args=[transfer_run.cell_id])
    assert f'hx-get="{fragment}" hx-trigger="every 2s"' in live


def test_lineage_keeps_the_dataset_name_after_deletion(source_run, dataset_version) -> None:
    outputs = {**source_run.outputs, "dataset_label": str(dataset_version)}
    CellRun.objects.filter(pk=source_run.pk).update(outputs=outputs)
    dataset_version.dataset.delete()
    steps = adapter_lineage(run=CellRun.objects.select_related("cell").get(pk=source_run.pk))
    assert steps[0] == {"kind": "dataset", "label": "greetings v1 (deleted)", "pk": None}


def test_a_queued_runs_lineage_does_not_call_its_dataset_deleted(source_run, owner) -> None:
    queued = cell_run_create(cell=source_run.cell, created_by=owner)  # no worker took it yet
    steps = adapter_lineage(run=CellRun.objects.select_related("cell").get(pk=queued.pk))
    assert steps[0]["kind"] == "finetune" and not any("deleted" in s["label"] for s in steps)


def test_lineage_names_a_chosen_checkpoint(source_run) -> None:
    CellRun.objects.filter(pk=source_run.pk).update(outputs={**source_run.outputs, "final": "2"})
    steps = adapter_lineage(run=CellRun.objects.select_related("cell").get(pk=source_run.pk))
    assert steps[-1]["label"] == "checkpoint step 2"


def test_a_source_in_use_cannot_be_deleted_from_any_notebook(
    transfer_cell, source_run, owner
) -> None:
    from webapp.projects.services import cell_delete, project_create

    elsewhere = cell_create(
        project=project_create(team=owner.teams.first(), name="Second notebook", created_by=owner),
        kind="transfer",
        config={"source_cell": source_run.cell_id, "base_model": "gemma-3-270m"},
        created_by=owner,
    )
    with pytest.raises(ValidationError) as refused:
        cell_delete(cell=source_run.cell)
    message = refused.value.messages[0]
    assert str(transfer_cell) in message and f"{elsewhere} (notebook “Second notebook”)" in message
    response = client_for(owner).post(
        reverse("cell_delete", args=[source_run.cell_id]), follow=True
    )
    assert "Other cells use this one" in response.content.decode()
    assert Cell.objects.filter(pk=source_run.cell_id).exists()
    cell_delete(cell=elsewhere)
    cell_delete(cell=transfer_cell)
    cell_delete(cell=source_run.cell)  # unused now
    assert not Cell.objects.filter(pk=source_run.cell_id).exists()


def test_running_after_the_source_vanished_says_so(transfer_cell, source_run, owner) -> None:
    # Deleted behind the app's back (the admin, a team's cascade): runs are refused in words.
    Cell.objects.filter(pk=source_run.cell_id).delete()
    with pytest.raises(ValidationError, match="the one chosen is gone"):
        cell_run_create(cell=transfer_cell, created_by=owner)
    page = client_for(owner).get(reverse("project_detail", args=[transfer_cell.project_id]))
    assert "The source fine-tune cell is gone" in page.content.decode()


def test_add_a_transfer_cell_through_the_notebook_form(source_run: CellRun, editor) -> None:
    project_id = source_run.cell.project_id
    client = client_for(editor)
    form = client.get(reverse("project_detail", args=[project_id]) + "?add=transfer")
    html = form.content.decode()
    assert 'name="source_cell"' in html and f'value="{source_run.cell_id}"' in html
    assert 'name="ablation_seeds_only"' in html and 'value="logits"' in html
    posted = {
        "kind": "transfer",
        "title": "To Gemma",
        "source_cell": source_run.cell_id,
        "base_model": "gemma-3-270m",
        "ablation_seeds_only": "on",  # ticked; the other boxes are left unticked
        "n_synthetic": "40",
    }
    response = client.post(reverse("cell_add", args=[project_id]), posted)
    assert response.status_code == 302
    cell = Cell.objects.get(kind="transfer", title="To Gemma")
    assert cell.config["ablation_seeds_only"] is True and cell.config["unfiltered"] is False
    assert cell.config["n_synthetic"] == 40 and cell.config["distillation"] == "sequence"
    assert cell.config["target_modules"] == "" and cell.config["learning_rate"] == 5e-4


def test_paper_bar() -> None:
    acc = REPORT["accuracy"]
    ok = {"beats_target_base": True, "matches_source": True, "source_learned": True}
    assert paper_bar(acc) == ok
    worse = {**acc, "transferred": {"accuracy": 0.05, "low": 0.0, "high": 0.1, "n": 20}}
    assert paper_bar(worse) == {**ok, "beats_target_base": False, "matches_source": False}
    assert paper_bar({"target_base": acc["target_base"]}) is None
