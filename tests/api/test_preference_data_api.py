"""/api/evaluations/{id}/preference-data over HTTP with API keys: the preview of what
"Make preference data" keeps and drops, the dataset version it makes, and who may do it."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from tests.web import test_preference_data
from webapp.api.keys import api_key_create
from webapp.datasets.models import Dataset, DatasetVersion
from webapp.evaluations.models import PairVerdict
from webapp.teams.services import team_create

ev, eval_cell = test_preference_data.ev, test_preference_data.eval_cell  # ten judged pairs


def call(base: str, key: str, method: str, path: str, body: dict | None = None) -> Any:
    headers = {"Authorization": f"Bearer {key}"}
    return requests.request(method, base + path, json=body, headers=headers, timeout=30)


@pytest.fixture
def keys(team, owner, editor, viewer, outsider) -> dict[str, str]:
    """A key per persona; the outsider's belongs to their own team."""
    other = team_create(name="Rivals", owner=outsider)
    made = {p: api_key_create(team=team, created_by=u, name=p)[1] for p, u in
            (("owner", owner), ("editor", editor), ("viewer", viewer))}  # fmt: skip
    made["read_only"] = api_key_create(team=team, created_by=owner, name="ro", read_only=True)[1]
    made["outsider"] = api_key_create(team=other, created_by=outsider, name="theirs")[1]
    return made


READ = {"owner": 200, "editor": 200, "viewer": 200, "read_only": 200, "outsider": 404}
WRITE = {"owner": 201, "editor": 201, "viewer": 403, "read_only": 403, "outsider": 404}


def test_each_persona_may_preview_and_make_what_its_role_allows(live_server, ev, keys) -> None:
    path = f"/api/evaluations/{ev.pk}/preference-data"
    for persona, key in keys.items():
        seen = call(live_server.url, key, "get", path)
        assert seen.status_code == READ[persona], persona
        made = call(live_server.url, key, "post", path, {"name": f"by {persona}"})
        assert made.status_code == WRITE[persona], (persona, made.text)
        assert "error" in made.json() or made.json()["name"] == f"by {persona}"
        assert Dataset.objects.filter(name=f"by {persona}").exists() == (WRITE[persona] == 201)
    missing = call(live_server.url, keys["owner"], "get", "/api/evaluations/999999/preference-data")
    assert missing.status_code == 404


def test_the_preview_says_what_is_kept_by_whom_and_why_the_rest_is_dropped(
    live_server, ev, keys
) -> None:
    got = call(live_server.url, keys["viewer"], "get", f"/api/evaluations/{ev.pk}/preference-data")
    doc = got.json()
    assert doc["kept"] == 3 and doc["by_source"] == {"human": 2, "judge": 1, "judge_calibrated": 0}
    assert doc["calibrated"] is False and doc["offers_calibrated"] is False
    assert doc["reference_agreement"] == {} and doc["against_references"] is False
    assert {d["code"]: d["pairs"] for d in doc["dropped"]} == {
        "tie": 2,
        "inconsistent": 1,
        "votes_split": 1,
        "judge_failed": 1,
        "no_answer": 1,
        "identical": 1,
    }
    assert doc["default_name"].startswith("Preferences from ") and not doc["has_more"]
    i3 = next(p for p in doc["pairs"] if p["item_id"] == "i3")
    assert i3 == {
        "verdict": PairVerdict.objects.get(evaluation=ev, prompt__item_id="i3").pk,
        "item_id": "i3",
        "preferred": "base",  # the vote overrides the judge's "tuned"
        "non_preferred": "tuned",
        "source": "human",
        "votes": 1,
        "prompt_version": "pairwise@v1",
    }


def test_making_it_adds_a_version_a_new_dataset_or_a_picked_one(
    live_server, ev, keys, team, outsider
) -> None:
    path = f"/api/evaluations/{ev.pk}/preference-data"
    first = call(live_server.url, keys["editor"], "post", path, {})
    assert first.status_code == 201, first.text
    doc = first.json()
    version = DatasetVersion.objects.get(pk=doc["id"])
    assert doc["object"] == "dataset.version" and doc["version"] == 1
    assert doc["name"] == version.dataset.name and version.dataset.name.startswith("Preferences")
    assert doc["status"] == "uploaded" and version.validation_job is not None
    assert doc["origin"]["evaluation"] == ev.pk and doc["origin"]["kept"] == 3
    again = call(live_server.url, keys["editor"], "post", path, {"dataset": doc["dataset"]})
    assert again.status_code == 201 and again.json()["version"] == 2

    theirs = Dataset.objects.create(team=team_create(name="Other", owner=outsider), name="x")
    hidden = call(live_server.url, keys["editor"], "post", path, {"dataset": theirs.pk})
    assert hidden.status_code == 404 and hidden.json()["error"]["code"] == "not_found"
    prompts = Dataset.objects.create(team=team, name="quiz", purpose="evaluation")
    wrong = call(live_server.url, keys["editor"], "post", path, {"dataset": prompts.pk})
    assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "purpose"
    assert not prompts.versions.exists()


def test_nothing_to_keep_is_a_400_that_says_what_to_do(live_server, ev, keys) -> None:
    PairVerdict.objects.filter(evaluation=ev).update(outcome="tie", inconsistent=True)
    for item in ("i3", "i6"):
        PairVerdict.objects.get(evaluation=ev, prompt__item_id=item).votes.all().delete()
    path = f"/api/evaluations/{ev.pk}/preference-data"
    refused = call(live_server.url, keys["owner"], "post", path, {"name": "Nothing"})
    assert refused.status_code == 400 and "No pair has a winner yet" in refused.text
    assert not Dataset.objects.filter(name="Nothing").exists()


def test_calibrated_verdicts_are_previewed_and_kept_when_asked(live_server, ev, keys) -> None:
    test_preference_data.calibrate(ev, i2="b")
    path = f"/api/evaluations/{ev.pk}/preference-data"
    plain = call(live_server.url, keys["viewer"], "get", path).json()
    assert plain["kept"] == 3 and plain["offers_calibrated"] is True
    opted = call(live_server.url, keys["viewer"], "get", path + "?calibrated=true").json()
    assert opted["kept"] == 4 and opted["calibrated"] is True
    assert opted["by_source"]["judge_calibrated"] == 1
    i2 = next(p for p in opted["pairs"] if p["item_id"] == "i2")
    assert (i2["preferred"], i2["source"]) == ("tuned", "judge_calibrated")
    made = call(live_server.url, keys["editor"], "post", path, {"calibrated": True})
    assert made.status_code == 201, made.text
    assert made.json()["origin"]["calibrated"] is True and made.json()["origin"]["kept"] == 4
