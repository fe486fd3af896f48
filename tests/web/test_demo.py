"""`manage.py demo_setup`: the demo login and a ready notebook, created once."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from webapp.datasets.models import DatasetVersion
from webapp.projects.models import Project


@pytest.mark.django_db(transaction=True)
def test_demo_setup_is_ready_and_idempotent(client) -> None:
    out = StringIO()
    call_command("demo_setup", stdout=out)
    call_command("demo_setup", stdout=out)
    assert out.getvalue().count("log in as demo / tunebook-demo") == 2
    assert get_user_model().objects.filter(username="demo").count() == 1
    project = Project.objects.get(name="Demo: sports understanding")
    assert [c.kind for c in project.cells.order_by("position")] == [
        "markdown",
        "dataset",
        "finetune",
        "playground",
    ]
    version = DatasetVersion.objects.get(dataset__team=project.team)
    assert version.size > 10_000
    assert client.login(username="demo", password="tunebook-demo")
    page = client.get(f"/projects/{project.pk}/")
    assert page.status_code == 200 and "Sports understanding" in page.content.decode()
