"""Preference data from a comparison (reads only): which judged pairs become DPO pairs in
OpenAI's preference format, and why the others are left out.

The rules, per judged pair (one prompt, two candidates):
- votes win: with votes, the majority decides (the judge is not asked); a split vote or a
  majority for "tie" leaves the pair out;
- without votes, the judge decides when its verdict agrees in both orders; a tie, a verdict
  that flipped with the order, or no verdict (an error or a skip) leaves the pair out;
- first of all, a pair whose answers are missing, failed or identical is left out:
  nothing to prefer;
- opt-in (`calibrated`): a flipped verdict of a judge that gives probabilities (the local
  constrained judge) is kept by its position-calibrated outcome, both orders' probabilities
  averaged, and recorded as its own source ("judge_calibrated"). A small judge that always
  prefers the first slot is inconsistent on every pair; its calibrated verdict still says
  which answer it favours once that bias is cancelled.

The write is services.preference_data_create.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from django.db.models import Prefetch

from webapp.evaluations.models import EvalAnswer, Evaluation, HumanVote, PairVerdict

# Why a pair was left out, in the order the preview lists them.
DROP_REASONS = {
    "tie": "a tie: by the votes, or by the judge in both orders",
    "inconsistent": "the judge's verdict flipped when the answers were swapped (no votes)",
    "calibrated_tie": "flipped with the order, and a tie once position bias is cancelled",
    "votes_split": "the votes are split evenly",
    "judge_failed": "the judge gave no verdict: an error or a skip (no votes)",
    "no_answer": "an answer is missing or failed",
    "identical": "both answers are the same text",
}


# Pairs the references must check before the preview warns that they mostly disagree.
MIN_CHECKED = 5
# Where a kept pair's winner came from, in the order the preview counts them.
SOURCES = ("human", "judge", "judge_calibrated")
SOURCE_LABELS = {
    "human": "decided by votes",
    "judge": "by the judge in both orders",
    "judge_calibrated": "by the judge's position-calibrated verdict",
}


def sources_text(by_source: dict[str, int], calibrated: bool) -> str:
    """ "2 decided by votes, 1 by the judge in both orders" (and the calibrated count when
    opted in): the preview's and the dataset version's words for where pairs came from."""
    shown = [s for s in SOURCES if s != "judge_calibrated" or calibrated]
    return ", ".join(f"{by_source.get(s, 0)} {SOURCE_LABELS[s]}" for s in shown)


def decide(
    *, outcome: str, inconsistent: bool, votes: list[str], calibrated: str = ""
) -> tuple[str | None, str]:
    """("a" or "b", its source) for a kept pair; (None, the drop reason) otherwise.
    `calibrated`: the position-calibrated outcome where the caller opted in to it."""
    if votes:
        ranked = Counter(votes).most_common()
        if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
            return None, "votes_split"
        pick = ranked[0][0]
        return (pick, "human") if pick in ("a", "b") else (None, "tie")
    if inconsistent and calibrated:
        return (
            (calibrated, "judge_calibrated")
            if calibrated in ("a", "b")
            else (None, "calibrated_tie")
        )
    if inconsistent:
        return None, "inconsistent"
    if outcome in ("a", "b"):
        return outcome, "judge"
    return (None, "tie") if outcome == "tie" else (None, "judge_failed")


@dataclass(frozen=True)
class KeptPair:
    verdict: PairVerdict
    source: str  # one of SOURCES
    preferred: str  # candidate labels
    rejected: str
    preferred_text: str
    rejected_text: str
    votes: int

    def record(self, evaluation: Evaluation) -> dict[str, Any]:
        """One JSONL line: OpenAI's preference format plus its provenance in "metadata"
        (the parser reads only the three keys it knows)."""
        v = self.verdict
        return {
            "input": {"messages": [{"role": "user", "content": v.prompt.text}]},
            "preferred_output": [{"role": "assistant", "content": self.preferred_text}],
            "non_preferred_output": [{"role": "assistant", "content": self.rejected_text}],
            "metadata": {
                "evaluation": evaluation.pk,
                "run": evaluation.run_id,
                "item": v.prompt.item_id,
                "verdict": v.pk,
                "source": self.source,
                "votes": self.votes,
                "judge": evaluation.judge,
                "prompt_version": v.prompt_version,
                "preferred": self.preferred,
                "non_preferred": self.rejected,
            },
        }


@dataclass
class PreferenceSelection:
    evaluation: Evaluation
    calibrated: bool = False  # the opt-in: flipped verdicts by their calibrated outcome
    kept: list[KeptPair] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)

    @property
    def by_source(self) -> dict[str, int]:
        counts = Counter(p.source for p in self.kept)
        return {source: counts[source] for source in SOURCES}

    @property
    def sources_text(self) -> str:
        return sources_text(self.by_source, self.calibrated)

    @cached_property  # read by the page up to three times; `kept` is final by then
    def reference_agreement(self) -> dict[str, dict[str, int]]:
        """Per source, the kept pairs where exactly one answer matches a reference (the
        prompt's, ignoring case and surrounding spaces), and how many prefer that one: a
        judge whose verdicts go against the references shows it here, before training."""
        tally: dict[str, dict[str, int]] = {}
        for pair in self.kept:
            refs = {r.strip().casefold() for r in pair.verdict.prompt.references or []}
            right = [
                t.strip().casefold() in refs for t in (pair.preferred_text, pair.rejected_text)
            ]
            if refs and right[0] != right[1]:
                counts = tally.setdefault(pair.source, {"decided": 0, "agrees": 0})
                counts["decided"] += 1
                counts["agrees"] += right[0]
        return tally

    @property
    def reference_rows(self) -> list[tuple[str, int, int]]:
        """(source label, pairs preferring the matching answer, pairs checked), per source."""
        checked = self.reference_agreement
        return [(SOURCE_LABELS[s], checked[s]["agrees"], checked[s]["decided"])
                for s in SOURCES if s in checked]  # fmt: skip

    @property
    def against_references(self) -> bool:
        """Most of the judge's pairs that the references can check prefer the answer they
        call wrong (votes are the team's own call, and not what the warning is about)."""
        checked = self.reference_agreement
        counts = [checked[s] for s in ("judge", "judge_calibrated") if s in checked]
        decided = sum(c["decided"] for c in counts)
        return decided >= MIN_CHECKED and 2 * sum(c["agrees"] for c in counts) < decided

    @property
    def drop_rows(self) -> list[tuple[str, str, int]]:
        """(code, why, count) of each reason that dropped a pair."""
        return [(k, why, self.dropped[k]) for k, why in DROP_REASONS.items() if self.dropped[k]]

    def jsonl(self) -> bytes:
        lines = (json.dumps(p.record(self.evaluation), ensure_ascii=False) for p in self.kept)
        return "".join(f"{line}\n" for line in lines).encode()

    def preview_model(self) -> str:
        """The model the pairs were answered by (its chat template renders the dataset's
        preview and counts its tokens): the first local candidate's, else none."""
        local = self.evaluation.candidates.filter(kind__in=("base", "adapter")).first()
        return local.model if local is not None else ""

    def origin(self) -> dict[str, Any]:
        """The dataset version's origin, for the lineage view."""
        run = self.evaluation.run
        return {
            "kind": "evaluation",
            "evaluation": self.evaluation.pk,
            "run": run.pk,
            "label": f"{run.cell} v{run.version} ({self.evaluation.eval_set})",
            "kept": len(self.kept),
            "calibrated": self.calibrated,
            "by_source": self.by_source,
            "dropped": dict(self.dropped),
        }


def default_dataset_name(evaluation: Evaluation) -> str:
    """The name "Make preference data" offers for a new dataset (the page and the API)."""
    return f"Preferences from {evaluation.run.cell}"[:100]


def _answer(answers: dict[str, EvalAnswer], label: str) -> str:
    a = answers.get(label)
    return a.text if a is not None and a.status == "ok" else ""


def offers_calibrated(evaluation: Evaluation) -> bool:
    """Whether the evaluation's judge recorded calibrated outcomes (a constrained local
    judge) for a flipped verdict: only then is the opt-in worth offering."""
    return evaluation.verdicts.filter(inconsistent=True).exclude(calibrated="").exists()


def no_winner_message(evaluation: Evaluation, calibrated: bool) -> str:
    """What to do when no pair has a winner (the service's refusal and the page's hint)."""
    also = (
        ", or keep the judge's position-calibrated verdicts"
        if not calibrated and offers_calibrated(evaluation)
        else ""
    )
    return f"No pair has a winner yet: vote on some pairs, or judge them again{also}."


def preference_selection(
    *, evaluation: Evaluation, calibrated: bool = False
) -> PreferenceSelection:
    """Every judged pair of the evaluation, kept as a preference pair or counted by why not
    (`calibrated`: the opt-in described at the top)."""
    votes = HumanVote.objects.only("verdict_id", "vote")
    verdicts = evaluation.verdicts.select_related("prompt").prefetch_related(
        Prefetch("votes", queryset=votes), "prompt__answers"
    )
    selection = PreferenceSelection(evaluation, calibrated)
    for v in verdicts:
        answers = {a.candidate: a for a in v.prompt.answers.all()}
        text = {side: _answer(answers, side) for side in (v.a, v.b)}
        # Answers first: two identical answers are "identical" whatever anyone said of them.
        if not all(t.strip() for t in text.values()):
            selection.dropped["no_answer"] += 1
            continue
        if text[v.a] == text[v.b]:
            selection.dropped["identical"] += 1
            continue
        cast = [h.vote for h in v.votes.all()]
        opted = v.calibrated if calibrated else ""
        pick, why = decide(
            outcome=v.outcome, inconsistent=v.inconsistent, votes=cast, calibrated=opted
        )
        if pick is None:
            selection.dropped[why] += 1
            continue
        preferred, rejected = (v.a, v.b) if pick == "a" else (v.b, v.a)
        kept = KeptPair(v, why, preferred, rejected, text[preferred], text[rejected], len(cast))
        selection.kept.append(kept)
    return selection
