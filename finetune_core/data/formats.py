"""Dataset formats: turn one parsed record into an Example, or say what is wrong with it.

Record parsers never raise on bad data; they return a list of DataIssue. Format
detection sniffs the first bytes; reading whole files (lines, size caps) lives in
validate.py.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

from finetune_core.contracts.data import DATA_FORMATS
from finetune_core.data.types import Example, Message
from finetune_core.errors import DataError

FORMATS = tuple(name for name, _ in DATA_FORMATS)
ROLES = ("system", "user", "assistant")

# Stable codes: the web app and API clients match on them, so never rename one.
ISSUE_CODES = frozenset(
    {
        "empty_file",
        "not_utf8",
        "binary_file",
        "file_too_large",
        "invalid_json",
        "json_not_jsonl",
        "line_too_long",
        "not_an_object",
        "missing_messages",
        "messages_not_list",
        "unrecognized_role",
        "missing_content",
        "content_not_string",
        "invalid_weight",
        "no_assistant_message",
        "missing_field",
        "missing_column",
        "invalid_csv",
        "unknown_format",
        "too_long",
        "template_error",
        "too_many_errors",
        # preference pairs (data/preference.py)
        "missing_input",
        "missing_output",
        "multiple_outputs",
        "wrong_role",
        "identical_outputs",
    }
)
# Issues that do not make a file unusable: a too-long example is truncated in training.
WARNING_CODES = frozenset({"too_long"})

Result = tuple[Example | None, list["DataIssue"]]
PathLike = str | os.PathLike[str]
_SNIFF_BYTES = 64 * 2**10
# Magic numbers of files people upload by mistake.
_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"PK\x03\x04", b"\x1f\x8b", b"%PDF", b"\x7fELF")


@dataclass(frozen=True)
class DataIssue:
    line: int  # 1-based; 0 for the file as a whole
    code: str
    message: str
    # What `line` counts: "example" for BIG-bench, whose examples are numbered, not lines.
    where: str = "line"

    @property
    def level(self) -> Literal["error", "warning"]:
        return "warning" if self.code in WARNING_CODES else "error"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "level": self.level}

    def __str__(self) -> str:
        return f"{self.where} {self.line}: {self.message}" if self.line else self.message


def _type_name(value: object) -> str:
    return {dict: "an object", list: "an array", str: "a string", type(None): "null"}.get(
        type(value), f"a {type(value).__name__}"
    )


def _bad_unicode(text: str) -> bool:
    # JSON can smuggle in lone surrogates ("\ud800") that no tokenizer or file can encode.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _string_field(record: Mapping[str, Any], key: str, line: int, what: str) -> list[DataIssue]:
    """Issues for a required string field; empty list when it is fine."""
    if record.get(key) is None:
        return [DataIssue(line, "missing_field", f'{what} has no "{key}" field')]
    value = record[key]
    if not isinstance(value, str):
        return [
            DataIssue(line, "content_not_string", f'"{key}" is {_type_name(value)}, not a string')
        ]
    if _bad_unicode(value):
        return [DataIssue(line, "not_utf8", f'"{key}" contains an unpaired surrogate escape')]
    return []


def _parse_message(raw: object, n: int, line: int) -> tuple[Message | None, list[DataIssue]]:
    if not isinstance(raw, dict):
        return None, [DataIssue(line, "not_an_object", f"message {n} is {_type_name(raw)}")]
    issues = []
    role = raw.get("role")
    if role not in ROLES:
        got = "has no role" if role is None else f"has role {role!r}"
        issues.append(
            DataIssue(
                line, "unrecognized_role", f"message {n} {got}; expected one of {', '.join(ROLES)}"
            )
        )
    content = raw.get("content")
    if content is None:
        issues.append(DataIssue(line, "missing_content", f"message {n} has no content"))
    elif not isinstance(content, str):
        issues.append(
            DataIssue(
                line,
                "content_not_string",
                f"message {n} content is {_type_name(content)}, not a string",
            )
        )
    elif _bad_unicode(content):
        issues.append(
            DataIssue(line, "not_utf8", f"message {n} content has an unpaired surrogate escape")
        )
    weight = raw.get("weight", 1)
    # bool is an int subclass; `true` is not a weight.
    if type(weight) is not int or weight not in (0, 1):
        issues.append(
            DataIssue(line, "invalid_weight", f"message {n} has weight {weight!r}; expected 0 or 1")
        )
    if issues:
        return None, issues
    # Weight only matters for assistant messages; context is never trained on.
    return Message(role, content, weight if role == "assistant" else 1), []


def parse_chat(record: object, line: int) -> Result:
    """OpenAI chat: {"messages": [{"role", "content", "weight"?}, ...]}."""
    if not isinstance(record, dict):
        return None, [
            DataIssue(line, "not_an_object", f"expected an object, got {_type_name(record)}")
        ]
    if "messages" not in record:
        return None, [DataIssue(line, "missing_messages", 'the object has no "messages" key')]
    raw = record["messages"]
    if not isinstance(raw, list):
        return None, [
            DataIssue(line, "messages_not_list", f'"messages" is {_type_name(raw)}, not a list')
        ]
    if not raw:
        return None, [DataIssue(line, "missing_messages", '"messages" is empty')]
    messages, issues = [], []
    for n, item in enumerate(raw, 1):
        message, problems = _parse_message(item, n, line)
        issues += problems
        if message:
            messages.append(message)
    if issues:
        return None, issues
    assistant = [m for m in messages if m.role == "assistant"]
    if not assistant:
        return None, [DataIssue(line, "no_assistant_message", "no message has role 'assistant'")]
    if not any(m.weight for m in assistant):
        return None, [
            DataIssue(
                line,
                "no_assistant_message",
                "every assistant message has weight 0: nothing to learn",
            )
        ]
    return Example(tuple(messages), line=line), []


def _pair(user: str, assistant: str, line: int, system: str | None = None) -> Example:
    head = (Message("system", system),) if system else ()
    return Example((*head, Message("user", user), Message("assistant", assistant)), line=line)


def parse_prompt_completion(record: object, line: int) -> Result:
    """{"prompt", "completion"} -> one user and one assistant message."""
    if not isinstance(record, dict):
        return None, [
            DataIssue(line, "not_an_object", f"expected an object, got {_type_name(record)}")
        ]
    issues = _string_field(record, "prompt", line, "the record")
    issues += _string_field(record, "completion", line, "the record")
    if issues:
        return None, issues
    return _pair(record["prompt"], record["completion"], line), []


def parse_alpaca(record: object, line: int) -> Result:
    """Alpaca {"instruction", "input"?, "output"}; input is appended after a blank line."""
    if not isinstance(record, dict):
        return None, [
            DataIssue(line, "not_an_object", f"expected an object, got {_type_name(record)}")
        ]
    issues = _string_field(record, "instruction", line, "the record")
    issues += _string_field(record, "output", line, "the record")
    extra = record.get("input")
    if extra is not None:
        issues += _string_field(record, "input", line, "the record")
    if issues:
        return None, issues
    user = record["instruction"] + (f"\n\n{extra}" if extra else "")
    return _pair(user, record["output"], line), []


def _accepted(example: Mapping[str, Any]) -> list[str] | None:
    """BIG-bench answers: every `target`, then each `target_scores` choice scored 1."""
    target = example.get("target")
    answers = (
        [target] if isinstance(target, str) else list(target) if isinstance(target, list) else []
    )
    scores = example.get("target_scores")
    if isinstance(scores, dict):
        answers += [c for c, s in scores.items() if s == 1 and c not in answers]
    if not answers or not all(isinstance(a, str) for a in answers):
        return None
    return answers


def parse_bigbench_example(example: object, number: int, task_prefix: str = "") -> Result:
    """One BIG-bench example; `number` is its index + 1 and is stored as Example.line."""
    if not isinstance(example, dict):
        issues = [
            DataIssue(number, "not_an_object", f"expected an object, got {_type_name(example)}")
        ]
        return None, [replace(i, where="example") for i in issues]
    issues = _string_field(example, "input", number, "the example")
    answers = _accepted(example)
    if answers is None:
        issues.append(
            DataIssue(
                number,
                "missing_field",
                'the example has no string "target" and no "target_scores" choice scored 1',
            )
        )
    if issues:
        return None, [replace(i, where="example") for i in issues]
    user = example["input"]
    if task_prefix:
        sep = "" if task_prefix[-1].isspace() else "\n"
        user = f"{task_prefix}{sep}{user}"
    pair = _pair(user, answers[0], number)
    return Example(pair.messages, line=number, references=tuple(answers)), []


PARSERS = {"chat": parse_chat, "prompt_completion": parse_prompt_completion, "alpaca": parse_alpaca}

# CSV column map keys and what each becomes.
CSV_KEYS = ("prompt", "completion", "system")


def check_column_map(column_map: Mapping[str, str] | None) -> dict[str, str]:
    """The CSV mapping {"prompt": col, "completion": col, "system"?: col}; defaults to same names."""
    mapping = dict(column_map or {"prompt": "prompt", "completion": "completion"})
    unknown = sorted(set(mapping) - set(CSV_KEYS))
    missing = [k for k in ("prompt", "completion") if k not in mapping]
    if unknown or missing:
        raise DataError(
            f"column_map keys must be prompt, completion and optionally system; "
            f"got {sorted(mapping)}"
        )
    return mapping


def parse_csv_row(row: Mapping[str, str], mapping: Mapping[str, str], line: int) -> Result:
    issues = []
    for key in ("prompt", "completion"):
        column = mapping[key]
        if not row.get(column):
            issues.append(
                DataIssue(line, "missing_field", f"row has no value in column {column!r} ({key})")
            )
    if issues:
        return None, issues
    system = row.get(mapping["system"]) if "system" in mapping else None
    return _pair(row[mapping["prompt"]], row[mapping["completion"]], line, system or None), []


def sniff(path: PathLike) -> tuple[bytes, bytes]:
    """(the first bytes, the first bytes after any leading whitespace), each up to 64 KiB."""
    try:
        with open(path, "rb") as f:
            start = chunk = f.read(_SNIFF_BYTES)
            while chunk and not chunk.strip():
                chunk = f.read(_SNIFF_BYTES)
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}") from e
    return start, chunk.lstrip()


def file_issue(start: bytes, content: bytes) -> DataIssue | None:
    """Problems visible in the first bytes that make the whole file unreadable."""
    if not start:
        return DataIssue(0, "empty_file", "the file is empty")
    if start.startswith((b"\xff\xfe", b"\xfe\xff")):
        return DataIssue(1, "not_utf8", "the file is UTF-16 encoded; save it as UTF-8")
    if start.startswith(_MAGIC) or b"\x00" in start:
        return DataIssue(0, "binary_file", "this is a binary file (an image or archive?), not text")
    if not content:
        return DataIssue(0, "empty_file", "the file has only blank lines")
    return None


def _format_of_keys(keys: Any) -> str | None:
    if "preferred_output" in keys or "non_preferred_output" in keys:
        return "preference"
    if "messages" in keys:
        return "chat"
    if "prompt" in keys or "completion" in keys:
        return "prompt_completion"
    if "instruction" in keys or "output" in keys:
        return "alpaca"
    if "examples" in keys:
        return "bigbench"
    return None


def detect_format(path: PathLike) -> str | None:
    """Guess the format from the extension and the first non-blank content; None if unsure."""
    if Path(path).suffix.lower() in (".csv", ".tsv"):
        return "csv"
    head = sniff(path)[1].decode("utf-8", "replace").lstrip("\ufeff \t\r\n")
    first = head.split("\n", 1)[0]
    try:
        record = json.loads(first)
    except (ValueError, RecursionError):
        record = None
    if isinstance(record, dict):
        return _format_of_keys(record)
    if head.startswith(("{", "[")):
        # A multi-line document: look for the keys it mentions.
        if head.startswith("{") and '"examples"' in head:
            return "bigbench"
        keys = ("preferred_output", "messages", "prompt", "instruction")
        found = {k for k in keys if f'"{k}"' in head}
        return _format_of_keys(found)
    return None


def bigbench_task_path(name: str) -> Path:
    """Path of a bundled BIG-bench task, e.g. "sports_understanding" or "object_counting.json"."""
    folder = Path(__file__).resolve().parent.parent / "assets" / "bigbench"
    path = folder / (name if name.endswith(".json") else f"{name}.json")
    if not path.is_file():
        have = sorted(p.stem for p in folder.glob("*.json"))
        raise DataError(f"no bundled BIG-bench task {name!r}; available: {', '.join(have)}")
    return path


def example_to_chat(example: Example) -> dict[str, Any]:
    """The OpenAI chat record; weight is written only where it is 0 (1 is the default)."""
    messages = []
    for m in example.messages:
        item: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.role == "assistant" and m.weight == 0:
            item["weight"] = 0
        messages.append(item)
    return {"messages": messages}


def to_chat_jsonl(examples: Iterable[Example], path: PathLike) -> int:
    """Write OpenAI chat JSONL atomically; returns the number of examples written."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    count = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            for example in examples:
                f.write(json.dumps(example_to_chat(example), ensure_ascii=False) + "\n")
                count += 1
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return count
