"""How many examples a dataset version holds, said honestly: an invalid file is not "28 examples".

The validator counts every readable example (`n_examples`) and lists problems by line;
for an invalid file the page says how many examples are usable and how many lines are bad.
"""

from __future__ import annotations

from typing import Any

# A readable example that still cannot be used (it counts in n_examples and as an error).
UNUSABLE_EXAMPLE_CODES = frozenset({"template_error"})
MORE_NOT_LISTED = "too_many_errors"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def examples_text(version: Any) -> str:
    """`28 examples`, or for an invalid file `26 usable examples, 2 lines with errors`."""
    if version.n_examples is None:
        return ""
    noun = "prompt" if version.dataset.purpose == "evaluation" else "example"
    if version.status != "invalid":
        return _plural(version.n_examples, noun)
    issues = [i for i in (version.report or {}).get("issues") or [] if isinstance(i, dict)]
    errors = [i for i in issues if i.get("level", "error") == "error"]
    listed = [i for i in errors if i.get("code") != MORE_NOT_LISTED]
    bad_examples = {i.get("line") for i in listed if i.get("code") in UNUSABLE_EXAMPLE_CODES}
    bad_lines = {i.get("line") for i in listed}
    usable = max(0, version.n_examples - len(bad_examples))
    more = " and more" if len(listed) < len(errors) else ""
    text = f"{_plural(usable, 'usable ' + noun)}, {_plural(len(bad_lines), 'line')} with errors"
    return text + more
