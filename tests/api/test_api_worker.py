"""The whole API journey on a real Celery worker, driven by the real `openai` SDK.

Upload -> validated by the worker -> fine-tune tiny-llama for 2 steps -> events and
checkpoints -> chat with the fine-tuned model and a checkpoint (plain and streamed) ->
cancel a second job -> delete the model and the file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import openai
import pytest

from tests.web.worker_harness import Worker
from webapp.api.models import ChatCompletion
from webapp.datasets.models import DatasetVersion
from webapp.ops.models import WorkerHost
from webapp.ops.workers import measured_generation
from webapp.projects.models import CellRun, RunStatus
from webapp.projects.services import cell_create, cell_run_create, project_create

pytestmark = [pytest.mark.integration, pytest.mark.timeout(480)]

ROWS = [(f"What is {i} plus one?", f"{i + 1}") for i in range(20)]
GOOD = "".join(
    json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
    + "\n"
    for q, a in ROWS
).encode()
BAD = GOOD.splitlines(keepends=True)[0] + b"{not json\n" + b'{"messages": [{"role": "robot"}]}\n'
FAST = {
    "max_steps": 2,
    "quantization": "none",
    "preset": "quick",
    "max_length": 128,
    "lora_r": 4,
    "save_every": 1,
    "eval_every": 1,
    "warmup_ratio": 0.0,
    # Off: its discriminator job would hold the one test worker before the chat requests.
    "keep_transferable": False,
}

SHORT = {k: v for k, v in FAST.items() if k != "lora_r"}


def until(get: Callable[[], Any], done: Callable[[Any], bool], worker: Worker, what: str) -> Any:
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        value = get()
        if done(value):
            return value
        assert worker.proc.poll() is None, f"worker died waiting for {what}:\n{worker.tail()}"
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}:\n{worker.tail()}")


def test_files_jobs_models_and_chat_on_a_real_worker(
    start_worker, sdk, owner_key, team, owner
) -> None:
    worker = start_worker()
    client = sdk(owner_key)
    good = client.files.create(file=("plus.jsonl", GOOD), purpose="fine-tune")
    bad = client.files.create(file=("bad.jsonl", BAD), purpose="fine-tune")
    settled = ("processed", "error")
    bad = until(lambda: client.files.retrieve(bad.id), lambda f: f.status in settled, worker, "bad")
    assert bad.status == "error" and "line 2" in bad.status_details, bad.status_details
    assert "invalid_json" in bad.status_details and "line 3" in bad.status_details
    good = until(
        lambda: client.files.retrieve(good.id), lambda f: f.status in settled, worker, "ok"
    )
    assert good.status == "processed", good.status_details

    job = client.fine_tuning.jobs.create(
        model="tiny-llama",
        training_file=good.id,
        suffix="plus",
        method={"type": "supervised", "supervised": {"hyperparameters": {"batch_size": 2}}},
        # Tunebook-only settings through extra_body, with the short aliases too.
        extra_body={"tunebook": {**SHORT, "rank": 4, "alpha": 8}},
    )
    assert job.model_extra["tunebook"]["config"]["lora_alpha"] == 8
    assert job.model_extra["tunebook"]["config"]["lora_r"] == 4
    finished = ("succeeded", "failed", "cancelled")
    job = until(
        lambda: client.fine_tuning.jobs.retrieve(job.id),
        lambda j: j.status in finished,
        worker,
        "job",
    )
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model == f"ft:tiny-llama:lab:plus:{job.id}"
    assert job.finished_at >= job.created_at
    # 2 steps x batch 2 rows of the packed data; tokens per row from the run's manifest.
    assert job.trained_tokens is not None and job.trained_tokens > 0

    events = list(client.fine_tuning.jobs.list_events(job.id, limit=100))
    metrics = [e for e in events if e.type == "metrics"]
    assert metrics and metrics[0].object == "fine_tuning.job.event"
    assert any(e.message.startswith("Step 2/2: training loss=") for e in metrics), metrics
    assert any(e.data.get("train_loss") is not None for e in metrics)
    assert "Job succeeded" in [e.message for e in events]

    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.step_number for c in checkpoints] == [2, 1]
    assert checkpoints[0].fine_tuned_model_checkpoint == f"{job.fine_tuned_model}:ckpt-step-2"
    assert checkpoints[0].metrics.train_loss is not None

    models = {m.id for m in client.models.list()}
    assert {
        "tiny-llama",
        job.fine_tuned_model,
        checkpoints[1].fine_tuned_model_checkpoint,
    } <= models
    assert client.models.retrieve(job.fine_tuned_model).owned_by == "lab"

    ask = [{"role": "user", "content": "What is 3 plus one?"}]
    answer = client.chat.completions.create(
        model=job.fine_tuned_model, messages=ask, max_tokens=6, temperature=0
    )
    assert answer.object == "chat.completion" and answer.model == job.fine_tuned_model
    assert isinstance(answer.choices[0].message.content, str)
    assert answer.choices[0].finish_reason in ("stop", "length")
    assert answer.usage.prompt_tokens > 0
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens

    chunks = list(
        client.chat.completions.create(
            model=checkpoints[1].fine_tuned_model_checkpoint,
            messages=ask,
            max_tokens=6,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason in ("stop", "length")
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens > 0
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(streamed) > 0 or chunks[-1].usage.completion_tokens >= 0

    # OpenAI's stop, top_p and seed reach the worker's generation.
    say = {"model": "tiny-llama", "messages": ask, "max_tokens": 16}
    full = client.chat.completions.create(**say, temperature=0).choices[0].message.content
    cut = full[len(full) // 2 :][:2]
    assert len(full) >= 4 and cut.strip(), full
    stopped = client.chat.completions.create(**say, temperature=0, stop=[cut, "never seen"])
    assert stopped.choices[0].message.content == full[: full.find(cut)]
    assert stopped.choices[0].finish_reason == "stop"
    row = ChatCompletion.objects.latest("pk")
    assert row.stop == [cut, "never seen"] and row.top_p == 1.0 and row.seed is None
    # The worker that answered, and how long it took: its measured generation throughput.
    host = WorkerHost.objects.get(name=row.served_by)
    assert row.generate_s > 0 and "gpu" in host.queues
    assert measured_generation(host)[0].startswith("tiny-llama (nf4): ")
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(**say, temperature=0, stop=cut, stream=True)
        if c.choices
    )
    assert streamed == full[: full.find(cut)]  # the stop string never went out
    sampled = [
        client.chat.completions.create(**say, temperature=1.0, top_p=0.9, seed=s)
        .choices[0]
        .message.content
        for s in (7, 7, 8)
    ]
    assert sampled[0] == sampled[1] != sampled[2]
    assert ChatCompletion.objects.latest("pk").top_p == 0.9

    second = client.fine_tuning.jobs.create(
        model="tiny-llama",
        training_file=good.id,
        extra_body={"tunebook": {**FAST, "max_steps": 400}},
    )
    assert client.fine_tuning.jobs.cancel(second.id).status == "cancelled"
    assert [j.id for j in client.fine_tuning.jobs.list()][:2] == [second.id, job.id]

    # A notebook's fine-tune cell serves through /v1/ as well.
    version = DatasetVersion.objects.get(pk=int(good.id.split("-")[1]))
    project = project_create(team=team, name="Adders", created_by=owner)
    data_cell = cell_create(
        project=project, kind="dataset", config={"dataset": version.dataset_id}, created_by=owner
    )
    cell = cell_create(
        project=project,
        kind="finetune",
        config={"dataset_cell": data_cell.pk, "base_model": "tiny-llama", **FAST},
        created_by=owner,
        title="Adder",
    )
    run = cell_run_create(cell=cell, created_by=owner)
    until(
        lambda: CellRun.objects.get(pk=run.pk).status,
        lambda s: s not in (RunStatus.QUEUED, RunStatus.RUNNING),
        worker,
        "notebook run",
    )
    notebook_model = f"ft:tiny-llama:lab:adder:run-{run.pk}"
    assert notebook_model in {m.id for m in client.models.list()}
    assert client.models.retrieve(notebook_model).owned_by == "lab"
    reply = client.chat.completions.create(model=notebook_model, messages=ask, max_tokens=3)
    assert reply.usage.prompt_tokens > 0
    with pytest.raises(openai.PermissionDeniedError):
        client.models.delete(notebook_model)

    assert client.models.delete(job.fine_tuned_model).deleted
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model=job.fine_tuned_model, messages=ask, max_tokens=2)
    assert client.files.delete(good.id).deleted
    assert good.id not in {f.id for f in client.files.list()}
    assert client.fine_tuning.jobs.retrieve(job.id).training_file == good.id
