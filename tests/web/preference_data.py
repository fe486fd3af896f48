"""A small preference file in OpenAI's DPO format and the same prompts as chat data: for
the DPO tests of the API and the notebook."""

from __future__ import annotations

import json


def preference_jsonl(pairs: list[tuple[str, str, str]]) -> bytes:
    """(prompt, preferred, non-preferred) triples as a preference file."""
    return "".join(
        json.dumps(
            {
                "input": {"messages": [{"role": "user", "content": q}]},
                "preferred_output": [{"role": "assistant", "content": good}],
                "non_preferred_output": [{"role": "assistant", "content": bad}],
            }
        )
        + "\n"
        for q, good, bad in pairs
    ).encode()


PAIRS = [(f"What is {i} plus one?", f"{i + 1}", f"{i + 2}") for i in range(12)]
PREFERENCE = preference_jsonl(PAIRS)
CHAT = "".join(
    json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
    + "\n"
    for q, a, _ in PAIRS
).encode()
