"""Reads for the comparison view: leaderboard, per-prompt rows with filters, agreement."""

from __future__ import annotations

import difflib
import html
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Prefetch, Q, QuerySet
from django.utils.safestring import SafeString, mark_safe

from finetune_core.contracts.egress import EgressPolicy
from webapp.evaluations import stats
from webapp.evaluations.models import (
    EvalPrompt,
    Evaluation,
    HumanVote,
    JudgeBackend,
    JudgePrompt,
    PairVerdict,
)
from webapp.projects.models import Project
from webapp.teams.models import Team

MAX_ROWS = 300


def egress_policy() -> EgressPolicy:
    """Where judge and candidate endpoints may connect: public addresses, and the hosts the
    operator lists in EGRESS_ALLOW_HOSTS (checked at start-up)."""
    return EgressPolicy.parse(settings.EGRESS_ALLOW_HOSTS)


def team_backends(*, team: Team) -> QuerySet[JudgeBackend]:
    return JudgeBackend.objects.filter(team=team)


def project_prompts(*, project: Project) -> dict[str, list[JudgePrompt]]:
    """Every version of each kind, newest first."""
    out: dict[str, list[JudgePrompt]] = defaultdict(list)
    for p in project.judge_prompts.all():
        out[p.kind].append(p)
    return dict(out)


def prompt_start(*, project: Project, kind: str) -> dict[str, str] | None:
    """Text to start editing a judge prompt from: the project's newest version of that
    kind, else the text the project's newest evaluation used (e.g. MT-Bench's default)."""
    saved = project.judge_prompts.filter(kind=kind).order_by("-version").first()
    if saved is not None:
        return {"system": saved.system, "user": saved.user}
    evals = Evaluation.objects.filter(run__cell__project=project).order_by("-pk")
    for ev in evals.only("summary")[:20]:
        for t in (ev.summary or {}).get("templates", {}).values():
            if t["name"] == kind:
                return {"system": t["system"], "user": t["user"]}
    return None


@dataclass
class Filters:
    lost: str = ""  # a candidate label: prompts where it lost a pair
    inconsistent: bool = False
    disagree: bool = False  # the judge's outcome differs from a human vote
    q: str = ""

    @classmethod
    def from_query(cls, params: Any) -> Filters:
        return cls(
            lost=params.get("lost", "")[:200],
            inconsistent=params.get("inconsistent") == "1",
            disagree=params.get("disagree") == "1",
            q=params.get("q", "").strip()[:200],
        )

    @property
    def active(self) -> bool:
        return bool(self.lost or self.inconsistent or self.disagree or self.q)


@dataclass
class PromptRow:
    prompt: EvalPrompt
    answers: list[Any] = field(default_factory=list)
    verdicts: list[PairVerdict] = field(default_factory=list)
    grades: list[Any] = field(default_factory=list)


def _verdict_qs() -> QuerySet[PairVerdict]:
    votes = HumanVote.objects.select_related("user").order_by("id")
    return PairVerdict.objects.prefetch_related(Prefetch("votes", queryset=votes))


def _disagrees(v: PairVerdict) -> bool:
    return v.decided and any(h.vote != v.outcome for h in v.votes.all())


def prompt_rows(
    *, evaluation: Evaluation, filters: Filters, user: AbstractBaseUser | None = None
) -> list[PromptRow]:
    qs = evaluation.prompts.order_by("position")
    if filters.q:
        qs = qs.filter(Q(text__icontains=filters.q) | Q(answers__text__icontains=filters.q))
    if filters.lost:
        lost = Q(verdicts__a=filters.lost, verdicts__outcome="b") | Q(
            verdicts__b=filters.lost, verdicts__outcome="a"
        )
        qs = qs.filter(lost)
    if filters.inconsistent:
        qs = qs.filter(verdicts__inconsistent=True)
    qs = qs.distinct().prefetch_related(
        "answers", "grades", Prefetch("verdicts", queryset=_verdict_qs())
    )
    order = {c.label: c.position for c in evaluation.candidates.all()}
    rows = []
    for p in qs:
        verdicts = list(p.verdicts.all())
        if filters.disagree and not any(_disagrees(v) for v in verdicts):
            continue
        for v in verdicts:
            v.disagrees = _disagrees(v)
            v.my_vote = next((h.vote for h in v.votes.all() if user and h.user_id == user.pk), "")
        answers = sorted(p.answers.all(), key=lambda a: order.get(a.candidate, 0))
        rows.append(PromptRow(p, answers, verdicts, list(p.grades.all())))
        if len(rows) >= MAX_ROWS:
            break
    return rows


def agreement(*, evaluation: Evaluation) -> dict[str, Any]:
    pairs = [
        (outcome, vote)
        for outcome, vote in HumanVote.objects.filter(verdict__evaluation=evaluation).values_list(
            "verdict__outcome", "vote"
        )
        if outcome in ("a", "b", "tie")
    ]
    return stats.agreement(pairs)


def consistency(*, evaluation: Evaluation) -> dict[str, Any]:
    rows = evaluation.verdicts.values_list("ab_status", "ba_status", "inconsistent")
    return stats.consistency(rows)


def leaderboard(*, evaluation: Evaluation) -> list[dict[str, Any]]:
    """One row per candidate: Bradley-Terry strength (>2 candidates), else the win rate of
    each candidate in its pair, the mean grade in single mode, or without a judge the exact
    match against the references; each with its CI."""
    summary = evaluation.summary or {}
    if summary.get("ranking"):
        return [
            {**r, "label": r["candidate"], "value": r["strength"], "scale": "strength"}
            for r in summary["ranking"]
        ]
    if summary.get("pairs"):
        rows = []
        for p in summary["pairs"]:
            if p["win_rate"] is None:
                continue
            rows.append(
                {
                    "label": p["a"],
                    "value": p["win_rate"],
                    "ci_low": p["ci_low"],
                    "ci_high": p["ci_high"],
                    "scale": f"win rate vs {p['b']}",
                }
            )
            rows.append(
                {
                    "label": p["b"],
                    "value": 1 - p["win_rate"],
                    "ci_low": 1 - p["ci_high"],
                    "ci_high": 1 - p["ci_low"],
                    "scale": f"win rate vs {p['a']}",
                }
            )
        rows.sort(key=lambda r: -r["value"])
        return rows
    if summary.get("grade_summary"):
        return [
            {**g, "label": g["candidate"], "value": g["mean_rating"], "scale": "rating"}
            for g in summary["grade_summary"]
            if g["mean_rating"] is not None
        ]
    return exact_match_rows(summary)


def exact_match_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Each candidate's exact match against the references, with its CI, in candidate
    order (the base first): the result of an evaluation without a judge."""
    rows = []
    for label, metrics in (summary.get("metrics") or {}).items():
        em = metrics.get("exact_match") or {}
        if em.get("value") is not None:
            rows.append(
                {
                    "label": label,
                    "value": em["value"],
                    "ci_low": em.get("low"),
                    "ci_high": em.get("high"),
                    "n": em.get("n"),
                    "correct": round(em["value"] * (em.get("n") or 0)),
                    "scale": "exact match",
                }
            )
    return rows


def diff_html(a: str, b: str) -> SafeString:
    """Word-level diff of two answers: <del> what only A says, <ins> what only B says."""
    wa, wb = a.split(" "), b.split(" ")
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, wa, wb, autojunk=False).get_opcodes():
        left, right = html.escape(" ".join(wa[i1:i2])), html.escape(" ".join(wb[j1:j2]))
        if op == "equal":
            out.append(left)
        if op in ("delete", "replace"):
            out.append(f"<del>{left}</del>")
        if op in ("insert", "replace"):
            out.append(f"<ins>{right}</ins>")
    return mark_safe(" ".join(out))
