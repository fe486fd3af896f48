"""Write webapp/core/model_catalog.json from finetune_core's registry.

Run in the worker environment (`python -m workers.catalog`, e.g. from `make run`); the
web process only reads the JSON file. Throughput numbers already in the file are kept.
"""

from __future__ import annotations

import json
from typing import Any

from webapp.core.catalog import CATALOG_PATH

# Trained tokens per second on a 2-core CPU (LoRA, batch 4, max_length 512).
DEFAULT_TOKENS_PER_S = {"smollm2-135m-instruct": 150, "gemma-3-270m": 80, "tiny-llama": 370}


def build() -> dict[str, Any]:
    from finetune_core.models.catalog import describe_all

    old = json.loads(CATALOG_PATH.read_text()) if CATALOG_PATH.exists() else {"models": []}
    known = {m["name"]: m for m in old.get("models", [])}
    rows = []
    for facts in describe_all():
        name = facts["name"]
        if name == "tiny-llama-wide":
            continue
        row = dict(known.get(name, {"name": name, "label": name}))
        row["description"] = facts.get("description", "")
        for key in ("parameters", "context_length", "model_type"):
            if facts.get(key):
                row[key] = facts[key]
        # A GGUF header's architecture is the Hugging Face model_type (llama, gemma3); the
        # web app refuses GGUF exports of the ones the writer does not know.
        if "model_type" not in row and facts.get("architecture", "").islower():
            row["model_type"] = facts["architecture"]
        row.setdefault("tokens_per_s_cpu", DEFAULT_TOKENS_PER_S.get(name, 100))
        rows.append(row)
    return {"_comment": old.get("_comment", ""), "models": rows}


def main() -> None:
    CATALOG_PATH.write_text(json.dumps(build(), indent=2) + "\n")
    print(f"wrote {CATALOG_PATH}")


if __name__ == "__main__":
    main()
