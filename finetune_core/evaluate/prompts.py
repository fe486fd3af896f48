"""Versioned judge prompts, after MT-Bench (Zheng et al., 2023): pairwise with a
[[A]]/[[B]]/[[C]] verdict, single-answer grading with "Rating: [[7]]", and
reference-guided variants. A template's version is a hash of its text, and every
verdict records it, so results from different prompt texts are never mixed up."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from finetune_core.contracts.prompts import prompt_render


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    kind: str  # pairwise | single
    system: str
    user: str

    @property
    def version(self) -> str:
        digest = hashlib.sha256(f"{self.kind}\n{self.system}\n{self.user}".encode()).hexdigest()
        return f"{self.name}@{digest[:10]}"

    def messages(self, **fields: str) -> list[dict[str, str]]:
        return [
            {"role": "system", "content": self.system},
            # Plain substitution: a template's text may come from a user (never str.format).
            {"role": "user", "content": prompt_render(self.user, fields)},
        ]


_IMPARTIAL_PAIR = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two "
    "AI assistants to the user question displayed below. "
)
_NO_BIAS = (
    "Avoid any position biases and ensure that the order in which the responses were presented "
    "does not influence your decision. Do not allow the length of the responses to influence "
    "your evaluation. Do not favor certain names of the assistants. Be as objective as possible. "
    "After providing your explanation, output your final verdict by strictly following this "
    'format: "[[A]]" if assistant A is better, "[[B]]" if assistant B is better, and "[[C]]" '
    "for a tie."
)
_ANSWERS = (
    "[The Start of Assistant A's Answer]\n{answer_a}\n[The End of Assistant A's Answer]\n\n"
    "[The Start of Assistant B's Answer]\n{answer_b}\n[The End of Assistant B's Answer]"
)
_REFERENCE = "[The Start of Reference Answer]\n{reference}\n[The End of Reference Answer]\n\n"

PAIRWISE = PromptTemplate(
    "pairwise",
    "pairwise",
    _IMPARTIAL_PAIR
    + "You should choose the assistant that follows the user's instructions and answers the "
    "user's question better. Your evaluation should consider factors such as the helpfulness, "
    "relevance, accuracy, depth, creativity, and level of detail of their responses. Begin your "
    "evaluation by comparing the two responses and provide a short explanation. " + _NO_BIAS,
    "[User Question]\n{question}\n\n" + _ANSWERS,
)

PAIRWISE_REFERENCE = PromptTemplate(
    "pairwise-reference",
    "pairwise",
    _IMPARTIAL_PAIR
    + "Your evaluation should consider correctness and helpfulness. You will be given a "
    "reference answer, assistant A's answer, and assistant B's answer. Your job is to evaluate "
    "which assistant's answer is better. Begin your evaluation by comparing both assistants' "
    "answers with the reference answer. Identify and correct any mistakes. " + _NO_BIAS,
    "[User Question]\n{question}\n\n" + _REFERENCE + _ANSWERS,
)

_RATE = (
    "After providing your explanation, you must rate the response on a scale of 1 to 10 by "
    'strictly following this format: "[[rating]]", for example: "Rating: [[5]]".'
)
_IMPARTIAL_ONE = (
    "Please act as an impartial judge and evaluate the quality of the response provided by an "
    "AI assistant to the user question displayed below. "
)
_ANSWER = "[The Start of Assistant's Answer]\n{answer}\n[The End of Assistant's Answer]"

SINGLE = PromptTemplate(
    "single",
    "single",
    _IMPARTIAL_ONE + "Your evaluation should consider factors such as the helpfulness, "
    "relevance, accuracy, depth, creativity, and level of detail of the response. Begin your "
    "evaluation by providing a short explanation. Be as objective as possible. " + _RATE,
    "[Question]\n{question}\n\n" + _ANSWER,
)

SINGLE_REFERENCE = PromptTemplate(
    "single-reference",
    "single",
    _IMPARTIAL_ONE + "Your evaluation should consider correctness and helpfulness. You will be "
    "given a reference answer and the assistant's answer. Begin your evaluation by comparing the "
    "assistant's answer with the reference answer. Identify and correct any mistakes. Be as "
    "objective as possible. " + _RATE,
    "[Question]\n{question}\n\n" + _REFERENCE + _ANSWER,
)


def reference_text(references: tuple[str, ...]) -> str:
    if len(references) == 1:
        return references[0]
    return "Any of these is correct:\n" + "\n".join(f"- {r}" for r in references)


# Verdict-first variants, for small local judges: the verdict is the first thing
# written, so a constrained local judge scores it straight after the prompt without
# generating a rationale (one forward pass per judgment instead of hundreds).
_FIRST_PAIR = (
    "Avoid any position biases and ensure that the order in which the responses were presented "
    "does not influence your decision. Do not allow the length of the responses to influence "
    "your evaluation. Be as objective as possible. Output your final verdict first, strictly in "
    'this format: "[[A]]" if assistant A is better, "[[B]]" if assistant B is better, and '
    '"[[C]]" for a tie. Then give a short explanation.'
)
_FIRST_RATE = (
    "Rate the response on a scale of 1 to 10 and output the rating first, strictly in this "
    'format: "Rating: [[5]]". Then give a short explanation.'
)

PAIRWISE_VERDICT_FIRST = PromptTemplate(
    "pairwise-verdict-first",
    "pairwise",
    _IMPARTIAL_PAIR
    + "You should choose the assistant that follows the user's instructions and answers the "
    "user's question better, considering helpfulness, relevance and accuracy. " + _FIRST_PAIR,
    PAIRWISE.user,
)

PAIRWISE_REFERENCE_VERDICT_FIRST = PromptTemplate(
    "pairwise-reference-verdict-first",
    "pairwise",
    _IMPARTIAL_PAIR
    + "Your evaluation should consider correctness and helpfulness. You will be given a "
    "reference answer, assistant A's answer, and assistant B's answer: the answer that agrees "
    "with the reference answer is better. " + _FIRST_PAIR,
    PAIRWISE_REFERENCE.user,
)

SINGLE_VERDICT_FIRST = PromptTemplate(
    "single-verdict-first",
    "single",
    _IMPARTIAL_ONE + "Your evaluation should consider the helpfulness, relevance and accuracy "
    "of the response. Be as objective as possible. " + _FIRST_RATE,
    SINGLE.user,
)

SINGLE_REFERENCE_VERDICT_FIRST = PromptTemplate(
    "single-reference-verdict-first",
    "single",
    _IMPARTIAL_ONE + "Your evaluation should consider correctness and helpfulness. You will be "
    "given a reference answer and the assistant's answer: an answer that disagrees with the "
    "reference answer is wrong. Be as objective as possible. " + _FIRST_RATE,
    SINGLE_REFERENCE.user,
)
