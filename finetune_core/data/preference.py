"""Preference pairs in OpenAI's DPO format, one JSONL line each:

    {"input": {"messages": [{"role": "user", "content": "..."}]},
     "preferred_output": [{"role": "assistant", "content": "..."}],
     "non_preferred_output": [{"role": "assistant", "content": "..."}]}

Like the other record parsers, `parse_preference` never raises on bad data: it returns
the DataIssues (stable codes, the line) that say what to fix.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from finetune_core.data.formats import DataIssue, Result, _parse_message, _type_name
from finetune_core.data.types import Message, PreferenceExample

OUTPUTS = ("preferred_output", "non_preferred_output")


def _prompt(record: dict[str, Any], line: int) -> tuple[tuple[Message, ...], list[DataIssue]]:
    raw = record.get("input")
    messages = raw.get("messages") if isinstance(raw, dict) else None
    if messages is None:
        if raw is None:
            what = 'the record has no "input": the prompt, as {"input": {"messages": [...]}}'
        elif not isinstance(raw, dict):
            what = f'"input" is {_type_name(raw)}, not an object {{"messages": [...]}}'
        else:
            what = '"input" has no "messages": the prompt\'s messages'
        return (), [DataIssue(line, "missing_input", what)]
    if not isinstance(messages, list):
        what = f'"input.messages" is {_type_name(messages)}, not a list'
        return (), [DataIssue(line, "messages_not_list", what)]
    if not messages:
        return (), [DataIssue(line, "missing_messages", '"input.messages" is empty')]
    parsed, issues = [], []
    for n, item in enumerate(messages, 1):
        message, problems = _parse_message(item, n, line)
        issues += problems
        if message:
            # Earlier assistant turns are context: only the outputs are compared.
            parsed.append(replace(message, weight=0) if message.role == "assistant" else message)
    if not issues and parsed[-1].role == "assistant":
        what = "the input's last message is from the assistant; end it with the user's turn"
        issues.append(DataIssue(line, "wrong_role", what + " that the outputs answer"))
    return tuple(parsed), issues


def _output(record: dict[str, Any], key: str, line: int) -> tuple[Message | None, list[DataIssue]]:
    raw = record.get(key)
    shape = f'"{key}" must be a list of one assistant message'
    if raw is None or raw == []:
        return None, [DataIssue(line, "missing_output", f"{shape}; it is missing or empty")]
    if not isinstance(raw, list):
        return None, [DataIssue(line, "missing_output", f"{shape}, not {_type_name(raw)}")]
    if len(raw) > 1:
        return None, [DataIssue(line, "multiple_outputs", f"{shape}; it has {len(raw)}")]
    message, issues = _parse_message(raw[0], 1, line)
    issues = [replace(i, message=f'"{key}": {i.message}') for i in issues]
    if message is not None and message.role != "assistant":
        what = f'"{key}" holds a {message.role!r} message; the answer must have role "assistant"'
        return None, [DataIssue(line, "wrong_role", what)]
    return message, issues


def parse_preference(record: object, line: int) -> Result:
    """One preference pair, or the issues that keep it from being one."""
    if not isinstance(record, dict):
        what = f"expected an object, got {_type_name(record)}"
        return None, [DataIssue(line, "not_an_object", what)]
    prompt, issues = _prompt(record, line)
    chosen, problems = _output(record, OUTPUTS[0], line)
    rejected, more = _output(record, OUTPUTS[1], line)
    issues += problems + more
    if issues:
        return None, issues
    assert chosen is not None and rejected is not None
    if chosen.content == rejected.content:
        what = "the preferred and non-preferred answers are identical: nothing to prefer"
        return None, [DataIssue(line, "identical_outputs", what)]
    # Both answers are trained (weight 1): the comparison is between them.
    chosen, rejected = replace(chosen, weight=1), replace(rejected, weight=1)
    return PreferenceExample((*prompt, chosen), line=line, rejected=rejected), []
