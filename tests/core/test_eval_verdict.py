"""Judge output parsers on well-formed and malformed outputs; they never raise."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from finetune_core.evaluate.verdict import parse_rating, parse_verdict

VERDICTS = [
    ("Assistant A is more helpful.\n\n[[A]]", "A"),
    ("[[B]]", "B"),
    ("Both are equally good. [[C]]", "tie"),
    ("Final verdict: [[tie]]", "tie"),
    ("[[a]]", "A"),  # lowercase inside brackets
    ("[[ B ]]", "B"),  # inner spaces
    ("[[[A]]]", "A"),  # extra brackets
    ("[[Assistant B]]", "B"),
    ("**[[A]]**", "A"),
    ("［［Ａ］］", "A"),  # full-width brackets and letter (NFKC)
    ("[[A]] ... as said, [[A]]", "A"),  # repeats agree
    # The judge restates the format, then decides on the last line.
    ('Output "[[A]]" if A is better, "[[B]]" if B is better.\nA is better.\n[[A]]', "A"),
    ("[[A]]\n[[B]]", "B"),  # the last line with a mark decides
    ("My verdict is [A]", "A"),  # single brackets, nothing well-formed
    ("Final verdict: B", "B"),  # no brackets at all
    ("Verdict: Assistant A", "A"),
    ("Verdict: tie", "tie"),
    ("[[B]] 🎉 ünïcödé", "B"),
    # Unparseable or ambiguous
    ("[[A]] or [[B]]", None),
    ("[[A]] [[B]] [[C]]", None),
    ("", None),
    ("   \n\n ", None),
    ("Assistant A is better.", None),
    ("my verdict is a tie", None),  # lowercase "a" is an article, not a verdict
    ("[[D]]", None),
    ("[A] [B]", None),
    ("[[]]", None),
    ("[[A]", None),
    (None, None),
    (42, None),
    ("\x00\ufffd[[\u200bA]]", None),
]


@pytest.mark.parametrize(("text", "expected"), VERDICTS)
def test_verdicts(text: object, expected: str | None) -> None:
    assert parse_verdict(text) == expected


RATINGS = [
    ("Good answer. Rating: [[7]]", 7.0),
    ("[[10]]", 10.0),
    ("[[1]]", 1.0),
    ("Rating: [[8.5]]", 8.5),
    ("[[ 6 ]]", 6.0),
    ("[[7/10]]", 7.0),
    ("Rating: 7", 7.0),
    ("Rating: [7]", 7.0),
    ("I give it 9/10.", 9.0),
    ("[[５]]", 5.0),  # full-width digit
    ("Format: [[rating]], e.g. Rating: [[5]].\nRating: [[3]]", 3.0),
    ("[[4]] and again [[4]]", 4.0),
    # Unparseable, ambiguous or out of range
    ("[[0]]", None),
    ("[[11]]", None),
    ("[[7]] or [[8]]", None),
    ("Rating: [[-3]]", None),
    ("Rating: seven", None),
    ("", None),
    (None, None),
    ("[[1e9]]", None),
    ("Rating: 99999999999999999999999999", None),
]


@pytest.mark.parametrize(("text", "expected"), RATINGS)
def test_ratings(text: object, expected: float | None) -> None:
    assert parse_rating(text) == expected


TOKENS = st.sampled_from(
    [
        "[[",
        "]]",
        "[",
        "]",
        "A",
        "B",
        "C",
        "a",
        "tie",
        "Rating:",
        "verdict:",
        "7",
        "/10",
        "10",
        " ",
        "\n",
        ".",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.lists(TOKENS).map("".join)))
def test_parsers_never_raise(text: str) -> None:
    assert parse_verdict(text) in ("A", "B", "tie", None)
    rating = parse_rating(text)
    assert rating is None or 1 <= rating <= 10
