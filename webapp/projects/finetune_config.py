"""Fine-tune hyperparameters: presets, form fields with help text, the effective config.

Pure Python: the web process builds the dict the worker turns into a TrainConfig.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django import forms

PRESETS: dict[str, dict[str, Any]] = {
    "quick": {"epochs": 1, "learning_rate": 3e-4, "lora_r": 8, "lora_alpha": 16, "max_length": 512},
    "balanced": {
        "epochs": 2,
        "learning_rate": 2e-4,
        "lora_r": 16,
        "lora_alpha": 32,
        "max_length": 1024,
    },
    "thorough": {
        "epochs": 3,
        "learning_rate": 1e-4,
        "lora_r": 32,
        "lora_alpha": 64,
        "max_length": 2048,
    },
}
PRESET_CHOICES = [
    ("quick", "Quick — 1 epoch, small adapter: a first look"),
    ("balanced", "Balanced — 2 epochs: the usual choice"),
    ("thorough", "Thorough — 3 epochs, larger adapter: best quality, slowest"),
]
DEFAULT_PRESET = "balanced"


# The target_modules choices and the layer names they stand for (Llama and Gemma alike).
TARGET_MODULES: dict[str, str | list[str]] = {
    "all-linear": "all-linear",
    "attention": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "q_proj,v_proj": ["q_proj", "v_proj"],
    "mlp": ["gate_proj", "up_proj", "down_proj"],
}


@dataclass(frozen=True)
class Param:
    name: str
    field: type[forms.Field]
    default: Any
    help: str
    kwargs: tuple[tuple[str, Any], ...] = ()
    choices: tuple[str, ...] = ()


# Defaults not set by a preset. A blank form field means "the preset's (or this) default".
PARAMS: tuple[Param, ...] = (
    Param(
        "epochs",
        forms.IntegerField,
        2,
        "Passes over the training data.",
        (("min_value", 1), ("max_value", 100)),
    ),
    Param(
        "max_steps",
        forms.IntegerField,
        None,
        "Stop after this many optimizer steps (overrides epochs). Blank: no limit.",
        (("min_value", 1),),
    ),
    Param(
        "learning_rate",
        forms.FloatField,
        2e-4,
        "Step size of the optimizer. Lower it if the loss jumps or becomes NaN.",
        (("min_value", 1e-7), ("max_value", 0.5)),
    ),
    Param(
        "lora_r",
        forms.IntegerField,
        16,
        "LoRA rank: the adapter's capacity. Larger learns more, trains slower.",
        (("min_value", 1), ("max_value", 256)),
    ),
    Param(
        "lora_alpha",
        forms.IntegerField,
        32,
        "LoRA scaling; usually twice the rank.",
        (("min_value", 1), ("max_value", 1024)),
    ),
    Param(
        "lora_dropout",
        forms.FloatField,
        0.05,
        "Dropout on the adapter's input; fights overfitting on small data.",
        (("min_value", 0.0), ("max_value", 0.9)),
    ),
    Param(
        "method",
        forms.ChoiceField,
        "lora",
        "LoRA, or DoRA (weight-decomposed LoRA: a little better, a little slower).",
        choices=("lora", "dora"),
    ),
    Param(
        "target_modules",
        forms.ChoiceField,
        "all-linear",
        "Which layers get an adapter: every linear layer (QLoRA's choice), attention "
        "only, q and v only (the original LoRA), or the MLP only.",
        choices=tuple(TARGET_MODULES),
    ),
    Param(
        "quantization",
        forms.ChoiceField,
        "nf4",
        "Load the base model in 4-bit NF4 (less memory) or unquantized.",
        choices=("nf4", "none"),
    ),
    Param(
        "batch_size",
        forms.IntegerField,
        4,
        "Examples per micro-batch. Lower it on out-of-memory errors.",
        (("min_value", 1), ("max_value", 256)),
    ),
    Param(
        "grad_accum",
        forms.IntegerField,
        1,
        "Micro-batches per optimizer step (effective batch = batch size × this).",
        (("min_value", 1), ("max_value", 256)),
    ),
    Param(
        "max_length",
        forms.IntegerField,
        1024,
        "Tokens per example; longer examples are cut.",
        (("min_value", 16), ("max_value", 32768)),
    ),
    Param(
        "warmup_ratio",
        forms.FloatField,
        0.03,
        "Share of steps over which the learning rate ramps up.",
        (("min_value", 0.0), ("max_value", 0.5)),
    ),
    Param(
        "weight_decay",
        forms.FloatField,
        0.0,
        "L2 penalty on adapter weights.",
        (("min_value", 0.0), ("max_value", 1.0)),
    ),
    Param(
        "lr_scheduler",
        forms.ChoiceField,
        "cosine",
        "How the learning rate decays after warm-up.",
        choices=("cosine", "linear", "constant"),
    ),
    Param(
        "val_fraction",
        forms.FloatField,
        0.1,
        "Share of the examples held out to measure validation loss.",
        (("min_value", 0.0), ("max_value", 0.5)),
    ),
    Param(
        "eval_every",
        forms.IntegerField,
        50,
        "Measure validation loss every this many steps.",
        (("min_value", 1),),
    ),
    Param(
        "save_every",
        forms.IntegerField,
        50,
        "Save a resumable checkpoint every this many steps.",
        (("min_value", 1),),
    ),
    Param(
        "final",
        forms.ChoiceField,
        "last",
        "Which adapter becomes final: the last step, or the lowest validation loss.",
        choices=("last", "best"),
    ),
    Param(
        "seed",
        forms.IntegerField,
        0,
        "Random seed; the same seed and data give the same run.",
        (("min_value", 0),),
    ),
)
PARAM_NAMES = tuple(p.name for p in PARAMS)


def param_fields() -> dict[str, forms.Field]:
    """Form fields for every hyperparameter; all optional (blank = preset default)."""
    fields: dict[str, forms.Field] = {}
    for p in PARAMS:
        default = PRESETS[DEFAULT_PRESET].get(p.name, p.default)
        help_text = f"{p.help} Default: {default if default is not None else 'none'}."
        if p.field is forms.ChoiceField:
            fields[p.name] = forms.ChoiceField(
                choices=[("", "— preset —")] + [(c, c) for c in p.choices],
                required=False,
                help_text=help_text,
            )
        else:
            fields[p.name] = p.field(required=False, help_text=help_text, **dict(p.kwargs))
    return fields


def keep_transferable_field() -> forms.TypedChoiceField:
    """Trans-LoRA readiness after training; a select, not a checkbox, because an unticked
    box sends nothing and a missing key means "the default" (on)."""
    return forms.TypedChoiceField(
        label="Keep transferable",
        choices=[
            ("True", "Yes — keep 5 seeds and train the Trans-LoRA discriminator after the run"),
            ("False", "No"),
        ],
        coerce=lambda value: value in (True, "True"),
        initial=True,
        required=False,
        empty_value=True,
        help_text="So the adapter can move to a new base model even after the dataset is deleted.",
    )


def keeps_transferable(config: dict[str, Any]) -> bool:
    return config.get("keep_transferable", True) is not False


def effective_hparams(config: dict[str, Any]) -> dict[str, Any]:
    """Preset values, overridden by every hyperparameter the user set."""
    preset = PRESETS.get(config.get("preset") or DEFAULT_PRESET, PRESETS[DEFAULT_PRESET])
    values = {p.name: preset.get(p.name, p.default) for p in PARAMS}
    for name in PARAM_NAMES:
        value = config.get(name)
        if value is not None and value != "":
            values[name] = value
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
    values["target_modules"] = TARGET_MODULES.get(values["target_modules"], "all-linear")
    return {
        "model": config["base_model"],
        "data": data_path,
        "output_dir": str(output_dir),
        **values,
        # A separate validation file replaces the held-out share of the training data.
        **({"val_data": val_path} if val_path else {}),
    }
