"""Fuzzing: whatever bytes a user uploads, validation returns issues and never raises."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from finetune_core.data import FORMATS, ISSUE_CODES, Example, iter_records, validate_file

FUZZ = settings(
    max_examples=120,
    deadline=None,
    database=None,  # leave no .hypothesis folder in the repo
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
roles = st.sampled_from(["system", "user", "assistant", "bot", "", None])
messages = st.fixed_dictionaries(
    {"role": roles},
    optional={
        "content": json_scalars | json_values,
        "weight": st.sampled_from([0, 1, 2, True, -1, 0.5]),
    },
)
chat_records = st.fixed_dictionaries({"messages": st.lists(messages, max_size=4) | json_values})
# Any text JSON or CSV might hold, including lone surrogates, NULs and odd line breaks.
lines = (
    chat_records.map(json.dumps)
    | json_values.map(json.dumps)
    | st.text(max_size=60)
    | st.sampled_from(["{", "[", "}", "]", '"a","b"', "\ufeff{}", '{"prompt": "\\ud800"}'])
)
suffixes = st.sampled_from([".jsonl", ".json", ".csv", ".tsv", ".txt"])
formats = st.sampled_from([None, *FORMATS])


def check(path: object, fmt: str | None) -> None:
    report = validate_file(path, fmt=fmt, max_errors=10)
    assert {i.code for i in report.issues} <= ISSUE_CODES
    json.dumps(report.to_dict())
    examples = [r for r in iter_records(path, fmt=fmt) if isinstance(r, Example)]
    assert len(examples) == report.n_examples
    for example in examples:
        assert any(m.role == "assistant" and m.weight for m in example.messages)


@FUZZ
@given(data=st.binary(max_size=400), suffix=suffixes, fmt=formats)
def test_random_bytes_never_crash(tmp_path, data, suffix, fmt):
    path = tmp_path / f"upload{suffix}"
    path.write_bytes(data)
    check(path, fmt)


@FUZZ
@given(
    rows=st.lists(lines, max_size=8),
    suffix=suffixes,
    fmt=formats,
    newline=st.sampled_from(["\n", "\r\n", "\r"]),
)
def test_json_ish_lines_never_crash(tmp_path, rows, suffix, fmt, newline):
    path = tmp_path / f"upload{suffix}"
    path.write_bytes(newline.join(rows).encode("utf-8", "surrogatepass"))
    check(path, fmt)


@FUZZ
@given(doc=json_values | st.fixed_dictionaries({"examples": st.lists(json_values, max_size=4)}))
def test_json_documents_never_crash(tmp_path, doc):
    path = tmp_path / "task.json"
    path.write_text(json.dumps(doc, indent=2))
    for fmt in (None, "bigbench", "alpaca"):
        check(path, fmt)


def test_deep_nesting_is_an_issue_not_a_crash(tmp_path):
    path = tmp_path / "deep.jsonl"
    path.write_text("[" * 100_000 + "\n")
    assert [i.code for i in validate_file(path, fmt="chat").issues] == ["invalid_json"]


@settings(max_examples=60, deadline=None, database=None)
@given(rows=st.lists(chat_records.map(json.dumps) | st.text(max_size=30), max_size=6))
def test_token_check_never_crashes(tiny_tokenizer, rows):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "chat.jsonl"
        path.write_bytes("\n".join(rows).encode("utf-8", "surrogatepass"))
        report = validate_file(path, fmt="chat", tokenizer=tiny_tokenizer, max_length=20)
        assert {i.code for i in report.issues} <= ISSUE_CODES - {"template_error"}
