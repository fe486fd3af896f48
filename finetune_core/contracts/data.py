"""The data formats the engine reads, by the name it gives each, with a label for people.

The dataset upload form offers them (beside "Detect from file"), the validator reports one
of them, and a fine-tune checks its method against it.
"""

from __future__ import annotations

DATA_FORMATS: tuple[tuple[str, str], ...] = (
    ("chat", "Chat messages (JSONL)"),
    ("prompt_completion", "Prompt and completion (JSONL)"),
    ("alpaca", "Alpaca instructions (JSON or JSONL)"),
    ("bigbench", "BIG-bench task (JSON)"),
    ("csv", "CSV"),
    ("preference", "Preference pairs (JSONL)"),
)
# The format preference methods (DPO, SimPO) train on.
PREFERENCE_FORMAT = "preference"
