"""Judge prompt templates are user text: only plain named placeholders are filled in, and
nothing in a template is evaluated (no format specs, conversions, indexes or attributes)."""

from __future__ import annotations

import tracemalloc

import pytest

from finetune_core.contracts.prompts import PromptTemplateError, prompt_check, prompt_render
from finetune_core.evaluate.prompts import (
    PAIRWISE,
    PAIRWISE_REFERENCE,
    SINGLE,
    SINGLE_REFERENCE,
    PromptTemplate,
)

FIELDS = {"question": "q", "answer_a": "A", "answer_b": "B", "reference": "r"}
HOSTILE = [
    "{question:>300000000}",
    "{question:{answer_a}}",
    "{question.__class__}",
    "{question[0]}",
    "{0}",
    "{}",
    "{question!r}",
    "{secret}",
]


@pytest.mark.parametrize("placeholder", HOSTILE)
def test_engine_never_evaluates_a_placeholder(placeholder: str) -> None:
    template = PromptTemplate("custom", "pairwise", "s", placeholder + "{answer_a}{answer_b}")
    tracemalloc.start()
    try:
        with pytest.raises(PromptTemplateError, match=r"use only plain names, \{question\}"):
            template.messages(**FIELDS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000  # the 300 MB padding was never built


@pytest.mark.parametrize("placeholder", HOSTILE)
def test_check_refuses_each_hostile_placeholder_naming_the_allowed_ones(placeholder: str) -> None:
    with pytest.raises(PromptTemplateError) as refused:
        prompt_check("{question}{answer_a}{answer_b}" + placeholder, kind="pairwise")
    message = str(refused.value)
    assert placeholder in message and "{question}, {answer_a}, {answer_b}" in message


def test_render_is_plain_substitution() -> None:
    text = "{{literal}} [{question}] {answer_a}/{answer_b} {question}"
    values = {**FIELDS, "question": "{answer_b:>9} {0}"}  # values are never parsed
    assert prompt_render(text, values) == "{literal} [{answer_b:>9} {0}] A/B {answer_b:>9} {0}"
    assert prompt_render(text, values) == text.format(**values)


@pytest.mark.parametrize("template", [PAIRWISE, PAIRWISE_REFERENCE, SINGLE, SINGLE_REFERENCE])
def test_built_in_templates_pass_their_own_check(template: PromptTemplate) -> None:
    kind = template.name
    prompt_check(template.user, kind=kind)
    values = {**FIELDS, "answer": "a"}
    assert template.messages(**values)[1]["content"] == template.user.format(**values)


def test_check_names_missing_placeholders_and_stray_braces() -> None:
    with pytest.raises(PromptTemplateError, match=r"must contain \{reference\}, \{answer\}"):
        prompt_check("{question}", kind="single-reference")
    with pytest.raises(PromptTemplateError, match="Stray brace"):
        prompt_check("{question} {answer} }", kind="single")
    with pytest.raises(PromptTemplateError, match="Unknown prompt kind"):
        prompt_check("{question}", kind="triple")
