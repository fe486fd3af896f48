"""Fine-tune cells of the team's notebooks are listed and served by /v1/models and chat."""

from __future__ import annotations

import openai
import pytest

from webapp.api.keys import api_key_create
from webapp.api.models import ChatCompletion
from webapp.projects.models import CellRun, RunStatus
from webapp.projects.services import cell_run_create


@pytest.fixture
def finished_run(cells, owner, tmp_path) -> CellRun:
    """A notebook fine-tune run as the worker leaves it: succeeded, with an adapter folder."""
    run = cell_run_create(cell=cells["finetune"], created_by=owner)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    # What the worker's cell_run_settle stores for a finished fine-tune, written directly.
    CellRun.objects.filter(pk=run.pk).update(
        status=RunStatus.SUCCEEDED, outputs={"adapter_dir": str(adapter), "checkpoints": []}
    )
    return CellRun.objects.get(pk=run.pk)


def test_notebook_models_listed_for_the_team_only(
    sdk, settings, team, owner, viewer, outsider, other_team, finished_run
) -> None:
    cell = finished_run.cell
    assert not cell.title  # untitled cells are named by position
    model_id = f"ft:tiny-llama:lab:cell-{cell.position}:run-{finished_run.pk}"
    _, viewer_key = api_key_create(team=team, created_by=viewer, name="v")
    client = sdk(viewer_key)
    listed = {m.id: m for m in client.models.list()}
    assert model_id in listed, sorted(listed)
    assert listed[model_id].owned_by == "lab" and client.models.retrieve(model_id).id == model_id

    # Chat resolves it to the run's adapter and queues the generation (no worker here).
    settings.API_CHAT_TIMEOUT_S = 1
    with pytest.raises(openai.APIStatusError) as waited:
        client.chat.completions.create(
            model=model_id, messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
    assert waited.value.status_code == 504
    row = ChatCompletion.objects.get()
    assert row.adapter_dir == finished_run.outputs["adapter_dir"] and row.base_model == "tiny-llama"

    _, owner_key = api_key_create(team=team, created_by=owner, name="o")
    with pytest.raises(openai.PermissionDeniedError):
        sdk(owner_key).models.delete(model_id)

    _, theirs = api_key_create(team=other_team, created_by=outsider, name="t")
    assert model_id not in {m.id for m in sdk(theirs).models.list()}
    with pytest.raises(openai.NotFoundError):
        sdk(theirs).models.retrieve(model_id)
    with pytest.raises(openai.NotFoundError):
        sdk(theirs).chat.completions.create(
            model=model_id, messages=[{"role": "user", "content": "hi"}]
        )
    # A wrong name for the right run is not that model.
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model=f"ft:tiny-llama:lab:other:run-{finished_run.pk}",
            messages=[{"role": "user", "content": "hi"}],
        )
