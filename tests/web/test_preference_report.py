"""A preference file's validation report on its version page: token counts of the prompt and
of both answers, and a preview with the two answers side by side, rendered with the preview
model's chat template (or, without one, estimated counts and the plain answers)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.urls import reverse

from tests.web.conftest import Upload, client_for
from tests.web.preference_data import preference_jsonl
from tests.web.worker_harness import broker
from webapp.datasets.models import DatasetVersion, VersionStatus
from webapp.datasets.services import dataset_version_create

PAIRS = [(f"Spell the number {i}.", f"the number {i} is spelled well", "no idea") for i in range(3)]
DATA = preference_jsonl(PAIRS)
PARTS = ("Prompt tokens", "Preferred answer tokens", "Non-preferred answer tokens")


@pytest.fixture(autouse=True)
def _private_broker(tmp_path: Path):
    with broker(f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}"):
        yield


def validated(team, owner, preview_model: str) -> DatasetVersion:
    from workers import tasks

    version = dataset_version_create(
        team=team,
        name=f"pairs {preview_model or 'plain'}",
        upload=Upload.make("pairs.jsonl", DATA),
        created_by=owner,
        preview_model=preview_model,
    )
    tasks.validate_dataset_version.apply(args=[version.pk])  # the worker's task, in process
    version.refresh_from_db()
    assert version.status == VersionStatus.VALID, version.report
    return version


def page_of(version: DatasetVersion, user) -> str:
    url = reverse("dataset_version_detail", args=[version.pk])
    return client_for(user).get(url).content.decode()


def pair_blocks(page: str) -> list[tuple[str, str]]:
    """(preferred, not preferred) text of each previewed pair, tags stripped."""
    found = re.findall(
        r'<div class="pair-preferred">(.*?)</div>\s*<div class="pair-rejected">(.*?)</div>\s*</div>',
        page,
        re.S,
    )
    return [tuple(re.sub(r"<[^>]+>", "", part) for part in pair) for pair in found]


def test_exact_counts_and_both_answers_under_the_chat_template(team, owner, viewer) -> None:
    version = validated(team, owner, "tiny-llama")
    stats = version.report["stats"]
    assert stats["model"] == "tiny-llama"
    assert stats["chosen_tokens"]["min"] > stats["rejected_tokens"]["max"]  # longer answers
    page = page_of(version, viewer)
    for label, key in zip(
        PARTS, ("prompt_tokens", "chosen_tokens", "rejected_tokens"), strict=True
    ):
        d = stats[key]
        assert f"<dt>{label}</dt><dd>min {d['min']} · median {d['median']}" in page
    pairs = pair_blocks(page)
    assert len(pairs) == 3
    preferred, rejected = pairs[0]
    assert preferred.startswith("Preferred") and rejected.startswith("Not preferred")
    for side, answer in ((preferred, PAIRS[0][1]), (rejected, PAIRS[0][2])):
        assert PAIRS[0][0] in side and answer in side  # the prompt, then this answer
    assert PAIRS[0][2] not in preferred and PAIRS[0][1] not in rejected
    assert 'class="seg seg-template"' in page  # the chat template's own text is shown


def test_without_a_model_the_counts_are_estimated_and_the_answers_plain(
    team, owner, viewer
) -> None:
    version = validated(team, owner, "")
    stats = version.report["stats"]
    assert "model" not in stats and stats["rejected_tokens"]["max"] == 2  # "no idea": 7 chars
    page = page_of(version, viewer)
    assert all(f"<dt>{label}</dt>" in page for label in PARTS) and "Approximate" in page
    preferred, rejected = pair_blocks(page)[0]
    assert preferred == f"Preferred{PAIRS[0][1]}" and rejected == f"Not preferred{PAIRS[0][2]}"
    assert f'<span class="role">user</span>{PAIRS[0][0]}' in page  # the prompt, once
