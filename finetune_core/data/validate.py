"""Read a dataset file into Examples, and report every problem found on the way.

JSONL and CSV are streamed line by line with a cap on each line, so a huge or
malformed file never has to fit in memory. BIG-bench task.json and Alpaca JSON
arrays are single documents: those are read whole, under a size cap.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from finetune_core.data.formats import (
    FORMATS,
    PARSERS,
    DataIssue,
    PathLike,
    check_column_map,
    detect_format,
    file_issue,
    parse_bigbench_example,
    parse_csv_row,
    sniff,
)
from finetune_core.data.preference import parse_preference
from finetune_core.data.stats import count_tokens
from finetune_core.data.types import Example, PreferenceExample
from finetune_core.errors import DataError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

Record = Example | DataIssue

MAX_LINE_BYTES = 8 * 2**20
MAX_DOCUMENT_BYTES = 64 * 2**20
_CHUNK = 2**20  # lines are read in pieces this big, so an over-long one is never held whole
_WS = re.compile(r"[ \t\r\n]*")
JSON_NOT_JSONL = (
    "this looks like a JSON document spread over several lines, not JSONL: one object per line"
)


def _read_line(f: BinaryIO, cap: int) -> tuple[bytes | None, int]:
    """(line, size in bytes); line is None when it is over cap, and then only ~cap was held."""
    parts: list[bytes] | None = []
    size = 0
    while chunk := f.readline(_CHUNK):
        size += len(chunk)
        if parts is not None:
            parts.append(chunk)
            if size > cap + 2:  # + room for a CRLF
                parts = None  # drop what we held; keep reading only to find the line's end
        if chunk.endswith(b"\n"):
            break
    line = None if parts is None else b"".join(parts).rstrip(b"\r\n")
    if line is not None and len(line) > cap:
        line = None
    return line, size


def _lines(path: PathLike, max_line_bytes: int) -> Iterator[tuple[int, str | DataIssue]]:
    """(line number, text without newline) or a DataIssue for a line that cannot be read."""
    with open(path, "rb") as f:
        number = 0
        while True:
            raw, size = _read_line(f, max_line_bytes)
            if not size:
                return
            number += 1
            if raw is None:
                message = f"the line is {size:,} bytes; the limit is {max_line_bytes:,}"
                yield number, DataIssue(number, "line_too_long", message)
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                message = f"byte {e.start + 1} (0x{raw[e.start]:02x}) is not valid UTF-8; save the file as UTF-8"
                yield number, DataIssue(number, "not_utf8", message)
                continue
            yield number, text.removeprefix("\ufeff") if number == 1 else text


def _json_error(e: Exception) -> str:
    if isinstance(e, json.JSONDecodeError):
        if e.msg.endswith(" at"):  # "Unterminated string starting at": say where it starts
            return f"invalid JSON: {e.msg} column {e.colno}"
        return f"invalid JSON at column {e.colno}: {e.msg}"
    if isinstance(e, RecursionError):
        return "invalid JSON: nested too deeply"
    return f"invalid JSON: {e}"


def _opens_document(text: str, e: Exception) -> bool:
    """A first line like `{` or `[{"messages": [` that only a multi-line document continues."""
    stripped = text.strip()
    return (
        isinstance(e, json.JSONDecodeError)
        and stripped.startswith(("{", "["))
        and e.pos >= len(text.rstrip())
        and stripped.endswith(("{", "[", ","))
    )


def _read_jsonl(path: PathLike, fmt: str, max_line_bytes: int) -> Iterator[Record]:
    parse = parse_preference if fmt == "preference" else PARSERS[fmt]
    seen = False
    for number, item in _lines(path, max_line_bytes):
        if isinstance(item, DataIssue):
            seen = True
            yield item
            continue
        if not item.strip():
            continue
        first, seen = not seen, True
        try:
            record = json.loads(item)
        except (ValueError, RecursionError) as e:
            if first and _opens_document(item, e):
                yield DataIssue(number, "json_not_jsonl", JSON_NOT_JSONL)
                return
            yield DataIssue(number, "invalid_json", _json_error(e))
            continue
        if first and isinstance(record, list) and record and isinstance(record[0], dict):
            message = "this is a JSON array, not JSONL: write one object per line"
            yield DataIssue(number, "json_not_jsonl", message)
            return
        example, issues = parse(record, number)
        yield from issues or [example]
    if not seen:
        yield DataIssue(0, "empty_file", "the file has only blank lines")


def _read_document(path: PathLike, max_bytes: int) -> tuple[str | None, DataIssue | None]:
    """A whole JSON document's text, if it is small enough and UTF-8."""
    size = os.path.getsize(path)
    if size > max_bytes:
        message = (
            f"the file is {size:,} bytes; a JSON document is read whole, so the limit is "
            f"{max_bytes:,} bytes; convert it to JSONL, which is read line by line"
        )
        return None, DataIssue(0, "file_too_large", message)
    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)
    try:
        return data.decode("utf-8").removeprefix("\ufeff"), None
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        return None, DataIssue(line, "not_utf8", f"byte 0x{data[e.start]:02x} is not valid UTF-8")


def _array_items(text: str) -> Iterator[tuple[int, object] | DataIssue]:
    """(line, element) for each element of a top-level JSON array, parsed one at a time."""
    decoder = json.JSONDecoder()
    pos = _WS.match(text).end()
    if not text.startswith("[", pos):
        yield DataIssue(1, "invalid_json", "invalid JSON: expected a [ to open the array")
        return
    pos += 1
    while True:
        pos = _WS.match(text, pos).end()
        line = text.count("\n", 0, pos) + 1
        if pos < len(text) and text[pos] == "]":
            return
        try:
            item, pos = decoder.raw_decode(text, pos)
        except (ValueError, RecursionError) as e:
            yield DataIssue(getattr(e, "lineno", line), "invalid_json", _json_error(e))
            return
        yield line, item
        pos = _WS.match(text, pos).end()
        if text.startswith(",", pos):
            pos += 1
        elif not text.startswith("]", pos):
            where = text.count("\n", 0, pos) + 1
            yield DataIssue(where, "invalid_json", "invalid JSON: expected , or ] after an element")
            return


def _read_json_array(path: PathLike, fmt: str, max_bytes: int) -> Iterator[Record]:
    text, issue = _read_document(path, max_bytes)
    if issue:
        yield issue
        return
    seen = False
    for item in _array_items(text):
        seen = True
        if isinstance(item, DataIssue):
            yield item
            continue
        example, issues = PARSERS[fmt](item[1], item[0])
        yield from issues or [example]
    if not seen:
        yield DataIssue(0, "empty_file", "the JSON array is empty")


def _read_bigbench(path: PathLike, max_bytes: int) -> Iterator[Record]:
    text, issue = _read_document(path, max_bytes)
    if issue:
        yield issue
        return
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as e:
        yield DataIssue(getattr(e, "lineno", 1), "invalid_json", _json_error(e))
        return
    examples = doc.get("examples") if isinstance(doc, dict) else None
    if not isinstance(examples, list):
        yield DataIssue(1, "missing_field", 'a BIG-bench task is an object with an "examples" list')
        return
    if not examples:
        yield DataIssue(0, "empty_file", 'the task\'s "examples" list is empty')
    prefix = doc.get("task_prefix")
    prefix = prefix if isinstance(prefix, str) else ""
    for number, raw in enumerate(examples, 1):
        example, issues = parse_bigbench_example(raw, number, prefix)
        yield from issues or [example]


class _LineFeed:
    """Feeds csv.reader decoded lines; unreadable lines become blank and are kept as issues."""

    def __init__(self, path: PathLike, max_line_bytes: int) -> None:
        self._lines = _lines(path, max_line_bytes)
        self.number = 0
        self.issues: list[DataIssue] = []

    def __iter__(self) -> Iterator[str]:
        for number, item in self._lines:
            self.number = number
            if isinstance(item, DataIssue):
                self.issues.append(item)
                yield ""
            else:
                yield item + "\n"

    def flush(self) -> list[DataIssue]:
        issues, self.issues = self.issues, []
        return issues


def _csv_rows(path: PathLike, max_line_bytes: int) -> Iterator[tuple[int, list[str]] | DataIssue]:
    """(first line, fields) for each non-blank CSV row, with unreadable lines as issues."""
    feed = _LineFeed(path, max_line_bytes)
    delimiter = "\t" if Path(path).suffix.lower() == ".tsv" else ","
    reader = csv.reader(feed, delimiter=delimiter)
    failed_at = -1
    while True:
        start = feed.number + 1
        try:
            row = next(reader, None)
        except csv.Error as e:
            yield from feed.flush()
            yield DataIssue(start, "invalid_csv", f"invalid CSV: {e}")
            if failed_at == feed.number:
                return  # the reader is stuck: stop rather than loop
            failed_at = feed.number
            continue
        yield from feed.flush()
        if row is None:
            return
        if any(cell.strip() for cell in row):
            yield start, row


def _read_csv(
    path: PathLike, column_map: Mapping[str, str] | None, max_line_bytes: int
) -> Iterator[Record]:
    mapping = check_column_map(column_map)
    header: list[str] | None = None
    for item in _csv_rows(path, max_line_bytes):
        if isinstance(item, DataIssue):
            yield item
            continue
        line, row = item
        if header is None:
            header = [name.strip() for name in row]
            missing = [(k, c) for k, c in mapping.items() if c not in header]
            for key, column in missing:
                message = f"column {column!r} (mapped to {key}) is not in the header; the columns are: {', '.join(header)}"
                yield DataIssue(line, "missing_column", message)
            if missing:
                return
            continue
        example, issues = parse_csv_row(dict(zip(header, row, strict=False)), mapping, line)
        yield from issues or [example]
    if header is None:
        yield DataIssue(0, "empty_file", "the CSV has no header row")


def _resolve(path: PathLike, fmt: str | None) -> tuple[str | None, DataIssue | None]:
    issue = file_issue(*sniff(path))
    if issue:
        return fmt, issue
    if fmt is None:
        fmt = detect_format(path)
        if fmt is None:
            message = (
                "cannot tell the format; expected " + ", ".join(FORMATS) + " (pass fmt to choose)"
            )
            return None, DataIssue(0, "unknown_format", message)
    if fmt not in FORMATS:
        return fmt, DataIssue(
            0, "unknown_format", f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}"
        )
    return fmt, None


def iter_records(
    path: PathLike,
    *,
    fmt: str | None = None,
    column_map: Mapping[str, str] | None = None,
    max_line_bytes: int = MAX_LINE_BYTES,
    max_document_bytes: int = MAX_DOCUMENT_BYTES,
) -> Iterator[Record]:
    """Each Example, or a DataIssue where a record (or the file) is bad, in file order."""
    fmt, issue = _resolve(path, fmt)
    if issue:
        yield issue
    elif fmt == "bigbench":
        yield from _read_bigbench(path, max_document_bytes)
    elif fmt == "csv":
        yield from _read_csv(path, column_map, max_line_bytes)
    elif fmt == "alpaca" and sniff(path)[1].lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"["):
        yield from _read_json_array(path, fmt, max_document_bytes)
    else:
        yield from _read_jsonl(path, fmt, max_line_bytes)


@dataclass
class ValidationReport:
    path: str
    format: str | None
    n_examples: int = 0  # readable examples, too-long ones included
    issues: list[DataIssue] = field(default_factory=list)

    @property
    def errors(self) -> list[DataIssue]:
        return [i for i in self.issues if i.level == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        lines = [f"{self.path}: {len(self.errors)} problem(s) in {self.format or 'unknown'} data"]
        return "\n".join(lines + [f"  {issue}" for issue in self.issues])

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "n_examples": self.n_examples,
            "ok": self.ok,
            "issues": [issue.to_dict() for issue in self.issues],
        }


def _length_issue(
    example: Example, tokenizer: PreTrainedTokenizerBase, max_length: int, where: str
) -> DataIssue | None:
    try:
        n = count_tokens(example, tokenizer)
        if isinstance(example, PreferenceExample):  # the longer of the two sequences
            n = max(n, count_tokens(example.with_rejected(), tokenizer))
    except Exception as e:  # noqa: BLE001 - templates raise anything via raise_exception()
        message = f"the model's chat template rejects this example: {e}"
        return DataIssue(example.line, "template_error", message, where)
    if n <= max_length:
        return None
    message = f"the example is {n} tokens; max_length is {max_length}, so it will be truncated"
    return DataIssue(example.line, "too_long", message, where)


def validate_file(
    path: PathLike,
    *,
    fmt: str | None = None,
    column_map: Mapping[str, str] | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    max_length: int | None = None,
    max_errors: int = 50,
    max_line_bytes: int = MAX_LINE_BYTES,
    max_document_bytes: int = MAX_DOCUMENT_BYTES,
) -> ValidationReport:
    """Check a whole file; lists up to max_errors issues, then one too_many_errors notice."""
    fmt, _ = _resolve(path, fmt)
    report = ValidationReport(str(path), fmt)
    hidden, first_hidden = 0, None  # count only: a bad file can have millions of problems
    records = iter_records(
        path,
        fmt=fmt,
        column_map=column_map,
        max_line_bytes=max_line_bytes,
        max_document_bytes=max_document_bytes,
    )
    for item in records:
        if isinstance(item, Example):
            report.n_examples += 1
            if tokenizer is None or max_length is None:
                continue
            where = "example" if fmt == "bigbench" else "line"
            item = _length_issue(item, tokenizer, max_length, where)
            if item is None:
                continue
        if len(report.issues) < max_errors:
            report.issues.append(item)
        else:
            hidden, first_hidden = hidden + 1, first_hidden or item
    if first_hidden:
        message = f"{hidden} more problem(s) not listed; only the first {max_errors} are shown"
        notice = DataIssue(first_hidden.line, "too_many_errors", message, first_hidden.where)
        report.issues.append(notice)
    return report


def read_examples(
    path: PathLike,
    *,
    fmt: str | None = None,
    column_map: Mapping[str, str] | None = None,
    max_errors: int = 50,
) -> Iterator[Example]:
    """Stream the examples of a valid file; raises DataError listing the problems otherwise.

    The file is validated in full first, so a bad file fails before any example is used.
    """
    report = validate_file(path, fmt=fmt, column_map=column_map, max_errors=max_errors)
    if not report.ok:
        raise DataError(report.summary())
    records = iter_records(path, fmt=report.format, column_map=column_map)
    return (item for item in records if isinstance(item, Example))
