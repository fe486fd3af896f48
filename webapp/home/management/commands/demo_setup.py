"""`manage.py demo_setup`: a demo user with a ready notebook on a BIG-bench task (idempotent).

The task is 2-digit addition, because SmolLM2-135M visibly learns it in a couple of CPU
minutes: the base model answers in sentences (exact match 0%), the fine-tuned one with
the sum. `make bench-demo` runs this notebook's cells with a real worker and prints the
wall times and both exact-match scores.
"""

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
DEMO_MODEL = "smollm2-135m-instruct"
DEMO_DATA = Path(settings.BASE_DIR) / "finetune_core" / "assets" / "demo" / "addition_400.jsonl"
PROJECT_NAME = "Demo: 2-digit addition"
# 400 examples, 10% held out (the fine-tune's validation split, seed 0): 360 to train on,
# 40 the evaluation cell asks both models. One epoch of 360 examples at batch 4 (two
# 45-token examples packed per 128-token row) is 45 steps. lr 1e-3 (the quick preset has
# 3e-4) is what makes 45 steps enough: base 0/40, fine-tuned 23/40 by exact match (2e-3
# gave 24/40). make bench-demo: fine-tune 309 s, evaluation 121 s on the 2-core CPU at a
# load average of 5-7 (other jobs beside it, one torch thread); less on a quiet machine.
FINETUNE = {
    "base_model": DEMO_MODEL,
    "preset": "quick",
    "epochs": 1,
    "learning_rate": 1e-3,
    "lora_r": 8,
    "lora_alpha": 16,
    "batch_size": 4,
    "max_length": 128,
    "val_fraction": 0.1,
    "seed": 0,
    # Off in the demo: "keep transferable" trains the Trans-LoRA discriminator after the
    # run, a background job of several minutes on the CPU that would hold the embedded
    # model worker while the new user waits to run the evaluation and the playground.
    "keep_transferable": False,
}
EVAL_PROMPTS = 40
PLAYGROUND_PROMPT = "What is 47 plus 38?"  # in none of the 400 examples
INTRO = (
    "# 2-digit addition: base model against fine-tuned\n\n"
    "400 BIG-bench questions such as *What is 80 plus 29?*, each with the bare sum as the "
    "answer. SmolLM2-135M answers them in sentences (*To calculate 80 + 29, we need to...*), "
    "sometimes with the right sum and often not; exact match wants the bare sum, so it "
    "scores 0%. A short QLoRA fine-tune teaches it to answer with the sum alone, right "
    "more than half the time.\n\n"
    "Run the cells in order, each once the one before has finished:\n\n"
    "1. **Dataset**: already uploaded and validated; open it to see the examples and the "
    "token counts.\n"
    "2. **Fine-tune** (3-5 minutes on a 2-core CPU): one epoch over 360 examples; the "
    f"other {EVAL_PROMPTS} are held out.\n"
    f"3. **Evaluation** (1-2 minutes): the base model and the fine-tuned adapter answer "
    f"the {EVAL_PROMPTS} held-out questions, scored by exact match against the reference "
    "sums (no judge model). Expect 0% for the base and about 55-60% for the fine-tuned "
    "model.\n"
    "4. **Playground**: a new question, answered by both models side by side."
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
        project = project_create(team=team, name=PROJECT_NAME, created_by=user)
        upload = SimpleUploadedFile(DEMO_DATA.name, DEMO_DATA.read_bytes())
        version = dataset_version_create(
            team=team,
            name="2-digit addition (400)",
            upload=upload,
            created_by=user,
            preview_model=DEMO_MODEL,
        )
        cell_create(project=project, kind="markdown", config={"text": INTRO}, created_by=user)
        data_cell = cell_create(
            project=project, kind="dataset", config={"dataset": version.dataset_id}, created_by=user
        )
        tune = cell_create(
            project=project,
            kind="finetune",
            config={"dataset_cell": data_cell.pk, **FINETUNE},
            created_by=user,
            title="QLoRA on SmolLM2-135M",
        )
        cell_create(
            project=project,
            kind="evaluation",
            config={
                # The fine-tune's own validation split: questions it never trained on.
                "source": "dataset_cell",
                "dataset_cell": data_cell.pk,
                "base_model": DEMO_MODEL,
                "adapter_cell": tune.pk,
                # Exact match against the reference sums; no judge model to load or run.
                "judge_mode": "none",
                "judge_model": "",
                "max_prompts": EVAL_PROMPTS,
                "max_new_tokens": 16,
            },
            created_by=user,
            title="Base vs fine-tuned: exact match",
        )
        cell_create(
            project=project,
            kind="playground",
            config={"model_cell": tune.pk, "prompt": PLAYGROUND_PROMPT, "max_new_tokens": 32},
            created_by=user,
        )
