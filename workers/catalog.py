"""Register the engine's built-in offline models as base-model records (`make run` runs
`python -m workers.catalog`; so does a worker image at start). A record registered before
keeps what the operator set: its label, whether it is offered, its licence, throughput."""

from __future__ import annotations

import os
from typing import Any

# Trained tokens per second on an idle 2-core CPU (LoRA, NF4): the estimate's fallback before
# a run of the model has been measured on the workers. SmolLM2: make bench-demo's fine-tune
# ran at 192 tokens/s (batch 4 x 128) on the quiet machine; a busy one runs several times
# slower, which the estimate's range says.
DEFAULT_TOKENS_PER_S = {"smollm2-135m-instruct": 180, "gemma-3-270m": 80, "tiny-llama": 370}
# Built for tests only: forms never offer it.
HIDDEN = {"tiny-llama-wide"}


def builtin_records() -> list[dict[str, Any]]:
    """The built-ins' facts, read from their GGUF headers (or the tiny models' configs)."""
    from finetune_core.models.catalog import describe_all

    rows = []
    for facts in describe_all():
        if "parameters" not in facts:  # its package is not installed on this host
            continue
        rows.append(
            {
                "name": facts["name"],
                "label": facts["label"],
                "hub_id": facts["hub_id"],
                "licence": facts["licence"],
                "description": facts["description"],
                "model_type": facts.get("model_type") or facts["architecture"].lower(),
                "parameters": facts["parameters"],
                "context_length": facts.get("context_length") or 0,
                **{k: facts.get(k) or 0 for k in ("vocab_size", "layers", "hidden_size")},
                "tokens_per_s_cpu": DEFAULT_TOKENS_PER_S.get(facts["name"]),
                "offered": facts["name"] not in HIDDEN,
            }
        )
    return rows


def register_builtins(records: list[dict[str, Any]] | None = None) -> list[str]:
    from webapp.ops.base_models import base_model_builtin_register

    return [base_model_builtin_register(facts=r).name for r in records or builtin_records()]


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    import django

    django.setup()
    for name in register_builtins():
        print(f"registered built-in model {name}")


if __name__ == "__main__":
    main()
