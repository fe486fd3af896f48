"""Parse judge outputs: pairwise verdicts ([[A]], [[B]], [[C]] = tie) and ratings ([[1-10]]).

Rules (the same for both parsers; they never raise):
1. The text is NFKC-normalised, so full-width brackets and letters count.
2. Well-formed marks are searched first: a verdict inside double brackets
   (case-insensitive, inner spaces allowed, "[[Assistant A]]" and "[[tie]]" too),
   a rating as "[[7]]", "[[7.5]]" or "[[7/10]]".
3. If every mark found names the same value, that is the answer (repeats are fine).
4. If they disagree ("[[A]] or [[B]]", or the judge restates the format first),
   the last line holding a mark decides, and only if that line's marks agree;
   otherwise the output is ambiguous: None.
5. With no well-formed mark, looser forms are tried with the same rules: single
   brackets "[A]", "verdict: A" / "Rating: 7", "7/10".
6. Ratings outside 1-10 and empty or non-text outputs give None.
None means unparseable: the caller retries once, then records an error.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

_V = r"(?:assistant\s*)?(a|b|c|tie)"
VERDICT_STRICT = re.compile(r"\[\[\s*" + _V + r"\s*\]\]", re.I)
VERDICT_LOOSE = [
    re.compile(r"(?<!\[)\[\s*" + _V + r"\s*\](?!\])", re.I),
    # Case-sensitive letters: "my verdict is a tie" must not read as A.
    re.compile(r"\b[Vv]erdict\b\s*(?:is)?\s*[:\-=]?\s*\**\s*(?:[Aa]ssistant\s*)?(A|B|C|[Tt]ie)\b"),
]
_N = r"([0-9]+(?:\.[0-9]+)?)"
RATING_STRICT = re.compile(r"\[\[\s*" + _N + r"\s*(?:/\s*10\s*)?\]\]")
RATING_LOOSE = [
    re.compile(r"\brating\b\s*[:=]?\s*\**\s*\[?\s*" + _N + r"(?![0-9.])", re.I),
    re.compile(r"(?<![0-9.])" + _N + r"\s*/\s*10\b"),
]


def _clean(text: object) -> str:
    if not isinstance(text, str):
        return ""
    return unicodedata.normalize("NFKC", text)


def _decide(text: str, pattern: re.Pattern, norm: Callable[[str], object]) -> object:
    values = []
    for line in text.splitlines():
        found = [norm(m.group(1)) for m in pattern.finditer(line)]
        if found:
            values.append(found)
    if not values:
        return None
    everything = {v for found in values for v in found}
    if len(everything) == 1:
        return everything.pop()
    last = set(values[-1])
    return last.pop() if len(last) == 1 else None


def _verdict_of(raw: str) -> str:
    raw = raw.lower()
    return "tie" if raw in ("c", "tie") else raw.upper()


def parse_verdict(text: object) -> str | None:
    """ "A", "B", "tie", or None when unparseable or ambiguous."""
    clean = _clean(text)
    for pattern in (VERDICT_STRICT, *VERDICT_LOOSE):
        if pattern.search(clean):
            return _decide(clean, pattern, _verdict_of)  # type: ignore[return-value]
    return None


def _rating_of(raw: str) -> float | None:
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if 1 <= value <= 10 else None


def parse_rating(text: object) -> float | None:
    """A score from 1 to 10, or None when unparseable, ambiguous or out of range."""
    clean = _clean(text)
    for pattern in (RATING_STRICT, *RATING_LOOSE):
        if pattern.search(clean):
            value = _decide(clean, pattern, _rating_of)
            return value if isinstance(value, float) else None
    return None
