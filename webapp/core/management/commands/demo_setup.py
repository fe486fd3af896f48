"""`manage.py demo_setup`: a demo user with a ready notebook on a BIG-bench task (idempotent)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management.base import BaseCommand

from webapp.accounts.services import user_signup
from webapp.datasets.services import dataset_version_create
from webapp.projects.services import cell_create, project_create
from webapp.teams.models import Team

DEMO_USER = "demo"
DEMO_PASSWORD = "tunebook-demo"
DEMO_DATA = (
    Path(settings.BASE_DIR) / "finetune_core" / "assets" / "demo" / "sports_understanding_200.jsonl"
)
INTRO = (
    "# Sports understanding\n\n"
    "200 BIG-bench examples: is a sentence about sports *plausible* or *implausible*? "
    "Run the dataset cell, then the fine-tune cell (a quick QLoRA run on the CPU), "
    "then ask the playground the same question with and without the adapter."
)


class Command(BaseCommand):
    help = "Create the demo user and a notebook on a BIG-bench task, unless they exist."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--url", default="http://127.0.0.1:8000/")

    def handle(self, *args: Any, url: str, **options: Any) -> None:
        User = get_user_model()
        user = User.objects.filter(username=DEMO_USER).first()
        if user is None:
            user = user_signup(username=DEMO_USER, password=DEMO_PASSWORD)
            self._notebook(user)
        self.stdout.write(f"Tunebook is at {url}  (log in as {DEMO_USER} / {DEMO_PASSWORD})")

    def _notebook(self, user: Any) -> None:
        team = Team.objects.filter(memberships__user=user).first()
        project = project_create(team=team, name="Demo: sports understanding", created_by=user)
        upload = SimpleUploadedFile(DEMO_DATA.name, DEMO_DATA.read_bytes())
        version = dataset_version_create(
            team=team,
            name="sports_understanding (200)",
            upload=upload,
            created_by=user,
            preview_model="smollm2-135m-instruct",
        )
        cell_create(project=project, kind="markdown", config={"text": INTRO}, created_by=user)
        data_cell = cell_create(
            project=project, kind="dataset", config={"dataset": version.dataset_id}, created_by=user
        )
        tune = cell_create(
            project=project,
            kind="finetune",
            config={
                "dataset_cell": data_cell.pk,
                "base_model": "smollm2-135m-instruct",
                "preset": "quick",
                "epochs": 1,
            },
            created_by=user,
            title="QLoRA on SmolLM2-135M",
        )
        cell_create(
            project=project,
            kind="playground",
            config={
                "model_cell": tune.pk,
                "prompt": 'Is the following sentence plausible? "Joao Moutinho caught the screen pass in the NFC championship."',
                "max_new_tokens": 32,
            },
            created_by=user,
        )
