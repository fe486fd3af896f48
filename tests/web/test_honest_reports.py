"""Pages say only what is true: no tick for a transfer that moved nothing."""

from __future__ import annotations

from django.urls import reverse

from tests.web.conftest import Upload, client_for
from tests.web.test_evaluations import ev, eval_cell  # noqa: F401 - fixtures
from tests.web.test_transfers import (  # noqa: F401 - fixtures
    source_run,
    transfer_cell,
    transfer_run,
)
from webapp.datasets.models import DatasetVersion, VersionStatus
from webapp.datasets.services import dataset_version_create
from webapp.evaluations.models import Evaluation
from webapp.projects.models import CellRun
from workers import tasks

ZERO = {"accuracy": 0.0, "low": 0.0, "high": 0.17, "n": 20}


def test_the_paper_bar_is_not_ticked_when_every_model_scores_zero(
    transfer_run: CellRun,  # noqa: F811 - the fixture
    owner,
) -> None:
    outputs = transfer_run.outputs
    report = {**outputs["report"], "accuracy": dict.fromkeys(outputs["report"]["accuracy"], ZERO)}
    CellRun.objects.filter(pk=transfer_run.pk).update(outputs={**outputs, "report": report})
    body = client_for(owner).get(reverse("run_detail", args=[transfer_run.pk])).content.decode()
    bar = body.split('<p class="paper-bar">', 1)[1].split("</p>", 1)[0]
    assert "✓" not in bar and "does not apply" in bar and "0.0%" in bar


def test_the_paper_bar_is_ticked_for_a_real_transfer(
    transfer_run: CellRun,  # noqa: F811 - the fixture
    owner,
) -> None:
    body = client_for(owner).get(reverse("run_detail", args=[transfer_run.pk])).content.decode()
    bar = body.split('<p class="paper-bar">', 1)[1].split("</p>", 1)[0]
    assert bar.count("✓") == 2 and "does not apply" not in bar


def test_an_evaluation_that_ran_fewer_prompts_than_asked_says_how_many_and_why(
    ev: Evaluation,  # noqa: F811 - the fixture
    owner,
) -> None:
    run = ev.run
    for asked, shown in ((5, True), (3, False)):
        CellRun.objects.filter(pk=run.pk).update(inputs={**run.inputs, "max_prompts": asked})
        body = client_for(owner).get(reverse("run_detail", args=[run.pk])).content.decode()
        assert "3 prompts" in body
        assert ("not the 5 asked: the eval set holds only 3" in body) is shown, asked


GOOD_LINE = b'{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}\n'
BAD_FILE = (
    GOOD_LINE * 3
    + b'{"messages": [{"role": "user", "content": "Hi}]}\n'  # an unterminated string
    + b'{"messages": [{"role": "user", "content": "no answer"}]}\n'  # readable, unusable
)


def test_an_invalid_file_reports_usable_examples_and_bad_lines_and_full_json_errors(
    team, owner
) -> None:
    version = dataset_version_create(
        team=team, name="broken", upload=Upload.make("broken.jsonl", BAD_FILE), created_by=owner
    )
    tasks.validate_dataset_version.apply(args=[version.pk])
    version = DatasetVersion.objects.get(pk=version.pk)
    assert version.status == VersionStatus.INVALID
    client = client_for(owner)
    page = client.get(reverse("dataset_version_detail", args=[version.pk])).content.decode()
    counts = page.split('<p class="example-counts">', 1)[1].split("</p>", 1)[0]
    assert counts.startswith("3 usable examples, 2 lines with errors"), counts
    assert "nothing in this file is used" in counts
    assert "Unterminated string starting at column " in page  # the message, with its place
    listing = client.get(reverse("dataset_detail", args=[version.dataset_id])).content.decode()
    assert "3 usable examples, 2 lines with errors" in listing
