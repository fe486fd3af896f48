"""Every dataset format parses into the same Examples; detection and the chat writer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import finetune_core
from finetune_core.data import (
    Example,
    Message,
    bigbench_task_path,
    detect_format,
    iter_records,
    read_examples,
    to_chat_jsonl,
    validate_file,
)
from finetune_core.errors import DataError

DATA = Path(__file__).resolve().parents[1] / "data"


def turns(example: Example) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in example.messages]


def test_openai_chat_jsonl():
    examples = list(read_examples(DATA / "chat.jsonl"))
    assert [e.line for e in examples] == [1, 3, 4]  # the blank line 2 is skipped
    assert turns(examples[0]) == [
        ("system", "You are terse."),
        ("user", "Capital of France?"),
        ("assistant", "Paris."),
    ]
    assert [m.weight for m in examples[1].messages] == [1, 0, 1, 1]
    assert examples[2].messages[1].content == "héllo ✓"


def test_prompt_completion_jsonl():
    examples = list(read_examples(DATA / "prompt_completion.jsonl"))
    assert [turns(e) for e in examples] == [
        [("user", "Translate to French: cat"), ("assistant", "chat")],
        [("user", "Translate to French: dog"), ("assistant", "chien")],
    ]


@pytest.mark.parametrize("name", ["alpaca.json", "alpaca.jsonl"])
def test_alpaca_json_array_and_jsonl(name):
    examples = list(read_examples(DATA / name))
    assert [turns(e) for e in examples] == [
        [("user", "Give a synonym.\n\nhappy"), ("assistant", "glad")],
        [("user", "Name a primary colour."), ("assistant", "Red")],
    ]


def test_alpaca_json_array_reports_element_lines():
    # Elements of a pretty-printed array are located by the line they start on.
    assert [e.line for e in read_examples(DATA / "alpaca.json")] == [2, 7]


def test_bigbench_task_json_targets_and_scores():
    examples = list(read_examples(DATA / "bigbench_task.json"))
    assert [e.line for e in examples] == [1, 2, 3]
    assert turns(examples[0]) == [
        ("user", "Answer the question.\nHow many legs has a cat?"),
        ("assistant", "four"),
    ]
    assert examples[0].references == ("four", "4")
    assert examples[1].messages[1].content == "no"
    assert examples[1].references == ("no",)
    assert examples[2].references == ("2",)  # target and the scored choice agree


def test_csv_with_column_map_and_multiline_fields():
    mapping = {"prompt": "question", "completion": "answer", "system": "persona"}
    examples = list(read_examples(DATA / "qa.csv", column_map=mapping))
    assert [e.line for e in examples] == [2, 3, 7]  # row 2 spans lines 3-5; line 6 is blank
    assert turns(examples[0]) == [
        ("system", "You are a chemist."),
        ("user", "What is H2O?"),
        ("assistant", "Water"),
    ]
    assert turns(examples[1]) == [
        ("user", "Two lines,\nplease"),
        ("assistant", "Line one\nLine two"),
    ]


def test_csv_column_map_keys_are_checked():
    with pytest.raises(DataError, match="column_map keys"):
        validate_file(DATA / "qa.csv", column_map={"question": "question"})


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("chat.jsonl", "chat"),
        ("prompt_completion.jsonl", "prompt_completion"),
        ("alpaca.json", "alpaca"),
        ("alpaca.jsonl", "alpaca"),
        ("bigbench_task.json", "bigbench"),
        ("qa.csv", "csv"),
        ("pretty_chat.jsonl", "chat"),
    ],
)
def test_detect_format(name, fmt):
    assert detect_format(DATA / name) == fmt


def test_detect_ignores_extension_for_json_content(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text('{"prompt": "a", "completion": "b"}\n')
    assert detect_format(path) == "prompt_completion"


def test_explicit_format_overrides_detection(tmp_path):
    path = tmp_path / "pc.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n')
    report = validate_file(path, fmt="chat")
    assert report.format == "chat"
    assert [i.code for i in report.issues] == ["missing_messages"]


def test_bundled_bigbench_tasks_read_without_issues():
    for name, first_answer in [
        ("sports_understanding", "plausible"),
        ("object_counting", "three"),
        ("arithmetic-2_digit_addition", "109"),
    ]:
        path = bigbench_task_path(name)
        assert path.is_relative_to(Path(finetune_core.__file__).parent / "assets")
        assert "canary GUID" in path.read_text()
        report = validate_file(path)
        assert (report.format, report.n_examples, report.issues) == ("bigbench", 1000, [])
        assert next(read_examples(path)).messages[-1].content == first_answer


def test_bigbench_task_path_unknown_name_lists_tasks():
    with pytest.raises(DataError, match="object_counting"):
        bigbench_task_path("no_such_task")


def test_to_chat_jsonl_round_trips(tmp_path):
    source = list(read_examples(DATA / "chat.jsonl")) + list(
        read_examples(DATA / "bigbench_task.json")
    )
    out = tmp_path / "out.jsonl"
    assert to_chat_jsonl(source, out) == len(source)
    lines = out.read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[1])["messages"][1] == {"role": "assistant", "content": "5", "weight": 0}
    assert "weight" not in json.loads(lines[0])["messages"][2]  # 1 is the default
    again = list(read_examples(out))
    assert [e.messages for e in again] == [e.messages for e in source]
    assert validate_file(out).ok


def test_iter_records_yields_examples_and_issues_in_order():
    items = list(iter_records(DATA / "bad_prompt_completion.jsonl"))
    assert isinstance(items[0], Example)
    assert [(i.line, i.code) for i in items[1:]] == [
        (2, "missing_field"),
        (3, "content_not_string"),
    ]


def test_weight_on_context_messages_is_ignored(tmp_path):
    path = tmp_path / "w.jsonl"
    row = {
        "messages": [
            {"role": "user", "content": "q", "weight": 0},
            {"role": "assistant", "content": "a"},
        ]
    }
    path.write_text(json.dumps(row) + "\n")
    (example,) = read_examples(path)
    assert example.messages == (Message("user", "q"), Message("assistant", "a"))
