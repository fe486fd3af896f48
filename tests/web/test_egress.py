"""The web side of the egress policy: a base URL that points into the operator's network is
refused when it is saved, next to its field, unless the operator lists the host; and a
failing endpoint's response body never reaches the results page (only its status)."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from tests.web import test_evaluations_worker
from tests.web.conftest import client_for
from tests.web.test_evaluations_worker import FakeOpenAI, backends, run_in_process
from webapp.evaluations.models import Evaluation, JudgeBackend
from webapp.projects.models import RunStatus
from webapp.projects.services import cell_create, project_create

# The fixtures, by name: a fake OpenAI server on loopback (allow-listed), a private broker.
fake_openai = test_evaluations_worker.fake_openai
_private_broker = test_evaluations_worker._private_broker


def save(team: Any, owner: Any, url: str) -> tuple[int, str]:
    data = {"name": "Judge", "base_url": url, "model": "gpt-4o", "api_key": "sk-x"}
    r = client_for(owner).post(reverse("evaluation_backends", args=[team.pk]), data)
    return r.status_code, r.content.decode()


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://127.0.0.1:8000/v1", "127.0.0.1 is a loopback address"),
        ("http://localhost:8000/v1", "localhost (127.0.0.1) is a loopback address"),
        ("http://10.0.0.5:8080/v1", "10.0.0.5 is a private address"),
        ("http://[::ffff:192.168.1.9]/v1", "is a private address"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a cloud metadata"),
        ("http://metadata.google.internal/v1", "metadata.google.internal is a cloud metadata"),
    ],
)
def test_saving_an_internal_url_is_refused_with_a_clear_message(
    team: Any, owner: Any, url: str, says: str
) -> None:
    status, page = save(team, owner, url)
    assert status == 400 and says in page
    assert not JudgeBackend.objects.filter(team=team).exists()


def test_the_operator_allow_list_lets_an_on_premises_judge_be_saved(
    team: Any, owner: Any, settings: Any
) -> None:
    settings.EGRESS_ALLOW_HOSTS = "judge.internal,10.0.0.5:8080"
    assert save(team, owner, "http://10.0.0.5:8080/v1")[0] == 302
    assert save(team, owner, "http://judge.internal/v1")[0] == 302  # not resolvable here
    status, page = save(team, owner, "http://10.0.0.5:9999/v1")  # another port: not listed
    assert status == 400 and "EGRESS_ALLOW_HOSTS=10.0.0.5:9999" in page
    assert JudgeBackend.objects.filter(team=team).count() == 2


def test_an_erroring_judge_shows_its_status_never_its_body(
    transactional_db: None, team: Any, owner: Any, viewer: Any, fake_openai: FakeOpenAI
) -> None:
    fake_openai.judge_fails = {"error": {"message": "token sk-live-SECRET-77 on 10.9.8.7"}}
    b = backends(team, owner, fake_openai)
    project = project_create(team=team, name="Egress", created_by=owner)
    config = {"source": "bigbench", "bigbench_task": "object_counting", "base_model": "",
              "endpoint": b["alpha"].pk, "endpoint_2": b["beta"].pk, "judge": b["judge"].pk,
              "max_prompts": 1, "concurrency": 1}  # fmt: skip
    cell = cell_create(project=project, kind="evaluation", config=config, created_by=owner)
    run = run_in_process(cell, owner)
    assert run.status == RunStatus.SUCCEEDED, run.outputs
    ev = Evaluation.objects.get(run=run)
    page = client_for(viewer).get(reverse("evaluation_detail", args=[ev.pk])).content.decode()
    assert "HTTP 500 (InternalServerError)" in page
    assert "SECRET" not in page and "10.9.8.7" not in page
    assert not any("SECRET" in e for e in ev.errors)
