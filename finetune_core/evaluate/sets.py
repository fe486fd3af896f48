"""Evaluation sets: prompts with accepted answers, choices and a category.

Three sources: a dataset file's validation split, a prompt file (JSONL) and a
BIG-bench task. Every item gets an id hashed from its content, so results from
different runs line up and the answer cache survives reordering.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from finetune_core.data.types import Message
from finetune_core.errors import DataError


def content_id(
    messages: Sequence[Message], references: Sequence[str], choices: Sequence[str]
) -> str:
    text = json.dumps([[[m.role, m.content] for m in messages], list(references), list(choices)])
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


@dataclass(frozen=True)
class EvalItem:
    id: str
    messages: tuple[Message, ...]  # the conversation the candidate answers (no final answer)
    references: tuple[str, ...] = ()  # accepted answers; empty when there are none
    choices: tuple[str, ...] = ()  # multiple-choice options (BIG-bench target_scores)
    category: str = ""

    @property
    def prompt_text(self) -> str:
        """The conversation as plain text, for judge prompts."""
        if len(self.messages) == 1:
            return self.messages[0].content
        return "\n\n".join(f"{m.role.capitalize()}: {m.content}" for m in self.messages)

    def as_dicts(self) -> list[dict[str, str]]:
        return [{"role": m.role, "content": m.content} for m in self.messages]


def make_item(
    messages: Sequence[Message],
    references: Sequence[str] = (),
    choices: Sequence[str] = (),
    category: str = "",
) -> EvalItem:
    msgs = tuple(Message(m.role, m.content) for m in messages)
    return EvalItem(
        content_id(msgs, references, choices), msgs, tuple(references), tuple(choices), category
    )


@dataclass
class EvalSet:
    name: str
    items: list[EvalItem] = field(default_factory=list)
    # BIG-bench's output_regex: the first match in an answer is what exact match compares.
    output_regex: str | None = None

    def __post_init__(self) -> None:
        # Identical prompts would share an id; suffix repeats so ids stay unique and stable.
        seen: dict[str, int] = {}
        unique = []
        for item in self.items:
            n = seen.get(item.id, 0)
            seen[item.id] = n + 1
            unique.append(item if n == 0 else EvalItem(f"{item.id}~{n}", *_fields(item)))
        self.items = unique

    def head(self, n: int | None) -> EvalSet:
        items = self.items if n is None else self.items[:n]
        return EvalSet(self.name, list(items), self.output_regex)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterable[EvalItem]:  # type: ignore[override]
        return iter(self.items)


def _fields(item: EvalItem) -> tuple:
    return (item.messages, item.references, item.choices, item.category)


def from_dataset(
    path: str | Path,
    *,
    fmt: str | None = None,
    column_map: dict[str, str] | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    whole: bool = False,
) -> EvalSet:
    """The validation split of a training file (the same split `train` uses), or all of it."""
    from finetune_core.data import read_examples, train_val_split

    examples = list(read_examples(path, fmt=fmt, column_map=column_map))
    if not whole:
        _, examples = train_val_split(examples, val_fraction=val_fraction, seed=seed)
    items = []
    for ex in examples:
        msgs = list(ex.messages)
        last = max((i for i, m in enumerate(msgs) if m.role == "assistant"), default=None)
        if last is None:
            continue
        refs = ex.references or (msgs[last].content,)
        items.append(make_item(msgs[:last], refs))
    return EvalSet(Path(path).stem, items)


def _strings(value: object, line: int, key: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise DataError(
        f"line {line}: {key!r} must be a string or a list of strings", code="bad_field", line=line
    )


def from_prompt_file(path: str | Path) -> EvalSet:
    """JSONL, one object a line: "prompt" (text) or "messages" (chat list), optional
    "reference"/"references", "choices", "category" and "system"."""
    items = []
    for line, raw in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except ValueError as e:
            raise DataError(
                f"line {line}: not valid JSON ({e})", code="invalid_json", line=line
            ) from None
        if not isinstance(rec, dict):
            raise DataError(f"line {line}: expected a JSON object", code="not_an_object", line=line)
        if isinstance(rec.get("prompt"), str):
            msgs = [Message("user", rec["prompt"])]
            if isinstance(rec.get("system"), str):
                msgs.insert(0, Message("system", rec["system"]))
        elif isinstance(rec.get("messages"), list):
            try:
                msgs = [Message(m["role"], m["content"]) for m in rec["messages"]]
            except (TypeError, KeyError):
                raise DataError(
                    f"line {line}: messages need a role and content each",
                    code="bad_messages",
                    line=line,
                ) from None
        else:
            raise DataError(
                f'line {line}: needs a string "prompt" or a "messages" list',
                code="no_prompt",
                line=line,
            )
        refs = _strings(rec.get("references"), line, "references")
        refs += [r for r in _strings(rec.get("reference"), line, "reference") if r not in refs]
        category = rec.get("category")
        items.append(
            make_item(
                msgs, refs, _strings(rec.get("choices"), line, "choices"), str(category or "")
            )
        )
    if not items:
        raise DataError(f"{path}: no prompts", code="no_prompts")
    return EvalSet(Path(path).stem, items)


def from_bigbench(name_or_path: str | Path) -> EvalSet:
    """A BIG-bench JSON task: a bundled name ("sports_understanding") or a task.json path."""
    from finetune_core.data import bigbench_task_path

    path = Path(name_or_path)
    if not path.is_file():
        path = bigbench_task_path(str(name_or_path))
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        examples = doc["examples"]
    except (ValueError, KeyError, TypeError):
        raise DataError(
            f"{path}: not a BIG-bench task (an object with an examples list)", code="not_bigbench"
        ) from None
    prefix = doc.get("task_prefix") or ""
    append = doc.get("append_choices_to_input") is True
    name = str(doc.get("name") or path.stem)
    items = []
    for n, ex in enumerate(examples, 1):
        if not isinstance(ex, dict) or not isinstance(ex.get("input"), str):
            raise DataError(f"{path}: example {n} has no string input", code="bad_example", line=n)
        target = ex.get("target")
        refs = [target] if isinstance(target, str) else list(target or [])
        scores = ex.get("target_scores") or {}
        choices = list(scores)
        refs += [c for c, s in scores.items() if s == 1 and c not in refs]
        text = ex["input"]
        if append and choices:
            text += "".join(f"\n  choice: {c}" for c in choices)
        if prefix:
            text = prefix + ("" if prefix[-1].isspace() else "\n") + text
        items.append(make_item([Message("user", text)], refs, choices, name))
    return EvalSet(name, items, doc.get("output_regex"))
