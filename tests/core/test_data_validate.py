"""Every issue code comes from a real bad file, with its line and a specific message."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from finetune_core.data import ISSUE_CODES, read_examples, validate_file
from finetune_core.errors import DataError
from finetune_core.models import load_tokenizer
from tests.core.test_data_preference import BAD as PREFERENCE_BAD

DATA = Path(__file__).resolve().parents[1] / "data"
QA_MAP = {"prompt": "question", "completion": "answer", "system": "persona"}


def issues(path: Path, **kwargs) -> list[tuple[int, str, str]]:
    report = validate_file(path, **kwargs)
    return [(i.line, i.code, str(i)) for i in report.issues]


def chat_line(*messages: tuple[str, str]) -> str:
    return json.dumps({"messages": [{"role": r, "content": c} for r, c in messages]})


GOOD = chat_line(("user", "hi"), ("assistant", "hello"))

# Issue codes the tests below have produced; checked against ISSUE_CODES at the end.
SEEN: set[str] = set()


def expect(found: list[tuple[int, str, str]], line: int, code: str, text: str) -> None:
    """Assert that `found` holds exactly one issue, at `line`, with `code`, whose message has `text`."""
    assert [(f[0], f[1]) for f in found] == [(line, code)], found
    assert text in found[0][2], found[0][2]
    SEEN.add(code)


def test_empty_file():
    expect(issues(DATA / "empty.jsonl"), 0, "empty_file", "the file is empty")


def test_blank_lines_only(tmp_path):
    path = tmp_path / "blank.jsonl"
    path.write_text("\n  \n\n" * 3000)  # past the sniffed head
    expect(issues(path), 0, "empty_file", "only blank lines")


def test_binary_file_png():
    expect(issues(DATA / "image.png"), 0, "binary_file", "binary file")
    expect(issues(DATA / "image.png", fmt="chat"), 0, "binary_file", "binary file")


def test_non_utf8_bytes_report_their_line():
    expect(
        issues(DATA / "latin1.jsonl"), 3, "not_utf8", "line 3: byte 47 (0xe9) is not valid UTF-8"
    )


def test_utf16_file(tmp_path):
    path = tmp_path / "u16.jsonl"
    path.write_bytes((GOOD + "\n").encode("utf-16"))
    expect(issues(path, fmt="chat"), 1, "not_utf8", "UTF-16")


def test_json_document_given_as_jsonl():
    expect(
        issues(DATA / "pretty_chat.jsonl"), 1, "json_not_jsonl", "not JSONL: one object per line"
    )


def test_json_array_on_one_line_given_as_jsonl(tmp_path):
    path = tmp_path / "array.jsonl"
    path.write_text(f"[{GOOD}, {GOOD}]\n")
    expect(issues(path, fmt="chat"), 1, "json_not_jsonl", "a JSON array, not JSONL")


def test_chat_errors_all_reported_with_lines():
    report = validate_file(DATA / "bad_chat.jsonl")
    assert report.format == "chat"
    assert report.n_examples == 2  # lines 1 and 12
    assert not report.ok
    found = [(i.line, i.code, str(i)) for i in report.issues]
    expected = [
        (2, "no_assistant_message", "line 2: no message has role 'assistant'"),
        (
            3,
            "unrecognized_role",
            "line 3: message 2 has role 'bot'; expected one of system, user, assistant",
        ),
        (4, "invalid_json", "line 4: invalid JSON at column 86: Expecting ',' delimiter"),
        (5, "not_an_object", "line 5: expected an object, got an array"),
        (6, "missing_messages", 'line 6: the object has no "messages" key'),
        (7, "messages_not_list", 'line 7: "messages" is a string, not a list'),
        (8, "missing_content", "line 8: message 1 has no content"),
        (9, "content_not_string", "line 9: message 1 content is an array, not a string"),
        (10, "invalid_weight", "line 10: message 2 has weight 2; expected 0 or 1"),
        (11, "no_assistant_message", "line 11: every assistant message has weight 0"),
    ]
    assert [(f[0], f[1]) for f in found] == [(e[0], e[1]) for e in expected]
    for (_, _, message), (_, _, text) in zip(found, expected, strict=True):
        assert message.startswith(text), message
    SEEN.update(e[1] for e in expected)


def test_several_problems_on_one_line(tmp_path):
    path = tmp_path / "multi.jsonl"
    row = {"messages": [{"role": "human", "content": 1}, {"role": "assistant", "weight": True}]}
    path.write_text(json.dumps(row) + "\n")
    assert [(i.line, i.code) for i in validate_file(path).issues] == [
        (1, "unrecognized_role"),
        (1, "content_not_string"),
        (1, "missing_content"),
        (1, "invalid_weight"),
    ]


def test_prompt_completion_missing_field():
    found = issues(DATA / "bad_prompt_completion.jsonl")
    assert found == [
        (2, "missing_field", 'line 2: the record has no "completion" field'),
        (3, "content_not_string", 'line 3: "prompt" is a int, not a string'),
    ]
    SEEN.add("missing_field")


def test_bigbench_example_without_answer(tmp_path):
    path = tmp_path / "task.json"
    task = {"examples": [{"input": "a", "target": "b"}, {"input": "c", "target_scores": {"x": 0}}]}
    path.write_text(json.dumps(task, indent=2))
    expect(issues(path), 2, "missing_field", 'example 2: the example has no string "target"')


def test_bigbench_without_examples(tmp_path):
    path = tmp_path / "task.json"
    path.write_text('{"name": "x",\n "examples": {}}')
    expect(issues(path, fmt="bigbench"), 1, "missing_field", '"examples" list')


def test_bigbench_invalid_json_reports_line(tmp_path):
    path = tmp_path / "task.json"
    path.write_text('{\n  "examples": [\n    {"input": "a", "target": "b"},\n  ]\n}\n')
    expect(issues(path), 4, "invalid_json", "line 4: invalid JSON")


def test_document_over_size_cap():
    found = issues(DATA / "alpaca.json", max_document_bytes=100)
    expect(found, 0, "file_too_large", "convert it to JSONL")


def test_csv_missing_mapped_column_names_existing_columns():
    mapping = {**QA_MAP, "completion": "response"}
    expect(
        issues(DATA / "qa.csv", column_map=mapping),
        1,
        "missing_column",
        "column 'response' (mapped to completion) is not in the header; "
        "the columns are: question, answer, persona",
    )


def test_csv_empty_cell(tmp_path):
    path = tmp_path / "qa.csv"
    path.write_text("question,answer\nq1,a1\nq2,\n")
    expect(
        issues(path, column_map=QA_MAP | {"system": "question"}),
        3,
        "missing_field",
        "column 'answer'",
    )


def test_csv_field_over_csv_limit(tmp_path):
    path = tmp_path / "big.csv"
    path.write_text(f"prompt,completion\nq,a\nq,{'x' * 200_000}\nq,a\n")
    report = validate_file(path)
    assert report.n_examples == 2
    expect([(i.line, i.code, str(i)) for i in report.issues], 3, "invalid_csv", "field larger")


def test_unknown_format(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("just some prose\n")
    expect(issues(path), 0, "unknown_format", "cannot tell the format")
    expect(issues(DATA / "chat.jsonl", fmt="xml"), 0, "unknown_format", "unknown format 'xml'")


def test_line_too_long_50mb_streams_in_bounded_memory(tmp_path):
    path = tmp_path / "huge.jsonl"
    with path.open("w") as f:
        f.write(GOOD + "\n")
        f.write('{"messages": "' + "a" * 50_000_000 + '"}\n')
        f.write(GOOD + "\n")
    tracemalloc.start()
    try:
        report = validate_file(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20
    assert report.n_examples == 2  # the line after the long one is still read
    expect(
        [(i.line, i.code, str(i)) for i in report.issues],
        2,
        "line_too_long",
        "line 2: the line is 50,000,017 bytes; the limit is 8,388,608",
    )


def chatml_tokens(*turns: tuple[str, str]) -> int:
    """The tiny tokenizer is byte-level with a ChatML template: role, content and 4 markers."""
    return sum(len(role) + len(content.encode()) + 4 for role, content in turns)


def test_too_long_needs_tokenizer_and_max_length(tiny_tokenizer):
    path = DATA / "chat.jsonl"
    assert validate_file(path, max_length=10).issues == []
    first = chatml_tokens(
        ("system", "You are terse."), ("user", "Capital of France?"), ("assistant", "Paris.")
    )
    second = chatml_tokens(
        ("user", "2+2?"), ("assistant", "5"), ("user", "Sure?"), ("assistant", "4.")
    )
    third = chatml_tokens(("user", "Say héllo ✓"), ("assistant", "héllo ✓"))
    assert (first, second, third) == (69, 54, 45)
    report = validate_file(path, tokenizer=tiny_tokenizer, max_length=50)
    assert [(i.line, i.code) for i in report.issues] == [(1, "too_long"), (3, "too_long")]
    assert str(report.issues[0]) == (
        "line 1: the example is 69 tokens; max_length is 50, so it will be truncated"
    )
    assert report.ok and report.n_examples == 3  # a warning: training truncates
    SEEN.add("too_long")


def test_template_error_from_a_template_that_rejects_system(tmp_path):
    strict = load_tokenizer("tiny-llama")
    strict.chat_template = (
        "{% if messages[0]['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}"
        "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    )
    found = issues(DATA / "chat.jsonl", tokenizer=strict, max_length=1000)
    expect(found, 1, "template_error", "System role not supported")


def test_error_cap_lists_first_n_then_a_notice(tmp_path):
    path = tmp_path / "many.jsonl"
    path.write_text("".join(f'{{"messages": [{{"role": "bot{n}"}}]}}\n' for n in range(1, 61)))
    report = validate_file(path, max_errors=5)
    # Each line has two problems (role, content): 120 in all.
    assert [i.line for i in report.issues] == [1, 1, 2, 2, 3, 3]
    notice = report.issues[-1]
    assert (notice.code, str(notice)) == (
        "too_many_errors",
        "line 3: 115 more problem(s) not listed; only the first 5 are shown",
    )
    default = validate_file(path)
    assert len(default.issues) == 51 and default.issues[-1].code == "too_many_errors"
    SEEN.add("too_many_errors")


def test_report_to_dict_is_json():
    data = json.loads(json.dumps(validate_file(DATA / "bad_chat.jsonl").to_dict()))
    assert data["ok"] is False and data["format"] == "chat" and data["n_examples"] == 2
    assert data["issues"][1] == {
        "line": 3,
        "code": "unrecognized_role",
        "message": "message 2 has role 'bot'; expected one of system, user, assistant",
        "where": "line",
        "level": "error",
    }


def test_read_examples_raises_listing_every_problem():
    with pytest.raises(DataError) as err:
        read_examples(DATA / "bad_chat.jsonl")
    text = str(err.value)
    assert "10 problem(s)" in text
    assert "line 3: message 2 has role 'bot'" in text and "line 11:" in text


def test_every_issue_code_is_produced_by_a_test(request):
    # Runs last in this module (pytest keeps file order); meaningless on a partial run.
    ran = {item.originalname for item in request.session.items if item.path == Path(__file__)}
    if ran != {name for name in globals() if name.startswith("test_")}:
        pytest.skip("needs the whole module")
    # Preference codes: each case in test_data_preference.BAD asserts its code and line.
    assert ISSUE_CODES - SEEN - {code for code, _ in PREFERENCE_BAD} == set()
