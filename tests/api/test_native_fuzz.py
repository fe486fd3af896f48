"""Schemathesis against the native API's own OpenAPI schema: no 500s, OpenAI-shaped errors.

Calls go to a live server over loopback with a real key on a team that owns a
notebook (markdown, dataset and fine-tune cells, one run); about half of the generated
path ids are swapped for those real objects' ids so the happy paths get fuzzed too.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as fuzzing

from webapp.api.keys import api_key_create

ERROR_KEYS = {"message", "type", "param", "code"}
IDS = ("team_id", "project_id", "cell_id", "run_id")
EXAMPLES = 40  # per operation

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def real(live_server, settings, team, owner, project, cells, cell_run) -> dict[str, object]:
    settings.API_RATE_LIMIT = 0  # hundreds of calls from one key
    _, key = api_key_create(team=team, created_by=owner, name="fuzz")
    ids = {
        "team_id": team.pk,
        "project_id": project.pk,
        "cell_id": cells["finetune"].pk,
        "run_id": cell_run.pk,
    }
    return {"key": key, "ids": ids, "url": live_server.url}


def test_native_api_never_errors_500(real) -> None:
    # Loaded from the live server, as a client would; every operation is fuzzed.
    schema = schemathesis.openapi.from_url(f"{real['url']}/api/schema/")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    statuses: Counter[tuple[str, int]] = Counter()
    for operation in operations:

        @given(case=operation.as_strategy())
        @fuzzing(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
        def fuzz(case) -> None:
            for name in IDS:
                value = (case.path_parameters or {}).get(name)
                if isinstance(value, int) and value % 2 == 0:
                    case.path_parameters[name] = real["ids"][name]
            response = case.call(
                base_url=real["url"], headers={"Authorization": f"Bearer {real['key']}"}
            )
            where = f"{case.method} {case.formatted_path}"
            statuses[(case.method, response.status_code // 100)] += 1
            assert response.status_code < 500, (where, response.text[:500])
            if response.status_code >= 400:
                body = json.loads(response.content)
                assert set(body["error"]) == ERROR_KEYS, (where, body)

        fuzz()
    # The real objects were reached (2xx) and bad input was refused (4xx), by reads and writes.
    assert {("GET", 2), ("GET", 4), ("POST", 2), ("POST", 4), ("PATCH", 4)} <= set(statuses), (
        statuses
    )
