"""Registry of cell kinds. A new kind (transfer, evaluation, ...) is one register() call.

Each kind declares a config form, which config keys reference earlier cells (and of
which kinds), which keys reference team datasets, and how it runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django import forms

from webapp.core.catalog import DEFAULT_MODEL, model_choices
from webapp.datasets.models import Dataset, DatasetPurpose, VersionStatus
from webapp.jobs import queue as queues
from webapp.projects.finetune_config import (
    DEFAULT_PRESET,
    METHOD_NAMES,
    PREFERENCE_METHODS,
    PRESET_CHOICES,
    data_method_problem,
    effective_hparams,
    keep_transferable_default,
    keep_transferable_field,
    methods_for,
    param_fields,
)
from webapp.projects.models import Cell, Project


def cell_reference(cell: Cell | None, *, here: int | None = None) -> str:
    """`cell 3 · Fine-tune`: the number shown on the page, and the notebook when it is another."""
    if cell is None:
        return "a deleted cell"
    where = "" if here in (None, cell.project_id) else f"{cell.project} · "
    # An untitled cell's name repeats its number ("Dataset cell 2"): its kind says enough.
    return f"{where}cell {cell.position} · {cell.title or cell.get_kind_display()}"


class CellConfigForm(forms.Form):
    """Base form: reference fields get their choices from the project at hand."""

    kind_key: str = ""
    # field -> (other field, values): shown in the browser only while the other field has
    # one of those values (static/forms.js); the form itself still gets every field.
    show_when: Mapping[str, tuple[str, tuple[str, ...]]] = {}
    # field -> (other field, values): the setting does nothing while the other field has one
    # of those values ("*": any value), so the notebook leaves it out of the cell's settings
    # (cell_display.py), as it does a show_when field that the form hides.
    unused_when: Mapping[str, tuple[str, tuple[str, ...]]] = {}

    def __init__(self, *args: Any, project: Project, position: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name, (other, values) in self.show_when.items():
            self.fields[name].widget.attrs["data-show-when"] = f"{other}={'|'.join(values)}"
        kind = REGISTRY[self.kind_key]
        earlier = project.cells.filter(position__lt=position)
        for key, allowed in kind.cell_refs.items():
            candidates = earlier.filter(kind__in=allowed)
            self.fields[key].choices = [("", "—")] + [(c.pk, cell_reference(c)) for c in candidates]
        for key in kind.dataset_refs:
            datasets = Dataset.objects.filter(team_id=project.team_id)
            self.fields[key].choices = [("", "—")] + [(d.pk, d.name) for d in datasets]


def ref_field(label: str, *, required: bool = True, help_text: str = "") -> forms.TypedChoiceField:
    """An object id (cell, dataset, backend); its choices are set per form instance."""
    return forms.TypedChoiceField(
        label=label, coerce=int, empty_value=None, required=required, help_text=help_text
    )


class MarkdownForm(CellConfigForm):
    kind_key = "markdown"
    text = forms.CharField(widget=forms.Textarea(attrs={"rows": 6}), max_length=20_000)


class DatasetCellForm(CellConfigForm):
    kind_key = "dataset"
    dataset = ref_field("Dataset")
    version = forms.IntegerField(min_value=1, required=False, help_text="Blank: latest version.")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Dataset cells feed fine-tunes: prompt sets belong to evaluation cells.
        training = Dataset.objects.filter(
            team_id=kwargs["project"].team_id, purpose=DatasetPurpose.TRAINING
        )
        self.fields["dataset"].choices = [("", "—")] + [(d.pk, d.name) for d in training]


def _model_field(help_text: str, *, required: bool = True) -> forms.ChoiceField:
    return forms.ChoiceField(
        choices=model_choices,
        initial=DEFAULT_MODEL,
        label="Base model",
        help_text=help_text,
        required=required,
    )


def _named(methods: tuple[str, ...]) -> str:
    return " or ".join(METHOD_NAMES[m] for m in methods)


# The fine-tune form's dataset groups, by the training methods their data suits.
DATA_GROUPS = {
    PREFERENCE_METHODS: f"Preference pairs: for {_named(PREFERENCE_METHODS)}",
    ("supervised",): f"Answers (chat, prompt-completion, ...): for {_named(('supervised',))}",
    tuple(METHOD_NAMES): "Not validated yet: checked when the run starts",
}


def _finetune_blocker(cell: Cell) -> str | None:
    from webapp.projects.selectors import finetune_blocker  # selectors import us

    return finetune_blocker(cell)


def dataset_cell_choices(cells: Iterable[Cell]) -> list[tuple[Any, Any]]:
    """The dataset cells a fine-tune may pick, grouped by the methods their data suits
    (the version each stands for, as validated), each named with its dataset."""
    from webapp.projects.selectors import dataset_cell_version  # selectors import us

    groups: dict[tuple[str, ...], list[tuple[int, str]]] = {key: [] for key in DATA_GROUPS}
    for cell in cells:
        version = dataset_cell_version(cell=cell)
        valid = version is not None and version.status == VersionStatus.VALID
        data_format = (version.report or {}).get("format") if valid else None
        named = f" · “{version.dataset.name}” v{version.version}" if version else ""
        groups[methods_for(data_format)].append((cell.pk, cell_reference(cell) + named))
    return [("", "—")] + [(DATA_GROUPS[k], rows) for k, rows in groups.items() if rows]


class FinetuneForm(CellConfigForm):
    kind_key = "finetune"
    dataset_cell = ref_field("Dataset cell")
    val_dataset_cell = ref_field("Validation dataset cell", required=False)
    val_dataset_cell.help_text = "Measure validation loss on this dataset. Blank: hold out val_fraction of the training data."
    base_model = _model_field("The model the LoRA adapter is trained on.")
    init_cell = ref_field(
        "Start from",
        required=False,
        help_text="Continue from an earlier fine-tune cell's adapter (its latest finished run), "
        "e.g. DPO on a supervised model; its rank and layers are kept. Blank: a new adapter.",
    )
    preset = forms.ChoiceField(
        choices=PRESET_CHOICES,
        initial=DEFAULT_PRESET,
        required=False,
        help_text="Sets the defaults; any field below that you fill in overrides it.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        earlier = kwargs["project"].cells.filter(position__lt=kwargs["position"])
        choices = dataset_cell_choices(earlier.filter(kind="dataset"))
        for key in ("dataset_cell", "val_dataset_cell"):
            self.fields[key].choices = choices
        # The default follows the workers alive now; what the form cleans is stored, so
        # a cell keeps the choice it was made with.
        self.fields["keep_transferable"] = keep_transferable_field(keep_transferable_default())

    def clean(self) -> dict[str, Any]:
        """An adapter to start from must be on the same base model, and the datasets'
        format must suit the training method: preference pairs for DPO and SimPO, answers
        for supervised training."""
        from webapp.projects.selectors import dataset_cell_version  # selectors import us

        cleaned = super().clean()
        start = Cell.objects.filter(pk=cleaned.get("init_cell"), kind="finetune").first()
        if start is not None and start.config.get("base_model") != cleaned.get("base_model"):
            self.add_error(
                "init_cell",
                f"{cell_reference(start)} trained on {start.config.get('base_model')}: "
                "choose it as the base model too, or start from a new adapter.",
            )
        method = effective_hparams(cleaned)["training_method"]
        for key in ("dataset_cell", "val_dataset_cell"):
            source = Cell.objects.filter(pk=cleaned.get(key), kind="dataset").first()
            version = dataset_cell_version(cell=source) if source else None
            if version is None or version.status != VersionStatus.VALID:
                continue  # not validated yet: the worker checks when the run starts
            what = f"dataset “{version.dataset.name}” (v{version.version})"
            problem = data_method_problem(method, (version.report or {}).get("format"), what)
            if problem:
                self.add_error(key, problem)
        return cleaned


FinetuneForm.base_fields["dataset_cell"].help_text = (
    "Supervised training takes chat or prompt-completion data; DPO and SimPO take "
    "preference pairs (a preferred and a non-preferred answer per prompt)."
)
FinetuneForm.base_fields.update(param_fields())
FinetuneForm.base_fields["keep_transferable"] = keep_transferable_field()


class PlaygroundForm(CellConfigForm):
    kind_key = "playground"
    unused_when = {"base_model": ("model_cell", ("*",))}  # the fine-tune's base answers
    model_cell = ref_field("Fine-tuned model cell (blank: base model only)", required=False)
    base_model = _model_field("Used when no fine-tuned model cell is chosen.", required=False)
    system = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}), max_length=4_000, required=False
    )
    prompt = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), max_length=8_000)
    max_new_tokens = forms.IntegerField(min_value=1, max_value=4096, initial=128)
    temperature = forms.FloatField(
        min_value=0.0,
        max_value=2.0,
        initial=0.0,
        required=False,
        help_text="0: greedy, the same answer each time.",
    )


@dataclass(frozen=True)
class CellKind:
    key: str
    label: str
    form: type[CellConfigForm]
    # config key -> kinds the referenced earlier cell may have
    cell_refs: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # config keys holding ids of datasets that must belong to the project's team
    dataset_refs: tuple[str, ...] = ()
    # config keys holding ids of cells anywhere in the team (a transfer's source adapter):
    # such a cell cannot be deleted while one refers to it, in any notebook
    team_refs: tuple[str, ...] = ()
    runnable: bool = False
    queue: str = queues.DEFAULT
    # Its answers come from the serving process when the serving path is on
    # (webapp/jobs/serving.py): its task then only waits, on the CPU lane, not behind GPU jobs.
    served: bool = False
    # Templates for the kind's own part of the notebook cell and of the run page.
    cell_template: str = ""
    run_template: str = ""
    # Why a cell of this kind cannot run now (Run disabled, a POST refused), or None.
    blocker: Callable[[Cell], str | None] | None = None


REGISTRY: dict[str, CellKind] = {}


def register(kind: CellKind) -> CellKind:
    if kind.key in REGISTRY:
        raise ValueError(f"cell kind {kind.key!r} registered twice")
    if kind.form.kind_key != kind.key:
        raise ValueError(
            f"form {kind.form.__name__} is for {kind.form.kind_key!r}, not {kind.key!r}"
        )
    REGISTRY[kind.key] = kind
    return kind


def choices() -> list[tuple[str, str]]:
    return [(k.key, k.label) for k in REGISTRY.values()]


def get_kind(key: str) -> CellKind:
    try:
        return REGISTRY[key]
    except KeyError:
        raise LookupError(f"unknown cell kind {key!r}") from None


def referenced_cell_ids(cell: Cell) -> set[int]:
    kind = REGISTRY.get(cell.kind)
    if kind is None:
        return set()
    return {int(v) for k in kind.cell_refs if (v := cell.config.get(k)) is not None}


def team_referenced_ids(cell: Cell) -> set[int]:
    """Ids of cells this one uses from anywhere in the team (not bound to its notebook)."""
    kind = REGISTRY.get(cell.kind)
    refs = kind.team_refs if kind else ()
    return {int(v) for k in refs if str(v := cell.config.get(k, "")).isdigit()}


def team_ref_kinds() -> list[str]:
    return [k.key for k in REGISTRY.values() if k.team_refs]


register(CellKind("markdown", "Markdown", MarkdownForm))
register(
    CellKind(
        "dataset",
        "Dataset",
        DatasetCellForm,
        dataset_refs=("dataset",),
        cell_template="projects/kinds/dataset_cell.html",
    )
)
register(
    CellKind(
        "finetune",
        "Fine-tune",
        FinetuneForm,
        cell_refs={
            "dataset_cell": ("dataset",),
            "val_dataset_cell": ("dataset",),
            "init_cell": ("finetune",),
        },
        runnable=True,
        queue=queues.GPU,
        blocker=_finetune_blocker,
        cell_template="projects/kinds/finetune_cell.html",
        run_template="projects/kinds/finetune_run.html",
    )
)
register(
    CellKind(
        "playground",
        "Playground",
        PlaygroundForm,
        cell_refs={"model_cell": ("finetune", "transfer")},
        runnable=True,
        queue=queues.GPU,
        served=True,
        run_template="projects/kinds/playground_run.html",
    )
)
