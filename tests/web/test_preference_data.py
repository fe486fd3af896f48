""" "Make preference data" on the comparison page: which judged pairs become DPO pairs (votes
over the judge, both orders agreeing, ties and flips left out), the file the worker
validates as preference data with its provenance, the lineage from the evaluation to a
DPO run, the preview, and every persona's access."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.urls import reverse

from tests.web.conftest import client_for
from webapp.datasets.models import Dataset, DatasetVersion, VersionStatus
from webapp.evaluations.models import EvalPrompt, Evaluation, PairVerdict
from webapp.evaluations.preference import preference_selection
from webapp.evaluations.services import (
    evaluation_store,
    human_vote_cast,
    preference_data_create,
)
from webapp.projects.models import Cell, CellRun, Project, RunStatus
from webapp.projects.services import cell_create, cell_run_create
from webapp.teams.services import team_create
from webapp.transfers.selectors import adapter_lineage

# item: (A-first verdict, B-first verdict, outcome, inconsistent) as the engine stores them
JUDGED = {
    "i1": ("B", "A", "b", False),  # tuned in both orders: kept, by the judge
    "i2": ("A", "A", "tie", True),  # flipped with the order: left out
    "i3": ("B", "A", "b", False),  # the judge says tuned, a vote says base: base wins
    "i4": ("A", "B", "a", False),  # the judge says base, a vote says tie: left out
    "i5": ("tie", "tie", "tie", False),  # a tie in both orders: left out
    "i6": ("A", "A", "tie", True),  # flipped, but a vote decides: kept, by the human
    "i7": (None, "A", "error", False),  # no verdict: left out
    "i8": ("B", "A", "b", False),  # the votes split a/b: left out
    "i9": ("A", "B", "a", False),  # tuned's answer failed: left out
    "i10": ("A", "B", "a", False),  # the same answer twice: left out
}
VOTES = {"i3": ["a"], "i4": ["tie"], "i6": ["b"], "i8": ["a", "b"]}


def judgment(value: str | None) -> dict[str, Any]:
    status = "ok" if value else "error"
    return {"value": value, "status": status, "raw": f"[[{value}]]", "error": ""}


def answer(text: str, status: str = "ok") -> dict[str, Any]:
    return {"text": text, "status": status, "error": "", "completion_tokens": 2}


def result_dict() -> dict[str, Any]:
    """finetune_core.evaluate's result for the ten pairs of JUDGED, base against tuned."""
    items = [{"id": i, "category": "", "prompt": f"Question {i}?"} for i in JUDGED]
    answers: dict[str, dict[str, Any]] = {
        "base": {i: answer(f"base says {i}") for i in JUDGED},
        "tuned": {i: answer(f"tuned says {i}") for i in JUDGED},
    }
    answers["tuned"]["i9"] = answer("", status="error")
    answers["tuned"]["i10"] = answer("base says i10")
    judgments = [
        {
            "item_id": i,
            "a": "base",
            "b": "tuned",
            "outcome": out,
            "inconsistent": flip,
            "prompt_version": f"pairwise@v{n % 2 + 1}",
            "ab": judgment(ab),
            "ba": judgment(ba),
        }
        for n, (i, (ab, ba, out, flip)) in enumerate(JUDGED.items())
    ]
    return {
        "eval_set": {"name": "demo-set", "n_items": len(items)},
        "items": items,
        "candidates": [
            {"kind": "base", "model": "tiny-llama", "label": "base"},
            {
                "kind": "adapter",
                "model": "tiny-llama",
                "adapter": "runs/1/adapter",
                "label": "tuned",
            },
        ],
        "answers": answers,
        "judgments": judgments,
        "pairs": [{"a": "base", "b": "tuned", "win_rate": 0.5, "ci_low": 0.2, "ci_high": 0.8}],
        "judge": {"backend": "LocalBackend", "model": "tiny-llama"},
        "errors": [],
    }


@pytest.fixture
def eval_cell(project: Project, owner: Any) -> Cell:
    config = {"source": "bigbench", "bigbench_task": "sports_understanding"}
    config["base_model_2"] = "tiny-llama"  # a second candidate beside the base
    return cell_create(project=project, kind="evaluation", config=config, created_by=owner)


@pytest.fixture
def ev(eval_cell: Cell, owner: Any, editor: Any) -> Evaluation:
    run = cell_run_create(cell=eval_cell, created_by=owner)
    CellRun.objects.filter(pk=run.pk).update(status=RunStatus.SUCCEEDED)
    ev = evaluation_store(run=run, result=result_dict(), mode="pairwise")
    for item, votes in VOTES.items():
        verdict = PairVerdict.objects.get(evaluation=ev, prompt__item_id=item)
        for user, vote in zip((editor, owner), votes, strict=False):
            human_vote_cast(verdict=verdict, user=user, vote=vote)
    return ev


def test_votes_win_both_orders_must_agree_ties_and_flips_are_left_out(ev) -> None:
    selection = preference_selection(evaluation=ev)
    kept = {p.verdict.prompt.item_id: (p.preferred, p.rejected, p.source) for p in selection.kept}
    assert kept == {
        "i1": ("tuned", "base", "judge"),
        "i3": ("base", "tuned", "human"),  # the vote overrides the judge's "tuned"
        "i6": ("tuned", "base", "human"),  # a vote decides a flipped verdict
    }
    assert selection.dropped == {
        "inconsistent": 1,
        "tie": 2,  # i4 (voted tie over the judge's "base") and i5 (tie in both orders)
        "judge_failed": 1,
        "votes_split": 1,
        "no_answer": 1,
        "identical": 1,
    }
    assert selection.by_source == {"human": 2, "judge": 1, "judge_calibrated": 0}


def validated(version: DatasetVersion) -> DatasetVersion:
    from workers import tasks

    tasks.validate_dataset_version.apply(args=[version.pk])  # the worker's task, in process
    version.refresh_from_db()
    return version


def test_the_version_validates_as_preference_data_with_provenance(ev, editor) -> None:
    version = preference_data_create(evaluation=ev, created_by=editor, name="prefs")
    assert version.dataset.purpose == "training" and version.validation_job is not None
    version = validated(version)
    assert version.status == VersionStatus.VALID, version.report
    assert version.report["format"] == "preference" and version.n_examples == 3
    # Counted and previewed under the evaluated model's chat template.
    assert (
        version.preview_model == "tiny-llama" and version.report["stats"]["model"] == "tiny-llama"
    )
    assert version.report["preview"][0]["rejected_segments"]
    with version.file.open("rb") as f:
        records = [json.loads(line) for line in f.read().decode().splitlines()]
    first = records[0]
    assert first["input"] == {"messages": [{"role": "user", "content": "Question i1?"}]}
    assert first["preferred_output"] == [{"role": "assistant", "content": "tuned says i1"}]
    assert first["non_preferred_output"] == [{"role": "assistant", "content": "base says i1"}]
    by_item = {r["metadata"]["item"]: r["metadata"] for r in records}
    assert by_item["i1"]["source"] == "judge" and by_item["i1"]["prompt_version"] == "pairwise@v1"
    assert by_item["i3"] == {
        "evaluation": ev.pk,
        "run": ev.run_id,
        "item": "i3",
        "verdict": PairVerdict.objects.get(evaluation=ev, prompt__item_id="i3").pk,
        "source": "human",
        "votes": 1,
        "judge": "LocalBackend tiny-llama",
        "prompt_version": "pairwise@v1",
        "preferred": "base",
        "non_preferred": "tuned",
    }
    assert version.origin["kind"] == "evaluation" and version.origin["run"] == ev.run_id
    assert version.origin["dropped"]["tie"] == 2


def test_lineage_runs_from_the_evaluation_to_a_dpo_run(ev, project, owner, viewer) -> None:
    version = preference_data_create(evaluation=ev, created_by=owner, name="prefs")
    ds = cell_create(
        project=project, kind="dataset", config={"dataset": version.dataset_id}, created_by=owner
    )
    dpo = cell_create(
        project=project,
        kind="finetune",
        config={"dataset_cell": ds.pk, "base_model": "tiny-llama", "epochs": 1},
        created_by=owner,
    )
    run = cell_run_create(cell=dpo, created_by=owner)
    CellRun.objects.filter(pk=run.pk).update(outputs={"dataset_version": version.pk})
    run.refresh_from_db()
    kinds = [(s["kind"], s["pk"]) for s in adapter_lineage(run=run)]
    assert kinds[:3] == [("evaluation", ev.run_id), ("dataset", version.pk), ("finetune", run.pk)]
    page = client_for(viewer).get(reverse("run_detail", args=[run.pk])).content.decode()
    assert 'class="lineage-evaluation"' in page
    assert reverse("run_detail", args=[ev.run_id]) in page
    body = client_for(viewer).get(reverse("dataset_version_detail", args=[version.pk]))
    text = body.content.decode()
    assert "Lineage" in text and reverse("run_detail", args=[ev.run_id]) in text
    assert "3 preference pairs: 2 decided by votes, 1 by the judge" in text
    CellRun.objects.filter(pk=ev.run_id).delete()  # the evaluation goes with its run
    assert adapter_lineage(run=run)[0] == {
        "kind": "evaluation",
        "label": version.origin["label"] + " (deleted)",
        "pk": None,
    }


def test_preview_shows_kept_pairs_and_why_the_others_were_dropped(ev, editor, viewer) -> None:
    url = reverse("evaluation_preference_data", args=[ev.pk])
    body = client_for(viewer).get(url).content.decode()
    assert "Kept: 3 pairs" in body and "2 decided by votes, 1 by the judge" in body
    assert (
        '<tr data-reason="tie"><td>a tie: by the votes, or by the judge in both orders</td><td>2</td>'
        in body
    )
    assert 'data-reason="votes_split"' in body and 'data-reason="identical"' in body
    assert "tuned says i1" in body and "human (1 vote)" in body and "pairwise@v2" in body
    assert "preference-form" not in body  # viewers read only
    comparison = reverse("evaluation_detail", args=[ev.pk])
    assert url in client_for(editor).get(comparison).content.decode()
    assert url not in client_for(viewer).get(comparison).content.decode()


def test_the_form_makes_a_new_dataset_or_a_version_of_a_picked_one(ev, editor) -> None:
    url = reverse("evaluation_preference_data", args=[ev.pk])
    client = client_for(editor)
    assert "preference-form" in client.get(url).content.decode()
    empty = client.post(url, {"name": ""})
    assert (
        empty.status_code == 400 and "Pick a dataset, or name a new one." in empty.content.decode()
    )
    made = client.post(url, {"name": "Votes"})
    first = DatasetVersion.objects.get(dataset__name="Votes")
    assert made.status_code == 302
    assert made["Location"] == reverse("dataset_version_detail", args=[first.pk])
    again = client.post(url, {"dataset": first.dataset_id})
    second = DatasetVersion.objects.get(dataset__name="Votes", version=2)
    assert again["Location"] == reverse("dataset_version_detail", args=[second.pk])
    assert second.origin["evaluation"] == ev.pk and Dataset.objects.count() == 1


def test_only_the_teams_fine_tuning_datasets_can_be_picked(ev, editor, outsider) -> None:
    url = reverse("evaluation_preference_data", args=[ev.pk])
    theirs = preference_data_create(evaluation=ev, created_by=editor, name="elsewhere")
    other_team = team_create(name="Other", owner=outsider)
    Dataset.objects.filter(pk=theirs.dataset_id).update(team=other_team)
    refused = client_for(editor).post(url, {"dataset": theirs.dataset_id})
    assert refused.status_code == 400 and "Select a valid choice" in refused.content.decode()
    prompts = Dataset.objects.create(
        team=ev.run.cell.project.team, name="quiz", purpose="evaluation"
    )
    assert client_for(editor).post(url, {"dataset": prompts.pk}).status_code == 400
    assert not prompts.versions.exists()


def test_nothing_to_keep_is_refused_with_what_to_do(ev, editor) -> None:
    PairVerdict.objects.filter(evaluation=ev).update(outcome="tie", inconsistent=True)
    PairVerdict.objects.get(evaluation=ev, prompt__item_id="i3").votes.all().delete()
    PairVerdict.objects.get(evaluation=ev, prompt__item_id="i6").votes.all().delete()
    url = reverse("evaluation_preference_data", args=[ev.pk])
    response = client_for(editor).post(url, {"name": "Nothing"})
    assert response.status_code == 400 and "No pair has a winner yet" in response.content.decode()
    assert not Dataset.objects.filter(name="Nothing").exists()


def calibrate(ev: Evaluation, **outcomes: str) -> None:
    """Record position-calibrated outcomes, as a constrained local judge does."""
    for item, outcome in outcomes.items():
        PairVerdict.objects.filter(evaluation=ev, prompt__item_id=item).update(calibrated=outcome)


def test_a_flipped_verdict_is_kept_by_its_calibrated_outcome_only_when_asked(ev, editor) -> None:
    # i2 flipped with no votes; i6 flipped but a vote decides; i1 agreed in both orders.
    calibrate(ev, i1="a", i2="b", i6="a")
    assert "inconsistent" in preference_selection(evaluation=ev).dropped  # the default
    selection = preference_selection(evaluation=ev, calibrated=True)
    kept = {p.verdict.prompt.item_id: (p.preferred, p.source) for p in selection.kept}
    assert kept == {
        "i1": ("tuned", "judge"),  # both orders agree: the strict verdict, not the calibrated
        "i2": ("tuned", "judge_calibrated"),
        "i3": ("base", "human"),
        "i6": ("tuned", "human"),  # votes still win
    }
    assert "inconsistent" not in selection.dropped
    assert selection.by_source == {"human": 2, "judge": 1, "judge_calibrated": 1}
    version = validated(
        preference_data_create(evaluation=ev, created_by=editor, name="cal", calibrated=True)
    )
    sources = [json.loads(line)["metadata"]["source"] for line in version.file.open()]
    assert sorted(sources) == ["human", "human", "judge", "judge_calibrated"]
    assert version.origin["calibrated"] is True
    assert version.origin["by_source"]["judge_calibrated"] == 1
    calibrate(ev, i2="tie")
    tied = preference_selection(evaluation=ev, calibrated=True)
    assert tied.dropped["calibrated_tie"] == 1 and len(tied.kept) == 3


def test_the_page_offers_calibrated_verdicts_only_for_a_judge_that_records_them(ev, editor) -> None:
    url = reverse("evaluation_preference_data", args=[ev.pk])
    client = client_for(editor)
    assert "preference-calibrated" not in client.get(url).content.decode()
    calibrate(ev, i2="b")
    plain = client.get(url).content.decode()
    assert "preference-calibrated" in plain and "Kept: 3 pairs" in plain
    assert 'name="calibrated" value=""' in plain  # the save form keeps what is previewed
    opted = client.get(url, {"calibrated": "1"}).content.decode()
    assert "Kept: 4 pairs" in opted and "1 by the judge&#x27;s position-calibrated verdict" in opted
    assert "judge, calibrated" in opted and 'name="calibrated" value="1"' in opted
    made = client.post(url, {"name": "Calibrated", "calibrated": "1"})
    assert made.status_code == 302
    version = DatasetVersion.objects.get(dataset__name="Calibrated")
    assert version.origin["kept"] == 4 and version.origin["calibrated"] is True
    page = client.get(reverse("dataset_version_detail", args=[version.pk])).content.decode()
    assert "1 by the judge&#x27;s position-calibrated verdict." in page  # its lineage


def test_with_no_winner_the_refusal_points_to_the_calibrated_verdicts(ev, editor) -> None:
    PairVerdict.objects.filter(evaluation=ev).update(outcome="tie", inconsistent=True)
    for item in ("i3", "i4", "i6", "i8"):
        PairVerdict.objects.get(evaluation=ev, prompt__item_id=item).votes.all().delete()
    url = reverse("evaluation_preference_data", args=[ev.pk])
    calibrate(ev, i1="b")
    refused = client_for(editor).post(url, {"name": "Nothing"})
    assert refused.status_code == 400
    assert "or keep the judge&#x27;s position-calibrated verdicts" in refused.content.decode()
    kept = client_for(editor).post(url, {"name": "Something", "calibrated": "1"})
    assert kept.status_code == 302 and Dataset.objects.filter(name="Something").exists()


def test_the_preview_checks_kept_pairs_against_the_references(ev, editor) -> None:
    """Where exactly one answer of a kept pair matches the prompt's reference, the preview
    counts how often the preferred one does, per source, and warns when most do not."""

    def refer(item: str, text: str) -> None:
        EvalPrompt.objects.filter(evaluation=ev, item_id=item).update(references=[text])

    refer("i1", " Tuned says i1 ")  # the judge preferred tuned: agrees (case, spaces ignored)
    refer("i3", "tuned says i3")  # the vote preferred base: disagrees
    refer("i6", "neither")  # neither answer matches: not checked
    selection = preference_selection(evaluation=ev)
    assert selection.reference_agreement == {
        "judge": {"decided": 1, "agrees": 1},
        "human": {"decided": 1, "agrees": 0},
    }
    assert not selection.against_references  # too few checked to say
    url = reverse("evaluation_preference_data", args=[ev.pk])
    body = client_for(editor).get(url).content.decode()
    assert "decided by votes, 0 of 1 prefer the matching answer" in body
    assert "by the judge in both orders, 1 of 1 prefer" in body
    assert "preference-warning" not in body
    # Five pairs the judge decides (four in both orders, one calibrated) and two by votes,
    # every one preferring the answer the reference calls wrong.
    calibrate(ev, i2="b")
    for item, outcome in (("i4", "a"), ("i5", "b"), ("i8", "b")):
        verdict = PairVerdict.objects.get(evaluation=ev, prompt__item_id=item)
        verdict.votes.all().delete()
        PairVerdict.objects.filter(pk=verdict.pk).update(outcome=outcome, inconsistent=False)
    opted = preference_selection(evaluation=ev, calibrated=True)
    for pair in opted.kept:
        refer(pair.verdict.prompt.item_id, pair.rejected_text)
    opted = preference_selection(evaluation=ev, calibrated=True)
    assert len(opted.kept) == 7 and opted.against_references
    assert opted.reference_agreement["human"] == {"decided": 2, "agrees": 0}
    body = client_for(editor).get(url, {"calibrated": "1"}).content.decode()
    assert "preference-warning" in body and "the judge looks unreliable on this task" in body
    # Votes against the references are the team's call: no warning about the judge.
    PairVerdict.objects.filter(evaluation=ev, prompt__item_id__in=["i1", "i4", "i5", "i8"]).update(
        outcome="tie"
    )
    assert not preference_selection(evaluation=ev).against_references


READ = {"owner": 200, "editor": 200, "viewer": 200, "outsider": 404}
WRITE = {"owner": 302, "editor": 302, "viewer": 403, "outsider": 404}


@pytest.mark.parametrize("persona", list(READ))
def test_preference_data_access(persona: str, personas, ev) -> None:
    url = reverse("evaluation_preference_data", args=[ev.pk])
    client = client_for(personas[persona])
    assert client.get(url).status_code == READ[persona]
    assert client.post(url, {"name": f"by {persona}"}).status_code == WRITE[persona]
    made = Dataset.objects.filter(name=f"by {persona}").exists()
    assert made == (persona in ("owner", "editor"))
    assert client_for(None).get(url).status_code == 302  # to the login page
