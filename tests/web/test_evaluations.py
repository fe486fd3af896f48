"""Evaluations in the notebook: the cell kind, stored results, the comparison view, votes,
agreement, export, sharing, judge backends and prompts; every view checked per persona."""

from __future__ import annotations

import csv
import html
import io
import json
import tracemalloc
from typing import Any

import pytest
from django.urls import reverse

from finetune_core.contracts.prompts import PROMPT_FIELDS
from tests.web.conftest import client_for
from webapp.evaluations.crypto import decrypt
from webapp.evaluations.models import (
    Evaluation,
    HumanVote,
    JudgeBackend,
    PairVerdict,
    PromptKind,
)
from webapp.evaluations.selectors import Filters, diff_html, prompt_rows
from webapp.evaluations.services import (
    evaluation_store,
    human_vote_cast,
)
from webapp.projects.cell_kinds import REGISTRY
from webapp.projects.models import Cell, CellRun, Project, RunStatus
from webapp.projects.services import cell_create, cell_run_create


def judgment(value: str | None, raw: str, status: str = "ok") -> dict[str, Any]:
    return {
        "value": value,
        "status": status,
        "raw": raw,
        "error": "",
        "attempts": 1,
        "prompt_version": "pairwise@abc",
        "constrained": True,
        "confidence": 0.9,
    }


def result_dict() -> dict[str, Any]:
    """The shape finetune_core.evaluate.run_evaluation returns, for 3 prompts and 2 models."""
    items = [
        {"id": "i1", "category": "sports", "prompt": "Is the sky blue?", "references": ["yes"]},
        {"id": "i2", "category": "sports", "prompt": "Count to three.", "references": []},
        {"id": "i3", "category": "math", "prompt": "What is 2+2?", "references": ["4"]},
    ]
    texts = {
        "base": {"i1": "no idea", "i2": "one two", "i3": "five"},
        "tuned": {"i1": "yes it is", "i2": "one two three", "i3": "4"},
    }
    answers = {
        c: {
            i: {"text": t, "status": "ok", "error": "", "completion_tokens": 3}
            for i, t in by.items()
        }
        for c, by in texts.items()
    }
    judgments = [
        # tuned wins in both orders
        ("i1", "B", "A", "b", False),
        # the verdict flips with the order: a tie, flagged
        ("i2", "A", "A", "tie", True),
        ("i3", "B", "A", "b", False),
    ]
    return {
        "eval_set": {"name": "demo-set", "n_items": 3},
        "items": items,
        "candidates": [
            {"kind": "base", "model": "tiny-llama", "label": "base"},
            {"kind": "adapter", "model": "tiny-llama", "adapter": "/x", "label": "tuned"},
        ],
        "answers": answers,
        "judgments": [
            {
                "item_id": i,
                "category": next(it["category"] for it in items if it["id"] == i),
                "a": "base",
                "b": "tuned",
                "outcome": out,
                "inconsistent": flip,
                "prompt_version": "pairwise@abc",
                "ab": judgment(ab, f"Rationale AB {i} [[{ab}]]"),
                "ba": judgment(ba, f"Rationale BA {i} [[{ba}]]"),
                "calibrated": "b" if flip else out,
            }
            for i, ab, ba, out, flip in judgments
        ],
        "pairs": [
            {
                "a": "base",
                "b": "tuned",
                "wins": 0,
                "ties": 1,
                "losses": 2,
                "errors": 0,
                "skipped": 0,
                "n": 3,
                "win_rate": 1 / 6,
                "ci_low": 0.0,
                "ci_high": 0.5,
                "inconsistent": 1,
                "consistency": 2 / 3,
            }
        ],
        "by_category": {"math": [], "sports": []},
        "metrics": {"base": {"exact_match": {"value": 0.0, "low": 0.0, "high": 0.0, "n": 2}}},
        "judge": {
            "backend": "LocalBackend",
            "model": "tiny-llama",
            "prompt_versions": ["pairwise@abc"],
        },
        "errors": [],
        "templates": {
            "pairwise@abc": {"name": "pairwise", "system": "MT-Bench judge.", "user": "{question}"}
        },
    }


@pytest.fixture
def eval_cell(project: Project, owner: Any) -> Cell:
    return cell_create(
        project=project,
        kind="evaluation",
        config={
            "source": "bigbench",
            "bigbench_task": "sports_understanding",
            "base_model_2": "tiny-llama",
        },
        created_by=owner,
    )


@pytest.fixture
def ev(eval_cell: Cell, owner: Any) -> Evaluation:
    run = cell_run_create(cell=eval_cell, created_by=owner)
    CellRun.objects.filter(pk=run.pk).update(status=RunStatus.SUCCEEDED)
    return evaluation_store(run=run, result=result_dict(), mode="pairwise")


def test_kind_is_registered_with_its_form_and_validates_candidates(project, owner) -> None:
    kind = REGISTRY["evaluation"]
    assert kind.runnable and kind.run_template and kind.cell_template
    with pytest.raises(Exception, match="at least two candidates"):
        cell_create(
            project=project,
            kind="evaluation",
            config={"source": "bigbench", "bigbench_task": "object_counting"},
            created_by=owner,
        )
    with pytest.raises(Exception, match="Choose one"):
        cell_create(
            project=project,
            kind="evaluation",
            config={"source": "dataset_cell", "base_model_2": "tiny-llama"},
            created_by=owner,
        )


def test_only_the_chosen_source_is_kept(project, owner, dataset_version) -> None:
    ds = cell_create(
        project=project,
        kind="dataset",
        config={"dataset": dataset_version.dataset_id},
        created_by=owner,
    )
    cell = cell_create(
        project=project,
        kind="evaluation",
        config={
            "source": "dataset_cell",
            "dataset_cell": ds.pk,
            "bigbench_task": "object_counting",
            "base_model_2": "tiny-llama",
        },
        created_by=owner,
    )
    assert cell.config["dataset_cell"] == ds.pk and cell.config["bigbench_task"] is None


def test_store_keeps_both_orders_rationale_and_prompt_version(ev: Evaluation) -> None:
    assert ev.candidates.count() == 2 and ev.prompts.count() == 3
    flipped = PairVerdict.objects.get(evaluation=ev, prompt__item_id="i2")
    assert flipped.inconsistent and flipped.outcome == "tie"
    assert flipped.ab_verdict == "A" and flipped.ba_verdict == "A"
    assert "Rationale BA i2" in flipped.ba_rationale
    assert flipped.prompt_version == "pairwise@abc"
    assert flipped.ab_confidence == 0.9 and flipped.calibrated == "b"
    assert ev.prompt_versions == ["pairwise@abc"]


def test_comparison_page_shows_leaderboard_pairs_answers_and_flags(ev, viewer) -> None:
    page = client_for(viewer).get(reverse("evaluation_detail", args=[ev.pk]))
    body = page.content.decode()
    assert page.status_code == 200
    assert 'class="ci-chart"' in body and "<rect" in body  # CI bars, server-side SVG
    assert "17% [0%, 50%]" in body  # adjusted win rate of base with its CI
    assert "one two three" in body and "Rationale AB i1" in body
    assert body.count("inconsistent: flipped with the order") == 1
    assert "(90% sure)" in body and "position-calibrated: tuned" in body
    assert "vote-form" not in body  # viewers read only
    assert "evaluations.js" in body


def test_filters_lost_inconsistent_search_and_disagreement(ev, editor) -> None:
    def ids(**f: Any) -> list[str]:
        return [r.prompt.item_id for r in prompt_rows(evaluation=ev, filters=Filters(**f))]

    assert ids(lost="base") == ["i1", "i3"]
    assert ids(lost="tuned") == []
    assert ids(inconsistent=True) == ["i2"]
    assert ids(q="three") == ["i2"]
    assert ids(disagree=True) == []
    human_vote_cast(verdict=PairVerdict.objects.get(prompt__item_id="i1"), user=editor, vote="a")
    assert ids(disagree=True) == ["i1"]
    page = client_for(editor).get(reverse("evaluation_detail", args=[ev.pk]) + "?disagree=1")
    assert "judge disagreed" in page.content.decode()


def test_votes_by_editors_update_agreement_viewers_cannot(ev, owner, editor, viewer) -> None:
    verdicts = {v.prompt.item_id: v for v in PairVerdict.objects.filter(evaluation=ev)}
    url = lambda i: reverse("verdict_vote", args=[verdicts[i].pk])  # noqa: E731
    assert client_for(viewer).post(url("i1"), {"vote": "b"}).status_code == 403
    assert client_for(editor).post(url("i1"), {"vote": "nope"}).status_code == 400
    r = client_for(editor).post(url("i1"), {"vote": "b"}, HTTP_HX_REQUEST="true")
    assert r.status_code == 200 and "ed=b" in r.content.decode()
    client_for(editor).post(url("i1"), {"vote": "b"})  # voting again changes, not adds
    client_for(owner).post(url("i3"), {"vote": "a"})
    client_for(owner).post(url("i2"), {"vote": "tie"})
    assert HumanVote.objects.filter(verdict__evaluation=ev).count() == 3
    body = client_for(viewer).get(reverse("evaluation_detail", args=[ev.pk])).content.decode()
    # judge b/b/tie vs human b/a/tie: 2 of 3 agree; without ties 1 of 2
    assert "67% over 3 votes; without ties 50% over 2" in body
    assert "Consistency under swap" in body and "67%" in body


def test_comparison_guides_reviewers_keys_empty_filters_and_categories(ev, editor, viewer) -> None:
    url = reverse("evaluation_detail", args=[ev.pk])
    mine = client_for(editor).get(url).content.decode()
    # The shortcuts are on the page, not only in the README; voting keys only for voters.
    assert 'id="keys-help"' in mine and "<kbd>j</kbd>" in mine and "<kbd>a</kbd>" in mine
    theirs = client_for(viewer).get(url).content.decode()
    assert "<kbd>j</kbd>" in theirs and "<kbd>a</kbd>" not in theirs
    # Categories with no judged pair are not shown as an empty table.
    assert "By category" not in theirs
    empty = client_for(viewer).get(url + "?q=zzzz").content.decode()
    assert "No prompt matches these filters." in empty
    assert 'href="?">Clear the filters</a> to see all 3' in empty


def test_evaluation_form_says_what_to_do(project, owner) -> None:
    form = REGISTRY["evaluation"].form(
        {"source": "bigbench", "bigbench_task": "object_counting", "judge_mode": "auto"},
        project=project,
        position=1,
    )
    assert not form.is_valid()
    assert "set the judge mode to single-answer grading" in " ".join(form.non_field_errors())
    # No endpoints and no prompt datasets yet: the empty lists say where to add them.
    assert "Judge backends and endpoints" in form.fields["endpoint"].help_text
    assert "Evaluation prompts" in form.fields["prompt_dataset"].help_text


def test_diff_marks_words_only_in_each_answer(ev, viewer) -> None:
    assert str(diff_html("one two", "one two three")) == "one two <ins>three</ins>"
    assert "<del>&lt;b&gt;</del>" in str(diff_html("<b> x", "x"))  # escaped
    v = PairVerdict.objects.get(prompt__item_id="i2")
    body = client_for(viewer).get(reverse("verdict_diff", args=[v.pk])).content.decode()
    assert "<ins>three</ins>" in body


def test_export_csv_and_json(ev, viewer) -> None:
    r = client_for(viewer).get(reverse("evaluation_export", args=[ev.pk, "csv"]))
    rows = list(csv.DictReader(io.StringIO(r.content.decode())))
    assert r["Content-Type"].startswith("text/csv") and len(rows) == 3
    assert rows[1]["inconsistent"] == "True" and rows[1]["answer_b"] == "one two three"
    doc = json.loads(
        client_for(viewer).get(reverse("evaluation_export", args=[ev.pk, "json"])).content
    )
    assert doc["candidates"] == ["base", "tuned"] and doc["summary"]["pairs"][0]["losses"] == 2
    assert doc["rows"][0]["rationale_ab"].startswith("Rationale AB")
    assert (
        client_for(viewer).get(reverse("evaluation_export", args=[ev.pk, "xml"])).status_code == 404
    )


def test_share_link_is_read_only_for_team_members_only(ev, owner, editor, viewer, outsider) -> None:
    assert client_for(viewer).post(reverse("evaluation_share", args=[ev.pk])).status_code == 403
    client_for(editor).post(reverse("evaluation_share", args=[ev.pk]))
    ev.refresh_from_db()
    url = reverse("evaluation_shared", args=[ev.share_token])
    body = client_for(editor).get(url).content.decode()
    assert "read-only" in body and "vote-form" not in body
    assert client_for(viewer).get(url).status_code == 200
    assert client_for(outsider).get(url).status_code == 404
    assert client_for(None).get(url).status_code == 302  # to the login page
    client_for(owner).post(reverse("evaluation_share", args=[ev.pk]), {"action": "unshare"})
    assert client_for(viewer).get(url).status_code == 404


def test_backend_key_is_encrypted_and_never_shown(team, owner, editor, viewer) -> None:
    url = reverse("evaluation_backends", args=[team.pk])
    data = {
        "name": "GPT",
        "base_url": "https://api.example.com/v1",
        "model": "gpt-4o",
        "api_key": "sk-secret-123456",
    }
    assert client_for(viewer).post(url, data).status_code == 403
    assert client_for(editor).post(url, data).status_code == 302
    backend = JudgeBackend.objects.get(team=team)
    assert "sk-secret" not in backend.api_key_encrypted
    assert decrypt(backend.api_key_encrypted) == "sk-secret-123456"
    page = client_for(owner).get(url).content.decode()
    assert "gpt-4o" in page and "sk-secret" not in page and "set (hidden)" in page
    assert client_for(viewer).post(url, {"delete": backend.pk}).status_code == 403
    client_for(editor).post(url, {"delete": backend.pk})
    assert not JudgeBackend.objects.filter(pk=backend.pk).exists()


def test_judge_prompts_are_versioned_and_validated(project, owner, editor, viewer) -> None:
    url = reverse("evaluation_prompts", args=[project.pk])
    good = {"kind": "pairwise", "system": "Be fair.", "user": "{question}\n{answer_a}\n{answer_b}"}
    assert client_for(viewer).post(url, good).status_code == 403
    client_for(editor).post(url, good)
    client_for(editor).post(url, {**good, "system": "Be fairer."})
    bad = client_for(editor).post(url, {**good, "user": "{question} {answer_a}"})
    assert bad.status_code == 400 and "{answer_b}" in bad.content.decode()
    stray = client_for(editor).post(url, {**good, "user": "{question}{answer_a}{answer_b}{x}"})
    assert stray.status_code == 400
    versions = list(project.judge_prompts.values_list("version", "system"))
    assert versions == [(2, "Be fairer."), (1, "Be fair.")]
    assert "pairwise-v2" in client_for(viewer).get(url).content.decode()
    # The editor starts from the newest text of the chosen kind.
    assert (
        "Be fairer.</textarea>" in client_for(editor).get(url + "?kind=pairwise").content.decode()
    )


@pytest.mark.parametrize(
    "placeholder",
    ["{question:>300000000}", "{question.x}", "{question[0]}", "{0}", "{question!r}"],
)
def test_judge_prompt_with_more_than_plain_fields_is_refused(project, editor, placeholder) -> None:
    url = reverse("evaluation_prompts", args=[project.pk])
    user = "{question}\n{answer_a}\n{answer_b}\n" + placeholder
    tracemalloc.start()
    try:
        bad = client_for(editor).post(url, {"kind": "pairwise", "system": "Be fair.", "user": user})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert bad.status_code == 400 and peak < 50_000_000  # nothing was padded to 300 MB
    page = html.unescape(bad.content.decode())
    assert f"Placeholder {placeholder} is not allowed" in page
    assert "{question}, {answer_a}, {answer_b}" in page
    assert not project.judge_prompts.exists()


def test_prompt_kinds_are_the_engines() -> None:
    assert set(PromptKind.values) == set(PROMPT_FIELDS)


def test_prompt_editor_starts_from_the_text_the_last_evaluation_used(ev, editor) -> None:
    url = reverse("evaluation_prompts", args=[ev.run.cell.project_id])
    body = client_for(editor).get(url + "?kind=pairwise").content.decode()
    assert "MT-Bench judge.</textarea>" in body
    assert "MT-Bench judge." not in client_for(editor).get(url + "?kind=single").content.decode()


def test_notebook_cell_shows_inline_summary(ev, viewer) -> None:
    page = client_for(viewer).get(reverse("project_detail", args=[ev.run.cell.project_id]))
    body = page.content.decode()
    assert "eval-summary" in body and "Consistency under swap" in body
    assert reverse("evaluation_detail", args=[ev.pk]) in body


def test_best_checkpoint_creates_an_evaluation_run(cells, cell_run, owner, editor, viewer) -> None:
    url = reverse("best_checkpoint", args=[cell_run.pk])
    r = client_for(editor).post(url, follow=True)
    assert "Only a finished fine-tune run" in r.content.decode()
    CellRun.objects.filter(pk=cell_run.pk).update(
        status=RunStatus.SUCCEEDED, outputs={"checkpoints": [{"step": 2}, {"step": 4}]}
    )
    page = client_for(editor).get(reverse("run_detail", args=[cell_run.pk])).content.decode()
    assert "Pick the best checkpoint by judge" in page
    assert (
        "Pick the best checkpoint"
        not in client_for(viewer).get(reverse("run_detail", args=[cell_run.pk])).content.decode()
    )
    assert client_for(viewer).post(url).status_code == 403
    r = client_for(editor).post(url)
    run = CellRun.objects.filter(cell__kind="evaluation").get()
    assert r.status_code == 302 and r["Location"] == reverse("run_detail", args=[run.pk])
    assert run.inputs["checkpoints_of"] == cells["finetune"].pk
    assert run.inputs["dataset_cell"] == cells["dataset"].pk


def test_proposal_offers_the_existing_select_final(ev, cell_run, editor, viewer) -> None:
    proposal = {"run_id": cell_run.pk, "step": 4, "win_rate": 0.7, "ci_low": 0.5, "ci_high": 0.9}
    ev.summary["proposal"] = proposal
    ev.save()
    body = client_for(editor).get(reverse("evaluation_detail", args=[ev.pk])).content.decode()
    assert "Make step 4 final" in body and reverse("run_select_final", args=[cell_run.pk]) in body
    # The fine-tune run's page shows the judge's pick to everyone in the team.
    page = client_for(viewer).get(reverse("run_detail", args=[cell_run.pk])).content.decode()
    assert "Best checkpoint by judge: <strong>step 4</strong>, win rate vs the base 70%" in page


VIEWS = [
    ("evaluation_detail", "get", lambda f: [f["ev"].pk], "view"),
    ("evaluation_export", "get", lambda f: [f["ev"].pk, "csv"], "view"),
    ("verdict_diff", "get", lambda f: [f["verdict"].pk], "view"),
    ("evaluation_backends", "get", lambda f: [f["team"].pk], "view"),
    ("evaluation_prompts", "get", lambda f: [f["project"].pk], "view"),
    ("verdict_vote", "post", lambda f: [f["verdict"].pk], "edit"),
    ("evaluation_share", "post", lambda f: [f["ev"].pk], "edit"),
    ("best_checkpoint", "post", lambda f: [f["cell_run"].pk], "edit"),
    ("evaluation_backends", "post", lambda f: [f["team"].pk], "edit"),
    ("evaluation_prompts", "post", lambda f: [f["project"].pk], "edit"),
]


@pytest.mark.parametrize(("name", "method", "args", "need"), VIEWS)
def test_ownership_of_every_view(name, method, args, need, ev, cell_run, personas) -> None:
    f = {
        "ev": ev,
        "verdict": PairVerdict.objects.filter(evaluation=ev).first(),
        "team": ev.run.cell.project.team,
        "project": ev.run.cell.project,
        "cell_run": cell_run,
    }
    url = reverse(name, args=args(f))
    data = {"vote": "a"} if name == "verdict_vote" else {}
    status = {p: getattr(client_for(u), method)(url, data).status_code for p, u in personas.items()}
    assert status["outsider"] == 404
    assert client_for(None).get(url).status_code in (302, 405)
    if need == "view":
        assert status["viewer"] == status["editor"] == status["owner"] == 200
    else:
        assert status["viewer"] == 403
        assert status["editor"] in (200, 302, 400)  # allowed; 400: the empty form is invalid


def test_prompt_dataset_runs_on_what_its_validation_read(team, owner) -> None:
    """The evaluation cell reads an uploaded prompt set with the validator's reader:
    BIG-bench "target" as references, and a bad file fails with its line numbers."""
    from finetune_core.errors import DataError
    from tests.web.conftest import Upload
    from webapp.datasets.services import dataset_version_create
    from workers.eval_run import eval_set

    def upload(name: str, body: bytes) -> int:
        version = dataset_version_create(
            team=team,
            name=name,
            upload=Upload.make(f"{name}.jsonl", body),
            created_by=owner,
            purpose="evaluation",
        )
        return version.dataset_id

    good = upload("quiz", b'{"prompt": "Sky?", "target": "blue"}\n{"prompt": "Grass?"}\n')
    evalset = eval_set({"source": "prompt_dataset", "prompt_dataset": good, "max_prompts": 5})
    assert [i.references for i in evalset.items] == [("blue",), ()]
    bad = upload("bad", b'{"prompt": "ok"}\n{"prompt": 1}\nnot json\n')
    with pytest.raises(DataError, match=r"line 2: .*; line 3: not valid JSON"):
        eval_set({"source": "prompt_dataset", "prompt_dataset": bad})


def test_failed_run_says_how_to_recover(eval_cell, owner, viewer) -> None:
    run = cell_run_create(cell=eval_cell, created_by=owner)
    error = "The prompt file has problems (line 2: not valid JSON); see its dataset page."
    CellRun.objects.filter(pk=run.pk).update(status=RunStatus.FAILED, outputs={"error": error})
    page = client_for(viewer).get(reverse("run_detail", args=[run.pk])).content.decode()
    assert "line 2: not valid JSON" in page and "run the cell again" in page
    assert f"#cell-{eval_cell.pk}" in page


def test_rationale_length_zero_asks_the_local_judge_for_its_verdict_first(project, owner) -> None:
    import torch

    from finetune_core.data.types import Message
    from finetune_core.evaluate import Answer, EvalSet, ModelPool, make_item
    from workers.eval_run import VERDICT_TOKENS, judge

    config = {"source": "bigbench", "bigbench_task": "object_counting", "judge_max_tokens": 0}
    config |= {
        "base_model": "tiny-llama",
        "base_model_2": "tiny-llama",
        "judge_model": "tiny-llama",
    }
    cell = cell_create(project=project, kind="evaluation", config=config, created_by=owner)
    assert cell.config["judge_max_tokens"] == 0  # kept, not taken for blank
    pool = ModelPool("none", torch.float32)
    fast = judge(cell.config, project.team_id, project.pk, pool)
    assert fast.verdict_first and fast.max_tokens == VERDICT_TOKENS
    item = make_item([Message("user", "Is 4 even?")], ["yes"])
    (result,) = fast.compare(EvalSet("t", [item]), {"x": {item.id: Answer("yes")},
                                                    "y": {item.id: Answer("no")}})  # fmt: skip
    for j in (result.ab, result.ba):  # the verdict alone, no text generated before it
        assert j.status == "ok" and j.raw in ("[[A]]", "[[B]]", "[[C]]")
    # A length above 0 (or none given: 256) keeps the rationale before the verdict.
    for tokens, expect in ((12, 12), (None, 256)):
        slow = judge({**cell.config, "judge_max_tokens": tokens}, project.team_id, project.pk, pool)
        assert not slow.verdict_first and slow.max_tokens == expect


def test_rationale_length_zero_asks_an_endpoint_judge_for_its_verdict_in_a_few_tokens(
    project, owner, settings
) -> None:
    """An endpoint judge cannot be read off probabilities: with length 0 it is asked for its
    verdict first, in VERDICT_TOKENS tokens, over HTTP (a real server on loopback)."""
    from finetune_core.data.types import Message
    from finetune_core.evaluate import Answer, EvalSet, make_item
    from finetune_core.evaluate.prompts import PAIRWISE_REFERENCE_VERDICT_FIRST
    from tests.core.test_eval_endpoint import Loopback
    from webapp.evaluations.services import judge_backend_create
    from workers.eval_run import VERDICT_TOKENS, judge

    server = Loopback(respond=lambda body: "[[B]] B matches the reference.")
    try:
        settings.EGRESS_ALLOW_HOSTS = server.url.split("/")[2]
        backend = judge_backend_create(team=project.team, name="loop", base_url=server.url,
                                       model="judge-model", api_key="k", created_by=owner)  # fmt: skip
        inputs = {"judge": backend.pk, "judge_max_tokens": 0}
        fast = judge(inputs, project.team_id, project.pk, pool=None)
        item = make_item([Message("user", "What is 2 plus 2?")], ["4"])
        answers = {"x": {item.id: Answer("5")}, "y": {item.id: Answer("4")}}
        (result,) = fast.compare(EvalSet("t", [item]), answers)
    finally:
        server.close()
    assert [r["max_tokens"] for r in server.requests] == [VERDICT_TOKENS, VERDICT_TOKENS]
    system = server.requests[0]["messages"][0]["content"]
    assert system == PAIRWISE_REFERENCE_VERDICT_FIRST.system  # the verdict first, then why
    assert (result.ab.value, result.ba.value) == ("B", "B")  # y won as B, then lost as B
    assert result.inconsistent
