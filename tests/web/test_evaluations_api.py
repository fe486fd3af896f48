"""/api/evaluations through the native API's Bearer keys: results, verdicts, votes."""

from __future__ import annotations

from typing import Any

from django.test import Client

from tests.web import test_evaluations
from webapp.api.keys import api_key_create
from webapp.evaluations.models import HumanVote, PairVerdict
from webapp.teams.services import team_create

ev, eval_cell = test_evaluations.ev, test_evaluations.eval_cell  # fixtures: a stored result


def call(key: str, method: str, url: str, body: dict[str, Any] | None = None) -> Any:
    client = Client(HTTP_AUTHORIZATION=f"Bearer {key}")
    if method == "get":
        return client.get(url)
    return client.post(url, body or {}, content_type="application/json")


def test_results_verdicts_and_votes_follow_the_access_rules(
    ev, team, owner, editor, viewer, outsider
) -> None:
    _, key = api_key_create(team=team, created_by=editor, name="ci")
    _, viewer_key = api_key_create(team=team, created_by=viewer, name="v")
    _, read_only = api_key_create(team=team, created_by=owner, name="ro", read_only=True)
    other = team_create(name="Rivals", owner=outsider)
    _, theirs = api_key_create(team=other, created_by=outsider, name="theirs")

    doc = call(viewer_key, "get", f"/api/evaluations/{ev.pk}").json()
    assert doc["candidates"] == ["base", "tuned"] and doc["n_prompts"] == 3
    assert doc["summary"]["pairs"][0]["losses"] == 2 and doc["consistency"]["consistent"] == 2
    hidden = call(theirs, "get", f"/api/evaluations/{ev.pk}")
    assert hidden.status_code == 404 and "error" in hidden.json()

    listed = call(viewer_key, "get", f"/api/evaluations/{ev.pk}/verdicts").json()
    assert len(listed["data"]) == 3
    flips = call(viewer_key, "get", f"/api/evaluations/{ev.pk}/verdicts?inconsistent=true")
    (flip,) = flips.json()["data"]
    assert flip["outcome"] == "tie" and flip["a_first"]["verdict"] == "A"
    assert flip["b_first"]["rationale"].startswith("Rationale BA")

    v = PairVerdict.objects.get(evaluation=ev, prompt__item_id="i1")
    url = f"/api/evaluations/verdicts/{v.pk}/vote"
    assert call(viewer_key, "post", url, {"vote": "a"}).status_code == 403
    assert call(read_only, "post", url, {"vote": "a"}).status_code == 403
    assert call(theirs, "post", url, {"vote": "a"}).status_code == 404
    assert call(key, "post", url, {"vote": "maybe"}).status_code == 400
    voted = call(key, "post", url, {"vote": "b"})
    assert voted.status_code == 200 and voted.json() == {"verdict": v.pk, "user": "ed", "vote": "b"}
    assert HumanVote.objects.get(verdict=v).user == editor
    doc = call(viewer_key, "get", f"/api/evaluations/{ev.pk}").json()
    assert doc["agreement"]["n"] == 1 and doc["agreement"]["agreement"] == 1.0

    schema = Client().get("/api/schema/").json()
    assert "/api/evaluations/{evaluation_id}/verdicts" in schema["paths"]
