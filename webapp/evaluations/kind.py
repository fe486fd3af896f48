"""The `evaluation` cell kind: its config form and its registration.

Candidates are fixed slots rather than a multi-select because the notebook's generic
cell views store request.POST.dict(), which keeps one value per key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django import forms
from django.conf import settings

from webapp.core.catalog import DEFAULT_MODEL, model_choices
from webapp.datasets.models import DatasetPurpose
from webapp.datasets.selectors import datasets_for_purpose
from webapp.evaluations.models import JUDGE_RATIONALE_TOKENS, JudgeBackend
from webapp.jobs import queue as queues
from webapp.projects.cell_kinds import REGISTRY, CellConfigForm, CellKind, ref_field, register

ADAPTER_KINDS = ("finetune", "transfer")
SOURCES = [
    ("dataset_cell", "A dataset cell's validation split"),
    ("prompt_dataset", "An uploaded prompt file (an “Evaluation prompts” dataset)"),
    ("bigbench", "A built-in BIG-bench task"),
]
MODES = [
    ("auto", "Pairwise; reference-guided where references exist"),
    ("pairwise", "Pairwise, never shown references"),
    ("single", "Single-answer grading (1-10)"),
    ("none", "No judge: exact match against the reference answers only (fast)"),
]


def bigbench_choices() -> list[tuple[str, str]]:
    # Read the bundled folder directly: the web process imports only the engine's contracts.
    folder = Path(settings.BASE_DIR) / "finetune_core" / "assets" / "bigbench"
    return [(p.stem, p.stem) for p in sorted(folder.glob("*.json"))]


# The offline judge with the best measured agreement with references (bench-eval).
LOCAL_JUDGE = "gemma-3-270m"


def _optional_models() -> list[tuple[str, str]]:
    return [("", "—"), *model_choices()]


def _models(label: str, initial: str | None = None) -> forms.ChoiceField:
    return forms.ChoiceField(label=label, choices=_optional_models, required=False, initial=initial)


class EvaluationForm(CellConfigForm):
    kind_key = "evaluation"
    show_when = {
        "dataset_cell": ("source", ("dataset_cell",)),
        "prompt_dataset": ("source", ("prompt_dataset",)),
        "bigbench_task": ("source", ("bigbench",)),
    }
    # Exact match alone: no judge model is loaded or asked.
    unused_when = {
        k: ("judge_mode", ("none",)) for k in ("judge", "judge_model", "judge_max_tokens")
    }
    source = forms.ChoiceField(choices=SOURCES, initial="bigbench")
    dataset_cell = ref_field(
        "Dataset cell (for “a dataset cell's validation split”)",
        required=False,
        help_text="The same 10% split a fine-tune validates on.",
    )
    prompt_dataset = ref_field(
        "Prompt dataset (for “an uploaded prompt file”)",
        required=False,
        help_text="Datasets uploaded with the purpose “Evaluation prompts”.",
    )
    bigbench_task = forms.ChoiceField(
        label="BIG-bench task (for “a built-in BIG-bench task”)",
        choices=bigbench_choices,
        required=False,
    )
    base_model = _models("Base model candidate", DEFAULT_MODEL)
    base_model_2 = _models("Second base model candidate")
    adapter_cell = ref_field("Fine-tuned candidate (cell)", required=False)
    checkpoint = forms.CharField(
        max_length=12, required=False, help_text="A checkpoint step; blank: the final adapter."
    )
    adapter_cell_2 = ref_field("Second fine-tuned candidate (cell)", required=False)
    checkpoint_2 = forms.CharField(
        label="Second checkpoint",
        max_length=12,
        required=False,
        help_text="A checkpoint step of the second fine-tuned candidate; blank: its final adapter.",
    )
    checkpoints_of = ref_field(
        "Every checkpoint of (fine-tune cell), each against the base", required=False
    )
    endpoint = ref_field("External endpoint candidate", required=False)
    endpoint_2 = ref_field("Second external endpoint candidate", required=False)
    judge_mode = forms.ChoiceField(choices=MODES, initial="auto")
    judge = ref_field(
        "Judge backend",
        required=False,
        help_text="Blank: a local model run by the workers (works offline).",
    )
    judge_model = _models("Local judge model", LOCAL_JUDGE)
    judge_model.help_text = (
        "Gemma-3-270M by default: judging a right answer against a wrong one (make bench-eval), "
        "its order-averaged verdict was right 30/30 times, SmolLM2-135M's 7/30. It is not "
        "right everywhere: on 2-digit sums it preferred the wrong answer (make "
        "bench-dpo-loop). Check it against votes or references before trusting it."
    )
    max_prompts = forms.IntegerField(
        min_value=1, max_value=2000, initial=20, help_text="The first N prompts of the set."
    )
    max_new_tokens = forms.IntegerField(
        label="Answer length (max new tokens)", min_value=1, max_value=2048, initial=128
    )
    judge_max_tokens = forms.IntegerField(
        label="Judge's rationale length (max tokens)",
        min_value=0,
        max_value=2048,
        initial=JUDGE_RATIONALE_TOKENS,
        help_text="0: the verdict first, with no rationale (much faster; a local judge's "
        "verdict is read off its probabilities, as make bench-eval's verdict-first style).",
    )
    concurrency = forms.IntegerField(
        min_value=1,
        max_value=32,
        initial=4,
        help_text="Requests at once to external endpoints (candidates and judge).",
    )
    budget = forms.FloatField(
        min_value=0.0, required=False, help_text="Cost cap for external calls; blank: none."
    )
    quantization = forms.ChoiceField(
        choices=[("nf4", "4-bit NF4"), ("none", "None (full precision)")],
        initial="nf4",
        help_text="How the workers load local candidates and the local judge.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        project = kwargs["project"]
        backends = JudgeBackend.objects.filter(team_id=project.team_id)
        options = [("", "—"), *((b.pk, str(b)) for b in backends)]
        self.fields["endpoint"].choices = options
        self.fields["endpoint_2"].choices = options
        self.fields["judge"].choices = [("", "Local model (workers)"), *options[1:]]
        if len(options) == 1:  # say where endpoints come from instead of an empty list
            self.fields["endpoint"].help_text = (
                "None yet: add OpenAI-compatible endpoints on the team's "
                "“Judge backends and endpoints” page (linked from an evaluation cell)."
            )
        # Only datasets uploaded as evaluation prompts: a training file is not a prompt set.
        prompt_sets = datasets_for_purpose(
            team_id=project.team_id, purpose=DatasetPurpose.EVALUATION
        )
        self.fields["prompt_dataset"].choices = [("", "—"), *((d.pk, d.name) for d in prompt_sets)]
        if len(self.fields["prompt_dataset"].choices) == 1:
            self.fields["prompt_dataset"].help_text = (
                "None yet: upload a file on the team's Datasets page with the purpose "
                "“Evaluation prompts”."
            )

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        source = data.get("source")
        needed = {"dataset_cell": "dataset_cell", "prompt_dataset": "prompt_dataset"}
        if source in needed and not data.get(needed[source]):
            self.add_error(needed[source], "Choose one for this source.")
        if source == "bigbench" and not data.get("bigbench_task"):
            self.add_error("bigbench_task", "Choose a task.")
        # Keep only the chosen source's setting (a select always sends its first option).
        for other, key in (*needed.items(), ("bigbench", "bigbench_task")):
            if source != other:
                data[key] = None
        for key in ("checkpoint", "checkpoint_2"):
            step = (data.get(key) or "").strip()
            if step and not step.isdigit():
                self.add_error(key, "A step number, or blank for the final adapter.")
        slots = ("base_model", "base_model_2", "adapter_cell", "adapter_cell_2", "endpoint")
        slots += ("endpoint_2",)
        n = sum(bool(data.get(k)) for k in slots) + (2 if data.get("checkpoints_of") else 0)
        if data.get("checkpoints_of") and not data.get("base_model"):
            self.add_error("base_model", "Checkpoints are compared with the base model.")
        if n < 1 or (n < 2 and data.get("judge_mode") not in ("single", "none")):
            raise forms.ValidationError(
                "Pairwise judging needs at least two candidates: add a second base model, a "
                "fine-tuned cell or an endpoint below, or set the judge mode to single-answer "
                "grading (or to no judge, exact match only)."
            )
        return data


if "evaluation" not in REGISTRY:  # ready() may run twice in some test set-ups
    register(
        CellKind(
            "evaluation",
            "Evaluation",
            EvaluationForm,
            cell_refs={
                "dataset_cell": ("dataset",),
                "adapter_cell": ADAPTER_KINDS,
                "adapter_cell_2": ADAPTER_KINDS,
                "checkpoints_of": ("finetune",),
            },
            dataset_refs=("prompt_dataset",),
            runnable=True,
            queue=queues.GPU,
            cell_template="evaluations/kinds/evaluation_cell.html",
            run_template="evaluations/kinds/evaluation_run.html",
        )
    )
