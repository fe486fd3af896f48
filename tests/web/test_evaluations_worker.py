"""Evaluations run for real: a Celery worker process judging tiny-llama answers, and an
external OpenAI-compatible endpoint served by a real HTTP server on loopback (429, 500
and garbage included; no patched client)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse

from tests.web import test_finetune_worker
from tests.web.conftest import client_for
from tests.web.test_finetune_worker import finished, job_of, notebook, run_cell
from tests.web.worker_harness import broker, wait_for
from webapp.evaluations.models import Evaluation, JudgeBackend, PairVerdict
from webapp.evaluations.services import judge_backend_create
from webapp.jobs.models import JobStatus
from webapp.jobs.services import job_start
from webapp.projects.models import CellRun, RunStatus
from webapp.projects.services import cell_create, cell_run_create, project_create

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

start_worker = test_finetune_worker.start_worker  # the fixture: a real Celery worker process


@pytest.fixture(autouse=True)
def _private_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[None]:
    """In-process tests queue their tasks in tmp_path, never the developer's var/ queue
    (the worker test's start_worker sets up its own)."""
    if "start_worker" in request.fixturenames:
        yield
        return
    with broker(f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}"):
        yield


class FakeOpenAI(ThreadingHTTPServer):
    """/v1/chat/completions on loopback. Candidate models answer fixed texts; the "judge"
    model prefers the longer answer (so it is consistent under swap), says garbage for
    questions containing `garbage_for`, and the very first request gets a 429."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self.answers = {"alpha": "apple pie with cream", "beta": "pie"}
        self.garbage_for = "\0"
        self.fail_500_once = True
        self.judge_fails: dict[str, Any] | None = None  # a body every judge call gets with a 500
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def verdict(self, content: str) -> str:
        if self.garbage_for in content:
            return "I cannot decide, both are fine."
        a = content.split("[The Start of Assistant A's Answer]\n")[1].split("\n[The End")[0]
        b = content.split("[The Start of Assistant B's Answer]\n")[1].split("\n[The End")[0]
        if len(a) == len(b):
            return "Equally good. [[C]]"
        return "A is more detailed. [[A]]" if len(a) > len(b) else "B is better. [[B]]"


class Handler(BaseHTTPRequestHandler):
    server: FakeOpenAI

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        srv = self.server
        with srv.lock:
            first = not srv.seen
            srv.seen.append((self.headers.get("Authorization", ""), body))
            fail = body["model"] == "judge" and srv.fail_500_once
            if fail:
                srv.fail_500_once = False
        if first:
            self._send(429, {"error": {"message": "slow down"}}, {"Retry-After": "0"})
            return
        if fail or (body["model"] == "judge" and srv.judge_fails):
            self._send(500, srv.judge_fails or {"error": {"message": "boom"}}, {"Retry-After": "0"})
            return
        content = body["messages"][-1]["content"]
        if body["model"] != "judge":
            text = srv.answers[body["model"]]
        elif "[The Start of Assistant's Answer]" in content:  # single-answer grading
            answer = content.split("[The Start of Assistant's Answer]\n")[1].split("\n")[0]
            text = f"Rating: [[{min(10, len(answer) // 2)}]]"
        else:
            text = srv.verdict(content)
        self._send(
            200,
            {
                "id": "c1",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": text},
                    }
                ],
                "usage": {"prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 60},
            },
        )


@pytest.fixture
def fake_openai(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAI]:
    server = FakeOpenAI()
    # The operator allows this loopback judge (the on-premises case), here and in the
    # worker processes a test starts (they inherit the environment).
    allowed = f"127.0.0.1:{server.server_address[1]}"
    settings.EGRESS_ALLOW_HOSTS = allowed
    monkeypatch.setenv("EGRESS_ALLOW_HOSTS", allowed)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def backends(team: Any, owner: Any, server: FakeOpenAI) -> dict[str, JudgeBackend]:
    def make(name: str, model: str, key: str) -> JudgeBackend:
        return judge_backend_create(
            team=team,
            name=name,
            base_url=server.url,
            model=model,
            api_key=key,
            created_by=owner,
            price_prompt_1k=0.01,
            price_completion_1k=0.03,
        )

    return {
        "alpha": make("Alpha", "alpha", "sk-alpha"),
        "beta": make("Beta", "beta", "sk-beta"),
        "judge": make("GPT judge", "judge", "sk-judge-777"),
    }


def run_in_process(cell: Any, user: Any) -> CellRun:
    """The runner exactly as run_cell calls it, in this process (no torch is loaded)."""
    from workers.eval_run import run_evaluation_cell

    run = cell_run_create(cell=cell, created_by=user)
    assert job_start(job_id=run.job_id, celery_task_id="task-1") is not None
    run_evaluation_cell(run, run.job_id, "task-1")
    return CellRun.objects.get(pk=run.pk)


def test_external_endpoints_as_candidates_and_judge_over_loopback(
    transactional_db, team, owner, viewer, fake_openai
) -> None:
    from finetune_core.evaluate import from_bigbench

    b = backends(team, owner, fake_openai)
    fake_openai.garbage_for = from_bigbench("object_counting").items[1].prompt_text[-40:]
    project = project_create(team=team, name="Loopback", created_by=owner)
    cell = cell_create(
        project=project,
        kind="evaluation",
        config={
            "source": "bigbench",
            "bigbench_task": "object_counting",
            "base_model": "",
            "endpoint": b["alpha"].pk,
            "endpoint_2": b["beta"].pk,
            "judge": b["judge"].pk,
            "max_prompts": 3,
            "concurrency": 2,
        },
        created_by=owner,
    )
    run = run_in_process(cell, owner)
    job = job_of(run)
    assert run.status == RunStatus.SUCCEEDED and job.status == JobStatus.SUCCEEDED, run.outputs
    assert job.metrics["judgments_done"] == job.metrics["judgments_total"] == 6
    assert job.metrics["answers_done"] == job.metrics["answers_total"] == 6

    auth = {h for h, body in fake_openai.seen if body["model"] == "judge"}
    assert auth == {"Bearer sk-judge-777"}  # the decrypted key, sent to the endpoint only
    first = fake_openai.seen[0][1]
    assert [body for _, body in fake_openai.seen].count(first) == 2  # the 429 was retried

    ev = Evaluation.objects.get(run=run)
    assert ev.judge == "endpoint GPT judge judge"  # backend name, then its model
    verdicts = {v.prompt.position: v for v in PairVerdict.objects.filter(evaluation=ev)}
    assert [verdicts[i].outcome for i in (0, 2)] == ["a", "a"]  # Alpha's longer answer
    assert not verdicts[0].inconsistent and verdicts[0].ab_verdict == "A"
    assert verdicts[0].ba_verdict == "B" and "[[B]]" in verdicts[0].ba_rationale
    garbage = verdicts[1]
    assert garbage.outcome == "error" and garbage.ab_status == "unparseable"
    assert any("unparseable" in e for e in ev.errors)  # recorded, not dropped
    assert ev.summary["pairs"][0]["wins"] == 2 and ev.summary["pairs"][0]["errors"] == 1
    assert ev.summary["budget"]["spent"] > 0
    names = {t["name"] for t in ev.summary["templates"].values()}
    assert names == {"pairwise", "pairwise-reference", "single", "single-reference"}

    page = client_for(viewer).get(reverse("evaluation_detail", args=[ev.pk])).content.decode()
    assert "apple pie with cream" in page and "I cannot decide" in page

    # A budget cap below one call's cost: judging stops cleanly, every skip is recorded.
    cell.config["budget"] = 0.0001
    cell.save()
    capped = run_in_process(cell, owner)
    assert capped.status == RunStatus.SUCCEEDED, capped.outputs
    ev2 = Evaluation.objects.get(run=capped)
    assert set(ev2.verdicts.values_list("outcome", flat=True)) == {"skipped_budget"}
    assert ev2.summary["pairs"][0]["skipped"] == 3 and ev2.summary["budget"]["calls"] == 0


def test_worker_evaluates_base_vs_adapter_and_picks_the_best_checkpoint(
    start_worker, team, owner, editor, viewer, fake_openai
) -> None:
    worker = start_worker()
    cells = notebook(
        team, owner, worker, max_steps=4, eval_every=2, save_every=2, keep_transferable="False"
    )
    tuned = run_cell(cells["finetune"], editor)
    wait_for(finished(tuned), timeout=120, what="training", worker=worker)
    tuned = CellRun.objects.get(pk=tuned.pk)
    assert tuned.status == RunStatus.SUCCEEDED, job_of(tuned).error

    # Base vs adapter, judged by the local tiny model in the worker.
    cell = cell_create(
        project=cells["project"],
        kind="evaluation",
        config={
            "source": "dataset_cell",
            "dataset_cell": cells["dataset"].pk,
            "base_model": "tiny-llama",
            "adapter_cell": cells["finetune"].pk,
            "judge_model": "tiny-llama",
            "max_prompts": 3,
            "max_new_tokens": 8,
            "judge_max_tokens": 12,
            "quantization": "none",
        },
        created_by=owner,
    )
    run = run_cell(cell, editor)
    wait_for(finished(run), timeout=150, what="evaluation", worker=worker)
    run, job = CellRun.objects.get(pk=run.pk), job_of(run)
    assert run.status == RunStatus.SUCCEEDED, (job.error, worker.tail())
    assert job.metrics["judgments_done"] == job.metrics["judgments_total"] == 6
    assert "eval_phase" in {e.data.get("kind") for e in job.events.all()}
    ev = Evaluation.objects.get(run=run)
    assert ev.prompts.count() == 3 and ev.verdicts.count() == 3
    labels = list(ev.candidates.values_list("label", flat=True))
    assert labels == ["tiny-llama (base)", f"{cells['finetune']} v1"]
    for v in ev.verdicts.all():  # both orders judged, each with the constrained judge's
        assert v.prompt_version.startswith("pairwise")  # confidence and the calibrated outcome
        assert v.ab_status == v.ba_status == "ok" and v.ab_confidence and v.ba_confidence
        assert v.calibrated in ("a", "b", "tie")
    page = client_for(viewer).get(reverse("run_detail", args=[run.pk])).content.decode()
    assert "Open the comparison" in page

    # Pick the best checkpoint by judge (an endpoint judge, reachable from the worker).
    judge = backends(team, owner, fake_openai)["judge"]
    r = client_for(editor).post(reverse("best_checkpoint", args=[tuned.pk]), {"judge": judge.pk})
    pick = CellRun.objects.filter(cell__kind="evaluation").order_by("-pk").first()
    assert r["Location"] == reverse("run_detail", args=[pick.pk])
    wait_for(finished(pick), timeout=150, what="checkpoint evaluation", worker=worker)
    pick = CellRun.objects.get(pk=pick.pk)
    assert pick.status == RunStatus.SUCCEEDED, (job_of(pick).error, worker.tail())
    proposal = pick.outputs["proposal"]
    pairs = Evaluation.objects.get(run=pick).summary["pairs"]
    assert {p["a"] for p in pairs} == {"tiny-llama (base)"} and len(pairs) == 2
    assert proposal["step"] in (2, 4) and proposal["run_id"] == tuned.pk
    assert proposal["label"] in {p["b"] for p in pairs}
    # The best checkpoint is the one the base loses to most.
    assert proposal["win_rate"] == pytest.approx(max(1 - p["win_rate"] for p in pairs))
    body = client_for(editor).get(reverse("run_detail", args=[pick.pk])).content.decode()
    assert f"Make step {proposal['step']} final" in body
    client_for(editor).post(
        reverse("run_select_final", args=[tuned.pk]), {"which": proposal["step"]}
    )
    wait_for(
        lambda: CellRun.objects.get(pk=tuned.pk).outputs.get("final") == str(proposal["step"]),
        timeout=60,
        what="select_final",
        worker=worker,
    )


PROMPTS = b"""{"prompt": "Name a fruit.", "category": "food"}
{"prompt": "Name a dessert.", "category": "food"}
{"prompt": "Name a colour.", "category": "art"}
"""


def test_prompt_file_custom_judge_prompt_and_single_grading(
    transactional_db, team, owner, viewer, fake_openai
) -> None:
    from tests.web.conftest import Upload
    from webapp.datasets.services import dataset_version_create
    from webapp.evaluations.services import judge_prompt_save

    b = backends(team, owner, fake_openai)
    fake_openai.fail_500_once = False
    version = dataset_version_create(
        team=team,
        name="prompts",
        upload=Upload.make("p.jsonl", PROMPTS),
        created_by=owner,
        purpose="evaluation",
    )
    project = project_create(team=team, name="Prompts", created_by=owner)
    system = "You are a strict judge. Answer [[A]], [[B]] or [[C]]."
    user = (
        "Q: {question}\n[The Start of Assistant A's Answer]\n{answer_a}\n[The End of A]\n"
        "[The Start of Assistant B's Answer]\n{answer_b}\n[The End of B]"
    )
    custom = judge_prompt_save(
        project=project, kind="pairwise", system=system, user=user, created_by=owner
    )
    config = {
        "source": "prompt_dataset",
        "prompt_dataset": version.dataset_id,
        "base_model": "",
        "endpoint": b["alpha"].pk,
        "endpoint_2": b["beta"].pk,
        "judge": b["judge"].pk,
    }
    cell = cell_create(project=project, kind="evaluation", config=config, created_by=owner)
    run = run_in_process(cell, owner)
    assert run.status == RunStatus.SUCCEEDED, run.outputs
    ev = Evaluation.objects.get(run=run)
    # No references: the plain pairwise prompt, i.e. the project's own version 1.
    assert len(ev.prompt_versions) == 1 and ev.prompt_versions[0].startswith(f"{custom.label}@")
    assert set(ev.verdicts.values_list("prompt_version", flat=True)) == set(ev.prompt_versions)
    assert set(ev.summary["by_category"]) == {"art", "food"}
    assert set(ev.verdicts.values_list("outcome", flat=True)) == {"a"}
    page = client_for(viewer).get(reverse("evaluation_detail", args=[ev.pk])).content.decode()
    assert "By category" in page and "Name a colour." in page

    cell.config["judge_mode"] = "single"
    cell.save()
    graded = run_in_process(cell, owner)
    ev = Evaluation.objects.get(run=graded)
    assert graded.status == RunStatus.SUCCEEDED and not ev.verdicts.exists()
    ratings = {g["candidate"]: g["mean_rating"] for g in ev.summary["grade_summary"]}
    assert ratings == {"Alpha": 10.0, "Beta": 1.0}  # half the answer's length, capped at 10
    page = client_for(viewer).get(reverse("evaluation_detail", args=[ev.pk])).content.decode()
    assert "Single-answer grades" in page and "10.0/10" in page


REFERENCED = b"""{"prompt": "Name a dessert.", "reference": "pie"}
{"prompt": "Name a pie.", "reference": "pie"}
{"prompt": "Name a rich dessert.", "reference": "Apple pie with cream."}
"""


def test_no_judge_scores_exact_match_only(
    transactional_db, team, owner, viewer, fake_openai
) -> None:
    """judge_mode "none" (the demo's evaluation): one candidate is enough, no judge is
    called, and the run page shows each candidate's exact match with its count."""
    from tests.web.conftest import Upload
    from webapp.datasets.services import dataset_version_create

    b = backends(team, owner, fake_openai)
    fake_openai.fail_500_once = False

    def prompts(name: str, body: bytes) -> int:
        upload = Upload.make(f"{name}.jsonl", body)
        version = dataset_version_create(
            team=team, name=name, upload=upload, created_by=owner, purpose="evaluation"
        )
        return version.dataset_id

    project = project_create(team=team, name="Exact", created_by=owner)
    config = {
        "source": "prompt_dataset",
        "prompt_dataset": prompts("refs", REFERENCED),
        "base_model": "",
        "endpoint": b["alpha"].pk,
        "judge_mode": "none",
    }
    alone = cell_create(project=project, kind="evaluation", config=config, created_by=owner)
    assert alone.config["judge_mode"] == "none"  # one candidate is valid without a judge
    config["endpoint_2"] = b["beta"].pk
    cell = cell_create(project=project, kind="evaluation", config=config, created_by=owner)
    run = run_in_process(cell, owner)
    assert run.status == RunStatus.SUCCEEDED, run.outputs
    assert "judge" not in {body["model"] for _, body in fake_openai.seen}
    ev = Evaluation.objects.get(run=run)
    assert ev.mode == "reference" and not ev.verdicts.exists() and not ev.grades.exists()
    em = {k: m["exact_match"] for k, m in ev.summary["metrics"].items()}
    # alpha says "apple pie with cream" (case and punctuation are normalised), beta "pie".
    assert (em["Alpha"]["value"], em["Beta"]["value"]) == (pytest.approx(1 / 3), 2 / 3)
    page = client_for(viewer).get(reverse("run_detail", args=[run.pk])).content.decode()
    assert "Exact match [95% CI]" in page and "2 / 3" in page and "1 / 3" in page
    assert "Consistency under swap" not in page and "No judged results" not in page

    # Prompts without references leave nothing to score: a message, not an empty result.
    cell.config["prompt_dataset"] = prompts("bare", PROMPTS)
    cell.save()
    failed = run_in_process(cell, owner)
    assert failed.status == RunStatus.FAILED
    assert "nothing to score" in failed.outputs["error"]


def test_cancelled_job_stops_before_any_call_and_user_errors_fail_the_run(
    transactional_db, team, owner, cells, fake_openai
) -> None:
    from webapp.jobs.services import job_cancel
    from workers.eval_run import run_evaluation_cell

    b = backends(team, owner, fake_openai)
    config = {
        "source": "bigbench",
        "bigbench_task": "object_counting",
        "base_model": "",
        "endpoint": b["alpha"].pk,
        "endpoint_2": b["beta"].pk,
        "judge": b["judge"].pk,
    }
    project = cells["finetune"].project
    cell = cell_create(project=project, kind="evaluation", config=config, created_by=owner)
    run = cell_run_create(cell=cell, created_by=owner)
    job_start(job_id=run.job_id, celery_task_id="task-1")
    job_cancel(job=job_of(run), by=owner)
    run_evaluation_cell(run, run.job_id, "task-1")
    assert CellRun.objects.get(pk=run.pk).status == RunStatus.CANCELLED
    assert not Evaluation.objects.filter(run=run).exists() and fake_openai.seen == []

    # A fine-tune cell that never ran: a message for the user, on the run and the job.
    cell.config.update(endpoint_2=None, adapter_cell=cells["finetune"].pk)
    cell.save()
    failed = run_in_process(cell, owner)
    assert failed.status == RunStatus.FAILED
    assert "has no finished run yet" in failed.outputs["error"]
    assert "has no finished run yet" in job_of(failed).error


def test_live_answer_counts_move_per_batch_and_cancel_between_batches(
    transactional_db, team, owner, tmp_path
) -> None:
    """The live view counts local answers per generated batch (not per candidate), cached
    ones at once, and a cancel lands between two batches."""
    from finetune_core.contracts.hooks import Stopped
    from finetune_core.data.types import Message
    from finetune_core.evaluate import (
        AnswerCache,
        Candidate,
        Decoding,
        EvalSet,
        ModelPool,
        generate_answers,
        make_item,
    )
    from webapp.jobs.services import job_cancel, job_create
    from workers.eval_run import Counts
    from workers.reporter import Line, Reporter

    evalset = EvalSet("five", [make_item([Message("user", f"Say {n}.")]) for n in range(5)])
    cands = [Candidate("base", "tiny-llama", label="tiny")]
    cache = AnswerCache(tmp_path / "answers.sqlite")

    def run(job_id: int) -> list[int]:
        seen: list[int] = []

        counts = Counts(len(evalset) * len(cands), 0)

        def recording(phase: str, current: int, total: int | None, info: dict) -> Line:
            line = counts.update(phase, current, total, info)
            seen.append(counts.answers_done)
            return line

        # every_s=0: every update reaches the job (and its check)
        progress = Reporter(job_id, "task-1", line=recording, phase=counts.start, every_s=0.0)
        dec = Decoding(max_new_tokens=2)
        kwargs = {"decoding": dec, "cache": cache, "pool": ModelPool("none"), "batch_size": 2}
        generate_answers(cands, evalset, hooks=progress.hooks(), **kwargs)
        return seen

    job = job_create(team=team, kind="evaluation", created_by=owner)
    job_start(job_id=job.pk, celery_task_id="task-1")
    assert run(job.pk) == [0, 2, 4, 5]  # batches of 2, 2 and 1
    assert job_of_id(job.pk).progress_current == 5
    assert run(job.pk) == [5]  # all cached: done at once

    cache = AnswerCache(tmp_path / "fresh.sqlite")
    job_cancel(job=job_of_id(job.pk), by=owner)
    with pytest.raises(Stopped):  # the job's check, between batches, finds it cancelled
        run(job.pk)


def job_of_id(job_id: int) -> Any:
    from webapp.jobs.models import Job

    return Job.objects.get(pk=job_id)
