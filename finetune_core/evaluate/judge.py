"""LLM-as-a-judge: pairwise comparison in both orders and single-answer grading.

Each pair is judged twice, A/B and B/A. Verdicts that agree after mapping back
decide; verdicts that flip with the order become a tie flagged inconsistent
(position bias). An unparseable or failed judgment is asked once more, then kept
as an error: nothing is dropped and no judge output can crash a run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any, Protocol

from finetune_core.evaluate.candidates import Answer
from finetune_core.evaluate.constrained import OPTIONS, balanced_position
from finetune_core.evaluate.endpoint import OnDone, Reply, Tally
from finetune_core.evaluate.local import LocalBackend
from finetune_core.evaluate.prompts import (
    PAIRWISE,
    PAIRWISE_REFERENCE,
    PAIRWISE_REFERENCE_VERDICT_FIRST,
    PAIRWISE_VERDICT_FIRST,
    SINGLE,
    SINGLE_REFERENCE,
    SINGLE_REFERENCE_VERDICT_FIRST,
    SINGLE_VERDICT_FIRST,
    PromptTemplate,
    reference_text,
)
from finetune_core.evaluate.sets import EvalSet
from finetune_core.evaluate.verdict import parse_rating, parse_verdict

SKIPPED = ("skipped_budget", "skipped_limit")
# (judgments done, judgments to make): see Judge.compare.
JudgeProgress = Callable[[int, int], None]
# A constrained label as the value the free-text parsers would give.
_VALUE = {"pairwise": lambda label: "tie" if label == "C" else label, "single": float}
__all__ = [
    "SKIPPED",
    "Backend",
    "GradeResult",
    "Judge",
    "Judgment",
    "LocalBackend",
    "PairResult",
    "combine",
]


class Backend(Protocol):
    """A judge backend; LocalBackend and Endpoint also take `on_done` (see endpoint.OnDone),
    which the Judge passes only when its caller watches progress."""

    def complete(
        self,
        conversations: Sequence[list[dict[str, str]]],
        *,
        max_tokens: int,
        temperature: float,
        seed: int | None,
    ) -> list[Reply]: ...


@dataclass
class Judgment:
    """One judge call's outcome (after the one retry)."""

    value: Any  # "A" | "B" | "tie" for pairwise, a float rating, or None
    status: str  # ok | unparseable | error | timeout | skipped_budget | skipped_limit
    raw: str
    error: str
    attempts: int
    prompt_version: str
    # A constrained local verdict: the chosen label's probability and every allowed
    # label's, renormalised over the allowed set (None for free-text judges).
    constrained: bool = False
    confidence: float | None = None
    probabilities: dict[str, float] | None = None


@dataclass
class PairResult:
    item_id: str
    category: str
    a: str
    b: str
    outcome: str  # a | b | tie | error | skipped_budget | skipped_limit
    inconsistent: bool  # the verdict flipped when the answers were swapped
    prompt_version: str
    ab: Judgment  # a shown first
    ba: Judgment  # b shown first
    # Constrained judges only: the outcome from both orders' probabilities averaged,
    # which cancels a constant position bias (see constrained.balanced_position).
    calibrated: str | None = None
    calibrated_probabilities: dict[str, float] | None = None

    @property
    def score_a(self) -> float | None:
        return {"a": 1.0, "tie": 0.5, "b": 0.0}.get(self.outcome)


@dataclass
class GradeResult:
    item_id: str
    category: str
    candidate: str
    rating: float | None
    status: str
    prompt_version: str
    judgment: Judgment


@dataclass
class Judge:
    backend: Any
    max_tokens: int = 512
    use_reference: bool = True
    # The retry samples, so a deterministic judge can answer differently the second time.
    retry_temperature: float = 0.7
    seed: int = 0
    pair_templates: tuple[PromptTemplate, PromptTemplate] = (PAIRWISE, PAIRWISE_REFERENCE)
    single_templates: tuple[PromptTemplate, PromptTemplate] = (SINGLE, SINGLE_REFERENCE)
    log: list[str] = field(default_factory=list)
    # Verdict-first prompts; a constrained local judge then writes no rationale at all.
    verdict_first: bool = False

    def __post_init__(self) -> None:
        if self.verdict_first and self.pair_templates == (PAIRWISE, PAIRWISE_REFERENCE):
            self.pair_templates = (PAIRWISE_VERDICT_FIRST, PAIRWISE_REFERENCE_VERDICT_FIRST)
        if self.verdict_first and self.single_templates == (SINGLE, SINGLE_REFERENCE):
            self.single_templates = (SINGLE_VERDICT_FIRST, SINGLE_REFERENCE_VERDICT_FIRST)

    @property
    def constrained(self) -> bool:
        """True when the backend picks verdicts from probabilities (a local model)."""
        return bool(getattr(self.backend, "constrained", False)) and hasattr(
            self.backend, "verdicts"
        )

    def _call(
        self,
        convs: list,
        kinds: list[str],
        temperature: float,
        seed: int,
        on_done: OnDone | None = None,
    ) -> list[Reply]:
        # Only when asked: a backend of the caller's own need not know on_done.
        more: dict[str, Any] = {} if on_done is None else {"on_done": on_done}
        if not self.constrained:
            return self.backend.complete(
                convs, max_tokens=self.max_tokens, temperature=temperature, seed=seed, **more
            )
        replies: list[Reply | None] = [None] * len(convs)
        for kind in dict.fromkeys(kinds):  # one call per judgment kind, order kept
            idx = [i for i, k in enumerate(kinds) if k == kind]
            got = self.backend.verdicts(
                [convs[i] for i in idx],
                OPTIONS[kind],
                rationale_tokens=0 if self.verdict_first else self.max_tokens,
                temperature=temperature,
                seed=seed,
                **more,
            )
            for i, reply in zip(idx, got, strict=True):
                replies[i] = reply
        return replies  # type: ignore[return-value]

    def ask(
        self,
        requests: list[tuple[PromptTemplate, dict[str, str]]],
        parse: Callable,
        on_progress: JudgeProgress | None = None,
    ) -> list[Judgment]:
        """One judgment per request; see compare() for on_progress."""
        convs = [t.messages(**f) for t, f in requests]
        kinds = [t.kind for t, _ in requests]
        on_done = None
        if on_progress is not None:
            tally = Tally(len(requests), on_progress)
            tally.add(0)
            on_done = tally.add
        replies = self._call(convs, kinds, 0.0, self.seed, on_done)
        results = [
            self._judgment(r, parse, t.version, t.kind)
            for r, (t, _) in zip(replies, requests, strict=True)
        ]
        # A constrained verdict is never unparseable: only errors (e.g. memory) come back.
        again = [i for i, j in enumerate(results) if j.status in ("unparseable", "error")]
        if again:
            retried = self._call(
                [convs[i] for i in again],
                [kinds[i] for i in again],
                self.retry_temperature,
                self.seed + 1,
            )
            for i, reply in zip(again, retried, strict=True):
                second = self._judgment(reply, parse, requests[i][0].version, kinds[i])
                if second.status in SKIPPED:  # the retry was refused: keep the first failure
                    continue
                second.attempts += results[i].attempts
                results[i] = second
        return results

    @staticmethod
    def _judgment(reply: Reply, parse: Callable, version: str, kind: str = "pairwise") -> Judgment:
        if reply.status == "ok" and reply.constrained:
            # The chosen label is the verdict; the text reads back to it (tests check).
            probs = reply.probabilities or {}
            return Judgment(
                _VALUE[kind](reply.choice),
                "ok",
                reply.text,
                "",
                1,
                version,
                constrained=True,
                confidence=probs.get(reply.choice),
                probabilities=probs,
            )
        value = parse(reply.text) if reply.status == "ok" else None
        status = (
            reply.status if reply.status != "ok" else ("ok" if value is not None else "unparseable")
        )
        return Judgment(value, status, reply.text, reply.error, 1, version)

    def _pair_template(self, refs: tuple[str, ...]) -> PromptTemplate:
        return self.pair_templates[1 if refs and self.use_reference else 0]

    def compare(
        self,
        evalset: EvalSet,
        answers: dict[str, dict[str, Answer]],
        pairs: Sequence[tuple[str, str]] | None = None,
        on_progress: JudgeProgress | None = None,
    ) -> list[PairResult]:
        """Every pair (default: all pairs of candidates) on every item, in both orders.

        on_progress(done, total) hears the judgments to make (done = 0) before the first
        call, then each finished batch (a local batch, or one endpoint reply, from its
        threads); retries of failed verdicts are not counted. An exception it raises
        (e.g. Stopped) ends the judging."""
        pairs = list(pairs) if pairs is not None else list(combinations(list(answers), 2))
        jobs, requests = [], []
        for item in evalset:
            refs = item.references if self.use_reference else ()
            template = self._pair_template(refs)
            fields = {
                "question": item.prompt_text,
                "reference": reference_text(refs) if refs else "",
            }
            for a, b in pairs:
                ans_a, ans_b = answers[a][item.id], answers[b][item.id]
                jobs.append((item, a, b, template, ans_a.status == ans_b.status == "ok"))
                if jobs[-1][-1]:
                    requests.append(
                        (template, {**fields, "answer_a": ans_a.text, "answer_b": ans_b.text})
                    )
                    requests.append(
                        (template, {**fields, "answer_a": ans_b.text, "answer_b": ans_a.text})
                    )
        judged = iter(self.ask(requests, parse_verdict, on_progress))
        results = []
        for item, a, b, template, answered in jobs:
            if not answered:
                missing = Judgment(
                    None, "error", "", "a candidate has no answer", 0, template.version
                )
                results.append(
                    PairResult(
                        item.id,
                        item.category,
                        a,
                        b,
                        "error",
                        False,
                        template.version,
                        missing,
                        missing,
                    )
                )
                continue
            ab, ba = next(judged), next(judged)
            outcome, flipped = combine(ab, ba)
            pr = PairResult(
                item.id, item.category, a, b, outcome, flipped, template.version, ab, ba
            )
            if ab.status == ba.status == "ok" and (
                bal := balanced_position(ab.probabilities, ba.probabilities)
            ):
                pr.calibrated, pr.calibrated_probabilities = bal
            results.append(pr)
        return results

    def grade(
        self,
        evalset: EvalSet,
        answers: dict[str, dict[str, Answer]],
        on_progress: JudgeProgress | None = None,
    ) -> list[GradeResult]:
        """A 1-10 rating for every candidate's answer to every item (on_progress: compare)."""
        jobs, requests = [], []
        for item in evalset:
            refs = item.references if self.use_reference else ()
            template = self.single_templates[1 if refs else 0]
            for label, by_item in answers.items():
                ans = by_item[item.id]
                jobs.append((item, label, template, ans.status == "ok"))
                if ans.status == "ok":
                    fields = {"question": item.prompt_text, "answer": ans.text}
                    requests.append(
                        (template, {**fields, "reference": reference_text(refs) if refs else ""})
                    )
        judged = iter(self.ask(requests, parse_rating, on_progress))
        results = []
        for item, label, template, answered in jobs:
            j = (
                next(judged)
                if answered
                else Judgment(None, "error", "", "no answer", 0, template.version)
            )
            results.append(
                GradeResult(item.id, item.category, label, j.value, j.status, template.version, j)
            )
        return results


def combine(ab: Judgment, ba: Judgment) -> tuple[str, bool]:
    """(outcome, inconsistent) from the A-first and B-first verdicts."""
    if ab.status == "ok" and ba.status == "ok":
        first = {"A": "a", "B": "b", "tie": "tie"}[ab.value]
        second = {"A": "b", "B": "a", "tie": "tie"}[ba.value]  # b was shown as A
        return (first, False) if first == second else ("tie", True)
    for j in (ab, ba):
        if j.status in SKIPPED:
            return j.status, False
    return "error", False
