"""Exports of one evaluation: every judged pair (or grade) as CSV rows, everything as JSON."""

from __future__ import annotations

import csv
import io
from typing import Any

from django.db.models import Prefetch

from webapp.evaluations import selectors
from webapp.evaluations.models import Evaluation, HumanVote, PairVerdict


def _verdicts() -> Any:
    votes = HumanVote.objects.select_related("user").order_by("id")
    return PairVerdict.objects.prefetch_related(Prefetch("votes", queryset=votes))


def export_rows(*, evaluation: Evaluation) -> list[dict[str, Any]]:
    """One row per judged pair (or per grade in single mode), answers and votes included."""
    rows = []
    prompts = evaluation.prompts.prefetch_related(
        "answers", "grades", Prefetch("verdicts", queryset=_verdicts())
    ).order_by("position")
    for p in prompts:
        answers = {a.candidate: a for a in p.answers.all()}
        base = {"item_id": p.item_id, "category": p.category, "prompt": p.text}
        for v in p.verdicts.all():
            votes = [h.vote for h in v.votes.all()]
            rows.append(
                {
                    **base,
                    "a": v.a,
                    "b": v.b,
                    "answer_a": answers[v.a].text if v.a in answers else "",
                    "answer_b": answers[v.b].text if v.b in answers else "",
                    "outcome": v.outcome,
                    "inconsistent": v.inconsistent,
                    "calibrated": v.calibrated,
                    "prompt_version": v.prompt_version,
                    "verdict_ab": v.ab_verdict,
                    "status_ab": v.ab_status,
                    "rationale_ab": v.ab_rationale,
                    "confidence_ab": v.ab_confidence,
                    "verdict_ba": v.ba_verdict,
                    "status_ba": v.ba_status,
                    "rationale_ba": v.ba_rationale,
                    "confidence_ba": v.ba_confidence,
                    "human_votes": " ".join(votes),
                }
            )
        for g in p.grades.all():
            a = answers.get(g.candidate)
            rows.append(
                {
                    **base,
                    "candidate": g.candidate,
                    "answer": a.text if a else "",
                    "rating": g.rating,
                    "status": g.status,
                    "prompt_version": g.prompt_version,
                    "rationale": g.rationale,
                }
            )
    return rows


def export_csv(*, evaluation: Evaluation) -> str:
    rows = export_rows(evaluation=evaluation)
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields or ["item_id"])
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def export_json(*, evaluation: Evaluation) -> dict[str, Any]:
    ev = evaluation
    return {
        "evaluation": ev.pk,
        "eval_set": ev.eval_set,
        "mode": ev.mode,
        "judge": ev.judge,
        "prompt_versions": ev.prompt_versions,
        "candidates": [c.label for c in ev.candidates.all()],
        "summary": ev.summary,
        "agreement": selectors.agreement(evaluation=ev),
        "consistency": selectors.consistency(evaluation=ev),
        "errors": ev.errors,
        "rows": export_rows(evaluation=ev),
    }
