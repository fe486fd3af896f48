"""Preference data (OpenAI's DPO format): detection, line-numbered errors with stable codes,
token statistics of prompt, chosen and rejected, and a parser fuzzed with hypothesis."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from finetune_core.data import (
    ISSUE_CODES,
    dataset_stats,
    detect_format,
    iter_records,
    read_examples,
    validate_file,
)
from finetune_core.data.types import PreferenceExample


def pair(prompt="What is 2+3?", good="5", bad="6", **changes) -> dict:
    record = {
        "input": {"messages": [{"role": "user", "content": prompt}]},
        "preferred_output": [{"role": "assistant", "content": good}],
        "non_preferred_output": [{"role": "assistant", "content": bad}],
    }
    record.update(changes)
    return {k: v for k, v in record.items() if v is not None}


def write(path: Path, records: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n")
    return path


def test_a_preference_file_is_detected_and_read(tmp_path) -> None:
    path = write(tmp_path / "prefs.jsonl", [pair(), pair("Sky?", "blue", "green")])
    assert detect_format(path) == "preference"
    report = validate_file(path)
    assert (report.format, report.ok, report.n_examples) == ("preference", True, 2)
    first, second = read_examples(path)
    assert isinstance(first, PreferenceExample) and second.line == 2
    assert (first.chosen.content, first.rejected.content) == ("5", "6")
    assert [m.role for m in first.with_rejected().messages] == ["user", "assistant"]


def test_earlier_assistant_turns_of_the_input_are_context() -> None:
    from finetune_core.data.preference import parse_preference

    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "2+3?"},
    ]
    example, issues = parse_preference(pair(input={"messages": messages}), 1)
    assert not issues and [m.weight for m in example.prompt] == [1, 0, 1]


BAD = [
    ("missing_input", pair(input=None)),
    ("missing_input", pair(input="What is 2+3?")),
    ("missing_input", pair(input={"prompt": "x"})),
    ("messages_not_list", pair(input={"messages": "x"})),
    ("missing_messages", pair(input={"messages": []})),
    ("unrecognized_role", pair(input={"messages": [{"role": "bot", "content": "x"}]})),
    ("missing_output", pair(preferred_output=None)),
    ("missing_output", pair(non_preferred_output=[])),
    ("missing_output", pair(preferred_output="5")),
    ("multiple_outputs", pair(preferred_output=[{"role": "assistant", "content": "5"}] * 2)),
    ("wrong_role", pair(preferred_output=[{"role": "user", "content": "5"}])),
    ("wrong_role", pair(input={"messages": [{"role": "assistant", "content": "x"}]})),
    ("missing_content", pair(non_preferred_output=[{"role": "assistant"}])),
    ("content_not_string", pair(preferred_output=[{"role": "assistant", "content": 5}])),
    ("identical_outputs", pair(good="5", bad="5")),
    ("not_an_object", [1, 2]),
    ("invalid_json", "{not json"),
]


@pytest.mark.parametrize(("code", "record"), BAD, ids=[f"{c}-{i}" for i, (c, _) in enumerate(BAD)])
def test_each_problem_has_a_stable_code_and_its_line(tmp_path, code: str, record) -> None:
    path = write(tmp_path / "prefs.jsonl", [pair(), pair("Sky?", "blue", "green"), record])
    report = validate_file(path, fmt="preference")
    assert [(i.code, i.line) for i in report.issues] == [(code, 3)], report.issues
    assert code in ISSUE_CODES and not report.ok and report.n_examples == 2


def test_too_long_names_the_line_and_is_a_warning(tmp_path, tiny_tokenizer) -> None:
    path = write(tmp_path / "prefs.jsonl", [pair(), pair(bad="no, " * 40)])
    report = validate_file(path, tokenizer=tiny_tokenizer, max_length=60)
    assert [(i.code, i.line, i.level) for i in report.issues] == [("too_long", 2, "warning")]
    assert report.ok


def test_statistics_count_prompt_chosen_and_rejected_tokens(tmp_path, tiny_tokenizer) -> None:
    path = write(tmp_path / "prefs.jsonl", [pair(good="5", bad="six or seven"), pair()])
    stats = dataset_stats(read_examples(path), tiny_tokenizer, max_length=512)
    assert stats["rows"] == 2
    prompt = tiny_tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2+3?"}], tokenize=True, add_generation_prompt=True
    )
    prompt = prompt["input_ids"] if isinstance(prompt, dict) or hasattr(prompt, "keys") else prompt
    assert stats["prompt_tokens"]["max"] == len(prompt)
    assert stats["rejected_tokens"]["max"] > stats["chosen_tokens"]["max"]
    longest = stats["prompt_tokens"]["max"] + stats["rejected_tokens"]["max"]
    assert stats["tokens"]["max"] == longest and stats["n_truncated"] == 0


def test_cli_validate_and_stats_detect_the_format(tmp_path, capsys) -> None:
    from finetune_core.cli import main

    path = write(tmp_path / "prefs.jsonl", [pair(), pair(good="5", bad="5")])
    assert main(["validate", str(path)]) == 1
    assert "line 2: [identical_outputs]" in capsys.readouterr().out
    write(path, [pair()])
    assert main(["stats", str(path), "--model", "tiny-llama", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert {"prompt_tokens", "chosen_tokens", "rejected_tokens"} <= set(stats)


# --- fuzzing ---------------------------------------------------------------------------------

FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=12)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
roles = st.sampled_from(["system", "user", "assistant", "bot", None])
messages = st.fixed_dictionaries(
    {"role": roles}, optional={"content": st.text(max_size=8) | values, "weight": values}
)
outputs = st.lists(messages, max_size=2) | values
records = st.fixed_dictionaries(
    {},
    optional={
        "input": st.fixed_dictionaries({"messages": st.lists(messages, max_size=3) | values})
        | values,
        "preferred_output": outputs,
        "non_preferred_output": outputs,
    },
)


@FUZZ
@given(rows=st.lists(records.map(json.dumps) | st.text(max_size=30), max_size=6))
def test_any_preference_lines_give_known_codes_or_valid_pairs(tmp_path, rows) -> None:
    path = tmp_path / "prefs.jsonl"
    path.write_bytes("\n".join(rows).encode("utf-8", "surrogatepass"))
    report = validate_file(path, fmt="preference", max_errors=10)
    assert {i.code for i in report.issues} <= ISSUE_CODES
    json.dumps(report.to_dict())
    pairs = [r for r in iter_records(path, fmt="preference") if isinstance(r, PreferenceExample)]
    assert len(pairs) == report.n_examples
    for example in pairs:
        assert example.chosen.role == example.rejected.role == "assistant"
        assert example.chosen.content != example.rejected.content
        assert example.prompt and example.prompt[-1].role != "assistant"
