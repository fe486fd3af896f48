"""Evaluation prompt files, read with finetune_core's eval-set readers: the validation
report of a dataset whose purpose is "evaluation prompts", and the eval set an evaluation
cell runs on. Both go through read_prompt_file, so what validates is what runs.

Accepted: JSONL, one object a line ("prompt" or "messages", optional "reference",
"references" or BIG-bench's "target", "choices", "category", "system"), or a BIG-bench
task.json. finetune_core is imported inside the functions (workers only, never the web).
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_ERRORS = 50
PREVIEW_ROWS = 5
PREVIEW_CHARS = 400


@dataclass
class PromptFile:
    evalset: Any  # finetune_core.evaluate.EvalSet of the readable prompts, or None
    source: str  # "jsonl" | "bigbench"
    errors: list[dict[str, Any]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)  # each item's line (JSONL)
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return not self.errors and self.evalset is not None and len(self.evalset) > 0


def _issue(line: int | None, code: str, message: str, where: str = "line") -> dict[str, Any]:
    return {"line": line, "where": where, "code": code, "message": message, "level": "error"}


def _is_bigbench(text: str) -> bool:
    if not text.lstrip().startswith("{"):
        return False
    try:
        doc = json.loads(text)
    except ValueError:
        return False  # JSONL (or broken JSON): the line reader reports it
    return isinstance(doc, dict) and "examples" in doc


def _normalized(lines: list[str]) -> list[str]:
    """BIG-bench's "target" read as the library's "references" (one line stays one line,
    so line numbers still point into the uploaded file)."""
    out = []
    for raw in lines:
        try:
            rec = json.loads(raw) if raw.strip() else None
        except ValueError:
            rec = None
        if (
            isinstance(rec, dict)
            and "target" in rec
            and not ({"reference", "references"} & rec.keys())
        ):
            target = rec.pop("target")
            rec["references"] = str(target) if isinstance(target, int | float) else target
            raw = json.dumps(rec, ensure_ascii=False)
        out.append(raw)
    return out


def _bigbench(path: Path) -> PromptFile:
    from finetune_core.errors import DataError
    from finetune_core.evaluate import from_bigbench

    try:
        return PromptFile(from_bigbench(path), "bigbench")
    except DataError as exc:
        # The library's code and example number, never its wording, decide the report.
        message = exc.detail.replace(f"{path}: ", "")
        where = "example" if exc.line is not None else "line"
        issue = _issue(exc.line, exc.code or "not_bigbench", message, where=where)
        return PromptFile(None, "bigbench", [issue])


def read_prompt_file(path: str | Path) -> PromptFile:
    """Every problem with its line, not only the first: the library stops at the first bad
    line, so that line is blanked (blank lines are skipped, numbering stays) and the rest
    read again, up to MAX_ERRORS."""
    from finetune_core.errors import DataError
    from finetune_core.evaluate import from_prompt_file

    path = Path(path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        return PromptFile(None, "jsonl", [_issue(line, "not_utf8", "not UTF-8 text")])
    if _is_bigbench(text):
        return _bigbench(path)
    lines = _normalized(text.splitlines())
    found = PromptFile(None, "jsonl")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / path.name  # the eval set is named after the file's stem
        while len(found.errors) < MAX_ERRORS:
            work.write_text("\n".join(lines), encoding="utf-8")
            try:
                found.evalset = from_prompt_file(work)
                break
            except DataError as exc:
                if exc.line is None:  # "no prompts": nothing readable is left
                    if not found.errors:
                        found.errors.append(_issue(None, "no_prompts", "The file has no prompts."))
                    break
                found.errors.append(_issue(exc.line, exc.code or "invalid_prompt", exc.detail))
                lines[exc.line - 1] = ""
        else:
            found.truncated = True
    found.lines = [n for n, line in enumerate(lines, 1) if line.strip()]
    return found


def _preview(pf: PromptFile) -> list[dict[str, Any]]:
    rows = []
    for n, item in enumerate(pf.evalset.items[:PREVIEW_ROWS]):
        text = item.prompt_text
        rows.append(
            {
                "line": pf.lines[n] if pf.source == "jsonl" and n < len(pf.lines) else n + 1,
                "where": "line" if pf.source == "jsonl" else "example",
                "prompt": text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS] + "…",
                "references": [r[:PREVIEW_CHARS] for r in item.references[:5]],
                "choices": list(item.choices[:10]),
                "category": item.category,
            }
        )
    return rows


def validate_prompt_file(path: str | Path) -> dict[str, Any]:
    """The dataset page's report: counts, references, categories, first prompts, errors."""
    pf = read_prompt_file(path)
    report: dict[str, Any] = {
        "ok": pf.ok,
        "purpose": "evaluation",
        # The engine's name for a BIG-bench task; a prompt JSONL is none of its formats.
        "format": "bigbench" if pf.source == "bigbench" else "prompts",
        "source": "BIG-bench task" if pf.source == "bigbench" else "prompt JSONL",
        "errors": pf.errors,
        "errors_truncated": pf.truncated,
    }
    if pf.evalset is not None:
        items = pf.evalset.items
        categories = Counter(i.category for i in items if i.category)
        report["prompts"] = {
            "n": len(items),
            "with_references": sum(bool(i.references) for i in items),
            "without_references": sum(not i.references for i in items),
            "with_choices": sum(bool(i.choices) for i in items),
            "categories": dict(categories.most_common()),
            "uncategorized": sum(not i.category for i in items),
        }
        report["preview"] = _preview(pf)
        if pf.ok:
            report["n_examples"] = len(items)
    return report


def prompt_set(path: str | Path) -> Any:
    """The EvalSet an evaluation cell runs on; DataError (a message for the user) if the
    file has problems."""
    from finetune_core.errors import DataError

    pf = read_prompt_file(path)
    if not pf.ok:
        first = "; ".join(
            f"{e['where']} {e['line']}: {e['message']}" if e["line"] else e["message"]
            for e in pf.errors[:3]
        )
        raise DataError(f"The prompt file has problems ({first}); see its dataset page.")
    return pf.evalset
