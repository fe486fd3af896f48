"""Fine-tune hyperparameters in the notebook: form fields and the effective config.

Every setting, its default, bounds and help text, and the presets, are declared once in
`finetune_core.contracts.train` (torch-free); this module only turns them into Django
form fields and into the dict the worker turns into a TrainConfig.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django import forms
from django.conf import settings

from finetune_core.contracts.data import PREFERENCE_FORMAT
from finetune_core.contracts.settings import Setting
from finetune_core.contracts.train import (
    DEFAULT_PRESET,
    PRESET_LABELS,
    PRESETS,
    TARGET_MODULES,
    preset_values,
    resolve_target_modules,
    train_settings,
)
from webapp.jobs import fleet
from webapp.projects.setting_fields import blank, setting_field

__all__ = ["DEFAULT_PRESET", "PRESETS", "TARGET_MODULES", "PARAM_NAMES", "PRESET_CHOICES"]

PRESET_CHOICES = list(PRESET_LABELS.items())
PARAMS: tuple[Setting, ...] = train_settings("form")
PARAM_NAMES = tuple(p.name for p in PARAMS)


def param_fields() -> dict[str, forms.Field]:
    """Form fields for every hyperparameter; all optional (blank = preset default)."""
    defaults = preset_values(DEFAULT_PRESET)
    return {p.name: setting_field(p, default=defaults[p.name], blank="— preset —") for p in PARAMS}


TRANSFERABLE_HELP = "So the adapter can move to a new base model even after the dataset is deleted."
# Why the default is off where one worker trains (issue 27: ~50 min after a 6-step run).
ONE_WORKER_HELP = (
    " Off by default here: one worker runs every fine-tune, and training the discriminator "
    "after the run would hold it for a long time (about 50 minutes on a 2-core CPU) while "
    "your next run waits. Turn it on if you will retire this base model."
)


def keep_transferable_default() -> bool:
    """Whether a fine-tune whose config does not say keeps its adapter transferable: the
    one place that decides. No where a single worker serves the training queues, since
    the Trans-LoRA discriminator it trains after the run holds that worker for long; yes
    where several do, and where none is alive to tell (the fleet is not known)."""
    return fleet.workers_serving(settings.TRAINING_QUEUES) != 1


def keep_transferable_field(default: bool | None = None) -> forms.TypedChoiceField:
    """Trans-LoRA readiness after training; a select, not a checkbox, because an unticked
    box sends nothing and a missing key means "the default". `default`: what a missing
    key becomes (keep_transferable_default(), read when a form is made); None in the
    class's declaration, so no default is fixed before the fleet is read."""
    return forms.TypedChoiceField(
        label="Keep transferable",
        choices=[
            ("True", "Yes — keep 5 seeds and train the Trans-LoRA discriminator after the run"),
            ("False", "No"),
        ],
        coerce=lambda value: value in (True, "True"),
        initial=default,
        required=False,
        empty_value=default,
        help_text=TRANSFERABLE_HELP + ("" if default in (True, None) else ONE_WORKER_HELP),
    )


def keeps_transferable(config: dict[str, Any]) -> bool:
    """What a cell or run stored (cell_create and cell_run_create resolve a missing key
    through the form); a record from before that has no key gets today's default."""
    stored = config.get("keep_transferable")
    return keep_transferable_default() if stored is None else stored is not False


METHOD_NAMES = {"supervised": "Supervised training", "dpo": "DPO", "simpo": "SimPO"}
PAIR_SHAPE = (
    '{"input": {"messages": [...]}, "preferred_output": [{"role": "assistant", ...}], '
    '"non_preferred_output": [...]}'
)


PREFERENCE_METHODS = tuple(m for m in METHOD_NAMES if m != "supervised")


def methods_for(data_format: str | None) -> tuple[str, ...]:
    """The training methods a dataset validated as `data_format` suits: preference pairs
    suit DPO and SimPO, answers suit supervised training; every method while not known."""
    if not data_format:
        return tuple(METHOD_NAMES)
    return PREFERENCE_METHODS if data_format == PREFERENCE_FORMAT else ("supervised",)


def data_method_problem(training_method: str, data_format: str | None, what: str) -> str | None:
    """Why `what` (a dataset, in words), validated as `data_format`, cannot train with
    `training_method`: preference methods need preference pairs, supervised needs answers.
    None when they go together or the format is not known yet (the worker checks again)."""
    if training_method in methods_for(data_format):
        return None
    method = METHOD_NAMES.get(training_method, training_method)
    if training_method == "supervised":
        return (
            f"{method} learns answers, and {what} holds preference pairs: choose DPO or "
            "SimPO as the training method, or a dataset of answers."
        )
    return (
        f"{method} trains on preference pairs, and {what} holds {data_format} examples: "
        f"choose a dataset with one pair per line ({PAIR_SHAPE}), or supervised training."
    )


def effective_hparams(config: dict[str, Any]) -> dict[str, Any]:
    """Preset values, overridden by every hyperparameter the user set."""
    values = preset_values(config.get("preset"))
    values.update({n: config[n] for n in PARAM_NAMES if not blank(config.get(n))})
    return values


def train_config_dict(
    config: dict[str, Any],
    *,
    data_path: str,
    output_dir: Path | str,
    val_path: str | None = None,
) -> dict[str, Any]:
    """Keyword arguments for finetune_core's TrainConfig."""
    values = effective_hparams(config)
    values["target_modules"] = resolve_target_modules(values["target_modules"])
    return {
        "model": config["base_model"],
        "data": data_path,
        "output_dir": str(output_dir),
        **values,
        # The operator's cap, put in the run's inputs by cell_run_create.
        **(
            {"keep_checkpoints": config["keep_checkpoints"]} if "keep_checkpoints" in config else {}
        ),
        # A separate validation file replaces the held-out share of the training data.
        **({"val_data": val_path} if val_path else {}),
    }
