"""The transfer cell kind: Trans-LoRA moves a fine-tune cell's adapter to a new base model.

Its target model is stored under `base_model` and its quantization under `quantization`,
the keys a playground cell reads from the cell it chats with, so a playground can use a
transferred adapter exactly like a fine-tuned one.
"""

from __future__ import annotations

from typing import Any

from django import forms

from webapp.projects.catalog import model_choices
from webapp.projects.cell_kinds import CellConfigForm, CellKind, ref_field, register
from webapp.projects.models import Cell, Project

# The wider tiny model is no fine-tune base (NF4 on CPU needs widths that are multiples
# of 64), but it is a second architecture to move tiny adapters to.
EXTRA_TARGETS = [("tiny-llama-wide", "Tiny random Llama, wider (tests; quantization none)")]
TARGET_MODULES = [
    ("", "the source adapter's"),
    ("q_proj,v_proj", "q, v (the paper's choice)"),
    ("all-linear", "all linear layers"),
]


def target_choices() -> list[tuple[str, str]]:
    return model_choices() + EXTRA_TARGETS


def _int(label: str, initial: int | None, help_text: str, **kw: Any) -> forms.IntegerField:
    return forms.IntegerField(
        label=label, initial=initial, help_text=help_text, required=initial is None, **kw
    )


def _blank_int(label: str, help_text: str, **kw: Any) -> forms.IntegerField:
    """An optional whole number: blank leaves the choice to the library."""
    return forms.IntegerField(label=label, help_text=help_text, required=False, **kw)


def _share(label: str, help_text: str, *, min_value: float) -> forms.FloatField:
    """An optional share in (0, 1]: blank keeps the paper's behaviour."""
    return forms.FloatField(
        label=label, help_text=help_text, min_value=min_value, max_value=1.0, required=False
    )


def source_candidates(project: Project, position: int) -> list[Cell]:
    """Fine-tune cells the notebook's readers can all read: earlier ones here, and any in
    the team's other notebooks (never another team's: its members could not read it)."""
    cells = Cell.objects.filter(kind="finetune", project__team_id=project.team_id)
    here = cells.filter(project=project, position__lt=position).order_by("position")
    elsewhere = cells.exclude(project=project).select_related("project")
    return [*here, *elsewhere.order_by("project__name", "position")]


class TransferForm(CellConfigForm):
    kind_key = "transfer"
    # An id checked in clean_source_cell, so a source deleted since is named in words.
    source_cell = forms.IntegerField(label="Source fine-tune cell", widget=forms.Select)
    source_checkpoint = forms.IntegerField(
        label="Source checkpoint step",
        min_value=1,
        required=False,
        help_text="Blank: the run's final adapter. A step moves that checkpoint instead.",
    )
    base_model = forms.ChoiceField(
        choices=target_choices,
        label="Target base model",
        help_text="The new base model the adapter moves to.",
    )
    n_synthetic = _int(
        "Synthetic samples",
        250,
        "Synthetic task inputs to accept (the paper matches the original data's size).",
        min_value=1,
        max_value=5000,
    )
    max_attempts = _blank_int(
        "Attempt budget",
        "Candidates sampled at most; the run stops there. Blank: 4 × samples.",
        min_value=1,
        max_value=100_000,
    )
    unfiltered = forms.BooleanField(
        label="Unfiltered (no discriminator)",
        required=False,
        initial=False,
        help_text="Keep every candidate the target writes: the paper's ablation, as the main run.",
    )
    real_recall = _share(
        "Stricter filter (share of real inputs kept)",
        "E.g. 0.9: accept only candidates the discriminator scores above what 90% of "
        "held-out real inputs scored when it was trained. Blank: the paper's p(yes) > p(no).",
        min_value=0.01,
    )
    teacher_keep = _share(
        "Teacher-confidence filter (share of answers kept)",
        "E.g. 0.8: the student learns only the 80% of the teacher's answers it is surest "
        "of; its wrong answers are mostly among the rest. Blank: all, as the paper.",
        min_value=0.05,
    )
    ablation_unfiltered = forms.BooleanField(
        label="Also train an unfiltered student",
        required=False,
        initial=False,
        help_text="A fourth bar: what the discriminator's filter buys.",
    )
    ablation_seeds_only = forms.BooleanField(
        label="Also train a seeds-only student",
        required=False,
        initial=False,
        help_text="A student on the kept seeds alone: what the synthetic data buys.",
    )
    distillation = forms.ChoiceField(
        choices=[
            ("sequence", "Sequence-level: learn the teacher's answers (any two models)"),
            ("logits", "Logits: also match the teacher's token distributions (one tokenizer)"),
        ],
        initial="sequence",
        required=False,
        help_text="Logit distillation (KL) needs source and target to share a tokenizer.",
    )
    eval_cell = ref_field("Evaluation dataset cell", required=False)
    eval_limit = _int(
        "Evaluation examples", 200, "Held-out examples scored per model.", min_value=1
    )
    epochs = _int("Student epochs", 12, "The paper trains up to 20.", min_value=1, max_value=50)
    max_steps = _blank_int("Student max steps", "Blank: no limit.", min_value=1)
    learning_rate = forms.FloatField(
        initial=5e-4,
        min_value=1e-7,
        max_value=0.5,
        required=False,
        help_text="Paper: 2e-5 to 2e-4. Blank: 5e-4.",
    )
    lora_r = _blank_int(
        "LoRA rank",
        "The student adapter's rank. Blank: the source adapter's.",
        min_value=1,
        max_value=256,
    )
    target_modules = forms.ChoiceField(
        choices=TARGET_MODULES,
        initial="",
        required=False,
        help_text="The paper's q, v measured far under the source adapter's own shape.",
    )
    batch_size = _int(
        "Batch size", 2, "Student micro-batch of packed rows.", min_value=1, max_value=256
    )
    quantization = forms.ChoiceField(
        choices=[("nf4", "nf4"), ("none", "none")],
        initial="nf4",
        required=False,
        help_text="Source, discriminator, target and student load this way.",
    )
    temperature = forms.FloatField(initial=1.0, min_value=0.05, max_value=2.0, required=False)
    sample_max_new_tokens = _blank_int(
        "Tokens per synthetic input", "Blank: twice the longest seed's.", min_value=4, max_value=512
    )
    teacher_max_new_tokens = _int("Tokens per teacher answer", 64, "", min_value=1, max_value=1024)
    eval_max_new_tokens = _int("Tokens per evaluated answer", 32, "", min_value=1, max_value=512)
    seed = _int("Seed", 0, "", min_value=0)

    def __init__(self, *args: Any, project: Project, position: int, **kwargs: Any) -> None:
        super().__init__(*args, project=project, position=position, **kwargs)
        # Validated here rather than as a same-notebook cell reference: the source may sit
        # in another notebook of the team.
        candidates = source_candidates(project, position)
        self.source_ids = {c.pk for c in candidates}
        self.fields["source_cell"].widget.choices = [("", "—")] + [
            (c.pk, str(c) if c.project_id == project.pk else f"{c.project.name} / {c}")
            for c in candidates
        ]

    def clean_source_cell(self) -> int:
        value = self.cleaned_data["source_cell"]
        if value not in self.source_ids:
            raise forms.ValidationError(
                "The source must be a fine-tune cell of this team (earlier in this notebook, "
                "or in another of the team's notebooks); the one chosen is gone or not one."
            )
        return value


KIND = register(
    CellKind(
        "transfer",
        "Transfer (Trans-LoRA)",
        TransferForm,
        cell_refs={"eval_cell": ("dataset",)},
        team_refs=("source_cell",),
        runnable=True,
        queue="gpu",
        cell_template="projects/kinds/transfer_cell.html",
        run_template="projects/kinds/transfer_run.html",
    )
)
