"""Every training setting, declared once: the engine's TrainConfig, the notebook's form
and the `/v1` API's hyperparameters are all built from these declarations.

Adding a setting is one `setting(...)` line here, plus its use in the engine.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from finetune_core.contracts.settings import (
    API,
    ENGINE,
    FORM,
    Setting,
    problems_of,
    setting,
    settings_of,
)
from finetune_core.errors import FinetuneError

ENGINE_ONLY = frozenset({ENGINE})
CHECKPOINTING = ("auto", "on", "off")
# The notebook's form and the engine, not the API's hyperparameters (OpenAI's
# method.dpo.hyperparameters has no such name).
FORM_AND_ENGINE = frozenset({FORM, ENGINE})
# beta when none is given: the DPO paper's and the SimPO paper's usual values.
DEFAULT_BETA = {"dpo": 0.1, "simpo": 2.0}
# What preference methods log per step (and, prefixed val_, per evaluation) beside the loss.
PREFERENCE_METRICS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")

# The target_modules choices and the layer names they stand for (Llama and Gemma alike).
TARGET_MODULES: dict[str, str | list[str]] = {
    "all-linear": "all-linear",
    "attention": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "q_proj,v_proj": ["q_proj", "v_proj"],
    "mlp": ["gate_proj", "up_proj", "down_proj"],
}


@dataclass
class TrainConfig:
    # Data and where the run writes (the engine's own: the web app fills them in)
    model: str = setting(
        "smollm2-135m-instruct",
        "Base model: a built-in name, a local folder or a hub id.",
        surfaces=ENGINE_ONLY,
    )
    data: str = setting(
        "",
        "Training file (chat/prompt-completion JSONL, Alpaca, BIG-bench task.json, CSV).",
        surfaces=ENGINE_ONLY,
    )
    output_dir: str = setting(
        "runs/latest", "Where checkpoints, adapters and the manifest go.", surfaces=ENGINE_ONLY
    )
    data_format: str | None = setting(
        None,
        "Force a format: chat, prompt_completion, alpaca, bigbench, csv; detected when not given.",
        kind=str,
        surfaces=ENGINE_ONLY,
    )
    column_map: dict[str, str] | None = setting(
        None, 'CSV: {"prompt": column, "completion": column}.', kind=dict, surfaces=ENGINE_ONLY
    )
    val_data: str | None = setting(
        None,
        "A separate validation file; else a split of the data.",
        kind=str,
        surfaces=ENGINE_ONLY,
    )
    limit_examples: int | None = setting(
        None, "Use only the first N examples.", kind=int, minimum=1, surfaces=ENGINE_ONLY
    )
    init_adapter: str | None = setting(
        None,
        "Start from this adapter (a PEFT adapter folder, or a finished run's folder) instead of "
        "a fresh one: continue a supervised run, or run DPO on it (its reference is then this "
        "adapter, frozen). Its rank, alpha and layers replace lora_r, lora_alpha and "
        "target_modules.",
        kind=str,
        surfaces=ENGINE_ONLY,
    )
    # Offered in the notebook's form and the APIs, in the form's order
    training_method: str = setting(
        "supervised",
        "Supervised learns the answers of chat data; DPO and SimPO learn from preference data "
        "(a preferred and a non-preferred answer per prompt) to prefer the preferred one.",
        choices=("supervised", "dpo", "simpo"),
        choice_labels=(
            ("supervised", "Supervised — learn the answers"),
            ("dpo", "DPO — prefer the preferred answer, staying close to the start"),
            ("simpo", "SimPO — reference-free preference tuning"),
        ),
        label="Training method",
    )
    beta: float | None = setting(
        None,
        "DPO and SimPO: how sharply the model is pushed to prefer the preferred answer. DPO: "
        "lower strays further from the starting model (0.1 is usual); SimPO: 2 to 2.5. "
        "Blank: 0.1 for DPO, 2.0 for SimPO.",
        kind=float,
        minimum=0.001,
        maximum=20.0,
        label="Beta",
        openai_name="beta",
    )
    simpo_gamma: float = setting(
        1.0,
        "SimPO: the margin the preferred answer's length-normalised reward must beat the other's "
        "by; about half of beta works well.",
        minimum=0.0,
        maximum=20.0,
        label="SimPO margin",
    )
    # 0 by default: plain DPO as the paper and OpenAI's DPO define it, so a run without it
    # trains as before. Iterative RPO (Pang et al. 2024) uses 1.0; TRL's rpo_alpha (in TRL
    # 1.x the loss_type ["sigmoid", "sft"]) is the same term, normalised the same way.
    rpo_alpha: float = setting(
        0.0,
        "DPO: weight of a supervised (NLL) term on the preferred answer beside the DPO loss. "
        "Plain DPO can lower both answers' likelihoods while widening their gap; this keeps "
        "the preferred one likely (1.0 as in Iterative RPO). 0: plain DPO. Other methods "
        "ignore it.",
        minimum=0.0,
        maximum=10.0,
        surfaces=FORM_AND_ENGINE,
        label="DPO NLL weight",
    )
    epochs: int = setting(
        1,
        "Passes over the training data.",
        minimum=1,
        maximum=100,
        label="Epochs",
        openai_name="n_epochs",
    )
    max_steps: int | None = setting(
        None,
        "Stop after this many optimizer steps (overrides epochs). Blank: no limit.",
        kind=int,
        minimum=1,
        label="Max steps",
    )
    learning_rate: float = setting(
        2e-4,
        "Step size of the optimizer. Lower it if the loss jumps or becomes NaN.",
        minimum=1e-7,
        maximum=0.5,
        label="Learning rate",
    )
    lora_r: int = setting(
        16,
        "LoRA rank: the adapter's capacity. Larger learns more, trains slower.",
        minimum=1,
        maximum=256,
        label="LoRA rank",
        aliases=("rank",),
    )
    lora_alpha: int = setting(
        32,
        "LoRA scaling; usually twice the rank.",
        minimum=1,
        maximum=1024,
        label="LoRA alpha",
        aliases=("alpha",),
    )
    lora_dropout: float = setting(
        0.05,
        "Dropout on the adapter's input; fights overfitting on small data.",
        minimum=0.0,
        maximum=0.9,
        label="LoRA dropout",
        aliases=("dropout",),
    )
    method: str = setting(
        "lora",
        "LoRA, or DoRA (weight-decomposed LoRA: a little better, a little slower).",
        choices=("lora", "dora"),
        label="Adapter method",
    )
    lora_scaling: str = setting(
        "standard",
        "How the adapter's update is scaled: alpha / rank (LoRA's), or alpha / sqrt(rank) "
        "(rank-stabilised LoRA: keeps learning at high ranks, where the standard scale shrinks "
        "the update).",
        choices=("standard", "rslora"),
        choice_labels=(("standard", "alpha / rank"), ("rslora", "alpha / √rank (rsLoRA)")),
        label="LoRA scaling",
    )
    target_modules: str | list[str] = setting(
        "all-linear",
        "Which layers get an adapter: every linear layer (QLoRA's choice), "
        "attention only, q and v only (the original LoRA), or the MLP only.",
        choices=tuple(TARGET_MODULES),
        label="Adapted layers",
    )
    quantization: str = setting(
        "nf4",
        "Load the base model in 4-bit NF4 (less memory) or unquantized.",
        choices=("nf4", "none"),
        label="Quantization",
    )
    neftune_alpha: float = setting(
        0.0,
        "NEFTune: uniform noise on the input embeddings while training (5 is the paper's "
        "usual value); often helps instruction tuning on small data. 0: off.",
        minimum=0.0,
        maximum=20.0,
        label="NEFTune noise",
    )
    batch_size: int = setting(
        4,
        "Examples per micro-batch. Lower it on out-of-memory errors.",
        minimum=1,
        maximum=256,
        label="Batch size",
        openai_name="batch_size",
    )
    grad_accum: int = setting(
        1,
        "Micro-batches per optimizer step (effective batch = batch size × this).",
        minimum=1,
        maximum=256,
        label="Gradient accumulation",
    )
    max_length: int = setting(
        512,
        "Tokens per example; longer examples are cut.",
        minimum=8,
        maximum=32768,
        label="Max length",
    )
    warmup_ratio: float = setting(
        0.03,
        "Share of steps over which the learning rate ramps up.",
        minimum=0.0,
        maximum=0.5,
        label="Warm-up share",
    )
    weight_decay: float = setting(
        0.0, "L2 penalty on adapter weights.", minimum=0.0, maximum=1.0, label="Weight decay"
    )
    lr_scheduler: str = setting(
        "cosine",
        "How the learning rate decays after warm-up.",
        choices=("cosine", "linear", "constant"),
        label="Learning-rate schedule",
    )
    val_fraction: float = setting(
        0.1,
        "Share of the examples held out to measure validation loss.",
        minimum=0.0,
        maximum=0.5,
        label="Validation share",
    )
    eval_every: int = setting(
        50, "Measure validation loss every this many steps.", minimum=1, label="Evaluate every"
    )
    save_every: int = setting(
        50, "Save a resumable checkpoint every this many steps.", minimum=1, label="Save every"
    )
    keep_checkpoints: int = setting(
        0,
        "Keep only the newest this many checkpoints, deleting older ones; 0 keeps all.",
        minimum=0,
        surfaces=ENGINE_ONLY,
    )
    final: str = setting(
        "last",
        "Which adapter becomes final: the last step, or the lowest validation loss.",
        choices=("last", "best"),
        label="Final adapter",
    )
    seed: int = setting(
        0, "Random seed; the same seed and data give the same run.", minimum=0, label="Seed"
    )
    # The engine's own switches
    optimizer: str = setting(
        "auto",
        "AdamW, or paged 8-bit AdamW (CUDA); auto picks by device.",
        choices=("auto", "adamw", "paged_adamw_8bit"),
        surfaces=ENGINE_ONLY,
    )
    grad_clip: float = setting(
        1.0,
        "Clip the gradient norm to this; 0 turns clipping off.",
        minimum=0.0,
        surfaces=ENGINE_ONLY,
    )
    packing: bool = setting(True, "Pack short examples into one row.", surfaces=ENGINE_ONLY)
    gradient_checkpointing: str = setting(
        "auto",
        "Recompute activations in the backward pass to save memory: on, off, or auto (off "
        "when the batch's activations take at most a quarter of the device's free memory).",
        choices=CHECKPOINTING,
        surfaces=ENGINE_ONLY,
    )
    max_val_rows: int = setting(
        64, "Validation rows measured at each evaluation.", minimum=1, surfaces=ENGINE_ONLY
    )
    extra: dict[str, Any] = setting(
        {}, "Free-form notes kept in the manifest.", surfaces=ENGINE_ONLY
    )

    def __post_init__(self) -> None:
        # Runs saved before gradient_checkpointing took auto hold true or false.
        if isinstance(self.gradient_checkpointing, bool):
            self.gradient_checkpointing = "on" if self.gradient_checkpointing else "off"

    def validate(self) -> None:
        problems = [] if self.data else ["data: a training file is required"]
        problems += problems_of(self)
        if self.init_adapter is not None and not self.init_adapter:
            problems.append("init_adapter: give an adapter folder, or leave it out")
        if problems:
            raise FinetuneError("invalid training config: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def preference(self) -> bool:
        """Trained on preference pairs (DPO, SimPO) rather than on answers."""
        return self.training_method != "supervised"

    @property
    def effective_beta(self) -> float:
        """beta as given, else the method's usual value (DPO 0.1, SimPO 2.0)."""
        if self.beta is not None:
            return self.beta
        return DEFAULT_BETA.get(self.training_method, 0.1)


def train_settings(surface: str | None = None) -> tuple[Setting, ...]:
    return settings_of(TrainConfig, surface)


def resolve_target_modules(value: str | list[str]) -> str | list[str]:
    """A target_modules choice name -> the layers it stands for; a list passes through."""
    return TARGET_MODULES.get(value, value) if isinstance(value, str) else value


# Presets set the defaults the notebook and the API start from; any setting given wins.
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
PRESET_LABELS = {
    "quick": "Quick — 1 epoch, small adapter: a first look",
    "balanced": "Balanced — 2 epochs: the usual choice",
    "thorough": "Thorough — 3 epochs, larger adapter: best quality, slowest",
}
DEFAULT_PRESET = "balanced"


def preset_values(preset: str | None) -> dict[str, Any]:
    """Every form/API setting's value under a preset (unknown or blank: the default preset)."""
    chosen = PRESETS.get(preset or DEFAULT_PRESET, PRESETS[DEFAULT_PRESET])
    return {s.name: chosen.get(s.name, s.default) for s in train_settings("form")}


def openai_hyperparameters() -> dict[str, str]:
    """OpenAI's hyperparameter names -> ours (its learning_rate_multiplier scales the preset's
    learning rate, so it has no setting of its own)."""
    return {s.openai_name: s.name for s in train_settings(API) if s.openai_name}


def setting_aliases() -> dict[str, str]:
    """Short names an API client may use for a setting -> the setting's name."""
    return {alias: s.name for s in train_settings(API) for alias in s.aliases}
