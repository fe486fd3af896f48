"""DPO through /v1/fine_tuning/jobs as OpenAI documents it (`method.type = "dpo"`), driven by
the real `openai` SDK: the request's shapes and their 400s, then a DPO job end to end on a
real Celery worker, its events carrying the rewards and accuracy the engine logs.
"""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from tests.api.test_api_worker import FAST, until
from tests.web.preference_data import CHAT, PREFERENCE
from tests.web.worker_harness import Worker
from webapp.api.models import FineTuningJob
from webapp.core import storage


def dpo(**hyperparameters: Any) -> dict[str, Any]:
    return {"type": "dpo", "dpo": {"hyperparameters": hyperparameters}}


@pytest.mark.parametrize(
    ("method", "param", "words"),
    [
        ({"type": "reinforcement"}, "method.type", "Reinforcement fine-tuning is not supported"),
        ({"type": "orpo"}, "method.type", "'orpo' is not supported; use 'supervised' or 'dpo'"),
        ({"dpo": {}}, "method.type", "Missing required parameter"),
        (dpo(beta=0), "method.dpo.hyperparameters.beta", "more than 0 and at most 2"),
        (dpo(beta=2.5), "method.dpo.hyperparameters.beta", "more than 0 and at most 2"),
        (dpo(beta="high"), "method.dpo.hyperparameters.beta", "a number or 'auto'"),
        (dpo(n_epochs=1.5), "method.dpo.hyperparameters.n_epochs", "a whole number"),
        (dpo(n_epochs=51), "method.dpo.hyperparameters.n_epochs", "at most 50"),
        (dpo(gamma=1), "method.dpo.hyperparameters.gamma", "Unknown hyperparameter 'gamma'"),
        (
            {"type": "supervised", "supervised": {"hyperparameters": {"beta": 0.1}}},
            "method.supervised.hyperparameters.beta",
            "Unknown hyperparameter 'beta' for method 'supervised'",
        ),
        ({"type": "dpo", "supervised": {}}, "method.supervised", "does not go with"),
    ],
)
def test_bad_method_shapes_are_openai_shaped_400s(
    sdk, owner_key, method: dict[str, Any], param: str, words: str
) -> None:
    client = sdk(owner_key)
    file_id = client.files.create(file=("p.jsonl", PREFERENCE), purpose="fine-tune").id
    with pytest.raises(openai.BadRequestError) as bad:
        client.fine_tuning.jobs.create(model="tiny-llama", training_file=file_id, method=method)
    assert bad.value.param == param and words in bad.value.message, bad.value.message
    assert bad.value.code in ("invalid_value", "missing_required_parameter")


def test_method_goes_through_method_not_tunebook(sdk, owner_key) -> None:
    client = sdk(owner_key)
    file_id = client.files.create(file=("p.jsonl", PREFERENCE), purpose="fine-tune").id
    for extra in ({"training_method": "dpo"}, {"beta": 0.3}):
        with pytest.raises(openai.BadRequestError) as bad:
            client.fine_tuning.jobs.create(
                model="tiny-llama", training_file=file_id, extra_body={"tunebook": extra}
            )
        assert bad.value.param == "tunebook" and "method.type" in bad.value.message


def finish(client: openai.OpenAI, job_id: str, worker: Worker) -> Any:
    return until(
        lambda: client.fine_tuning.jobs.retrieve(job_id),
        lambda j: j.status in ("succeeded", "failed", "cancelled"),
        worker,
        f"job {job_id}",
    )


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_sdk_runs_a_dpo_job_on_a_real_worker(start_worker, sdk, owner_key) -> None:
    worker = start_worker()
    client = sdk(owner_key)
    pairs = client.files.create(file=("pairs.jsonl", PREFERENCE), purpose="fine-tune")
    chat = client.files.create(file=("chat.jsonl", CHAT), purpose="fine-tune")
    for file in (pairs, chat):
        done = until(
            lambda f=file: client.files.retrieve(f.id),
            lambda f: f.status in ("processed", "error"),
            worker,
            "file validation",
        )
        assert done.status == "processed", done.status_details

    # The method and the data must go together, both ways round, before anything queues.
    with pytest.raises(openai.BadRequestError) as wrong:
        client.fine_tuning.jobs.create(model="tiny-llama", training_file=chat.id, method=dpo())
    assert wrong.value.param == "training_file"
    assert f"DPO trains on preference pairs, and {chat.id} holds chat examples" in str(
        wrong.value.message
    )
    with pytest.raises(openai.BadRequestError) as wrong:
        client.fine_tuning.jobs.create(
            model="tiny-llama", training_file=pairs.id, validation_file=chat.id, method=dpo()
        )
    assert wrong.value.param == "validation_file"
    with pytest.raises(openai.BadRequestError) as wrong:
        client.fine_tuning.jobs.create(model="tiny-llama", training_file=pairs.id)
    assert wrong.value.param == "training_file" and "holds preference pairs" in str(
        wrong.value.message
    )

    # A supervised job first; DPO then continues from its model, as OpenAI allows.
    sft = client.fine_tuning.jobs.create(
        model="tiny-llama", training_file=chat.id, suffix="sft", extra_body={"tunebook": FAST}
    )
    sft = finish(client, sft.id, worker)
    assert sft.status == "succeeded" and sft.method.type == "supervised", sft.error
    checkpoint = client.fine_tuning.jobs.checkpoints.list(sft.id).data[0]
    with pytest.raises(openai.BadRequestError) as wrong:
        client.fine_tuning.jobs.create(
            model=checkpoint.fine_tuned_model_checkpoint, training_file=pairs.id, method=dpo()
        )
    assert wrong.value.param == "model" and "final model" in wrong.value.message
    with pytest.raises(openai.BadRequestError) as wrong:
        client.fine_tuning.jobs.create(
            model="ft:tiny-llama:lab:sft:ftjob-999", training_file=pairs.id, method=dpo()
        )
    assert wrong.value.param == "model" and wrong.value.code == "model_not_found"

    job = client.fine_tuning.jobs.create(
        model=sft.fine_tuned_model,
        training_file=pairs.id,
        suffix="prefers",
        method=dpo(beta=0.25, n_epochs="auto", batch_size=2, learning_rate_multiplier=2),
        # lora_r 8 asked, but the adapter it starts from has rank 4 and keeps it.
        extra_body={"tunebook": {**FAST, "lora_r": 8}},
    )
    assert job.model == sft.fine_tuned_model
    assert job.method.type == "dpo" and job.method.supervised is None
    hyper = job.method.dpo.hyperparameters
    assert (hyper.beta, hyper.batch_size, hyper.learning_rate_multiplier) == (0.25, 2, 2)
    assert job.model_extra["tunebook"]["config"]["training_method"] == "dpo"
    job = finish(client, job.id, worker)
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model == f"ft:tiny-llama:lab:prefers:{job.id}"
    # The worker started from the supervised job's adapter: DPO's reference, and its rank.
    outputs = FineTuningJob.objects.get(pk=int(job.id.split("-")[1])).cell_run.outputs
    started = FineTuningJob.objects.get(pk=int(sft.id.split("-")[1])).cell_run.outputs
    assert outputs["config"]["init_adapter"] == started["adapter_dir"]
    adapter = storage.local_path(outputs["adapter_dir"])
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 4
    assert job.method.type == "dpo" and job.method.dpo.hyperparameters.beta == 0.25
    measured = job.model_extra["tunebook"]["metrics"]
    assert 0.0 <= measured["rewards/accuracies"] <= 1.0 and "rewards/margins" in measured

    metrics = [
        e for e in client.fine_tuning.jobs.list_events(job.id, limit=100) if e.type == "metrics"
    ]
    steps = [e for e in metrics if e.data.get("kind") != "eval" and "rewards/chosen" in e.data]
    assert steps, [e.data for e in metrics]
    last = max(steps, key=lambda e: e.data["step"])
    assert {"rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"} <= set(
        last.data
    )
    assert last.data["rewards/margins"] == pytest.approx(
        last.data["rewards/chosen"] - last.data["rewards/rejected"], abs=1e-5
    )
    assert "rewards/accuracies=" in last.message and last.message.startswith("Step 2/2")

    # The DPO model answers like any fine-tuned model.
    reply = client.chat.completions.create(
        model=job.fine_tuned_model,
        messages=[{"role": "user", "content": "What is 3 plus one?"}],
        max_tokens=3,
    )
    assert reply.usage.prompt_tokens > 0

    # "auto" takes DPO's usual beta, and the job says so.
    auto = client.fine_tuning.jobs.create(
        model="tiny-llama",
        training_file=pairs.id,
        method=dpo(beta="auto"),
        extra_body={"tunebook": {**FAST, "max_steps": 400}},
    )
    assert auto.method.dpo.hyperparameters.beta == 0.1
    assert client.fine_tuning.jobs.cancel(auto.id).method.type == "dpo"
