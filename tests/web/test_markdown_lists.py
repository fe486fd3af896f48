"""Markdown cells render numbered lists (issue 27 re-walk: the demo's "Run the cells in
order" steps ran together in one paragraph, "1. Dataset: … 2. Fine-tune …")."""

from __future__ import annotations

from webapp.home.management.commands.demo_setup import INTRO
from webapp.home.templatetags.tunebook import markdown


def test_numbered_items_make_an_ordered_list() -> None:
    html = markdown("Steps:\n\n1. **Upload** a file\n2) Train\n10. Evaluate <now>")
    assert html == (
        "<p>Steps:</p>\n<ol><li><strong>Upload</strong> a file</li><li>Train</li>"
        "<li>Evaluate &lt;now&gt;</li></ol>"
    )


def test_bullets_and_numbers_side_by_side_are_two_lists() -> None:
    html = markdown("- a\n* b\n1. one\n2. two\n- c\ntext")
    assert html == (
        "<ul><li>a</li><li>b</li></ul>\n<ol><li>one</li><li>two</li></ol>\n"
        "<ul><li>c</li></ul>\n<p>text</p>"
    )


def test_the_demo_intro_lists_its_four_steps() -> None:
    html = markdown(INTRO)
    steps = html.split("<ol>", 1)[1].split("</ol>", 1)[0]
    assert steps.count("<li>") == 4
    assert steps.startswith("<li><strong>Dataset</strong>")
