"""The transfer cell kind: Trans-LoRA moves a fine-tune cell's adapter to a new base model.

Its target model is stored under `base_model` and its quantization under `quantization`,
the keys a playground cell reads from the cell it chats with, so a playground can use a
transferred adapter exactly like a fine-tuned one.
"""

from __future__ import annotations

from typing import Any

from django import forms

from finetune_core.contracts.settings import FORM
from finetune_core.contracts.transfer import transfer_settings
from webapp.core.catalog import model_choices
from webapp.jobs import queue as queues
from webapp.projects.cell_kinds import CellConfigForm, CellKind, ref_field, register
from webapp.projects.models import Cell, Project
from webapp.projects.setting_fields import setting_field
from webapp.transfers.selectors import transfer_blocker, transfer_source_status

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
    unfiltered = forms.BooleanField(
        label="Unfiltered (no discriminator)",
        required=False,
        initial=False,
        help_text="Keep every candidate the target writes: the paper's ablation, as the main run.",
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
    eval_cell = ref_field("Evaluation dataset cell", required=False)
    target_modules = forms.ChoiceField(
        choices=TARGET_MODULES,
        initial="",
        required=False,
        help_text="The paper's q, v measured far under the source adapter's own shape.",
    )

    # The engine's own settings (added below from its contract), in the order people choose.
    field_order = (
        *("source_cell", "source_checkpoint", "base_model", "n_synthetic", "max_attempts"),
        *("unfiltered", "real_recall", "teacher_keep", "ablation_unfiltered"),
        *("ablation_seeds_only", "distillation", "eval_cell", "eval_limit", "epochs"),
        *("max_steps", "learning_rate", "lora_r", "target_modules", "batch_size"),
        *("quantization", "temperature", "sample_max_new_tokens", "teacher_max_new_tokens"),
        *("eval_max_new_tokens", "seed"),
    )

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


TransferForm.base_fields.update(
    {s.name: setting_field(s, default=s.default, prefill=True) for s in transfer_settings(FORM)}
)

KIND = register(
    CellKind(
        "transfer",
        "Transfer (Trans-LoRA)",
        TransferForm,
        cell_refs={"eval_cell": ("dataset",)},
        team_refs=("source_cell",),
        runnable=True,
        queue=queues.GPU,
        cell_template="projects/kinds/transfer_cell.html",
        run_template="projects/kinds/transfer_run.html",
        blocker=lambda cell: transfer_blocker(cell=cell, source=transfer_source_status(cell=cell)),
    )
)
