"""/api/evaluations: an evaluation's results, its per-pair verdicts and human votes.

Registered with one line in webapp/api/native/app.py ROUTERS. Every object is fetched
through webapp.teams.access with the key's user, limited to the key's team.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from django.http import HttpRequest
from ninja import Query, Router, Schema

from webapp.api.native.common import ERRORS, ListOut, Page, caller_of, id_path, paginate
from webapp.evaluations import selectors
from webapp.evaluations.models import Evaluation, PairVerdict
from webapp.evaluations.services import human_vote_cast
from webapp.teams.access import get_for_user

router = Router(tags=["evaluations"])


class EvaluationOut(Schema):
    id: int
    object: str = "evaluation"
    run: int
    cell: int
    eval_set: str
    mode: str
    judge: str
    prompt_versions: list[str]
    candidates: list[str]
    n_prompts: int
    summary: dict[str, Any]
    agreement: dict[str, Any]
    consistency: dict[str, Any]
    errors: list[str]
    created_at: datetime


class OrderOut(Schema):
    verdict: str
    status: str
    rationale: str
    error: str
    confidence: float | None = None


class VerdictOut(Schema):
    id: int
    object: str = "evaluation.verdict"
    item_id: str
    category: str
    prompt: str
    a: str
    b: str
    outcome: str
    inconsistent: bool
    calibrated: str
    prompt_version: str
    a_first: OrderOut
    b_first: OrderOut
    human_votes: dict[str, str]


class VoteIn(Schema):
    vote: Literal["a", "b", "tie"]


class VoteOut(Schema):
    verdict: int
    user: str
    vote: str


def _evaluation(request: HttpRequest, evaluation_id: int) -> Evaluation:
    caller = caller_of(request)
    qs = Evaluation.objects.filter(run__cell__project__team=caller.team).select_related("run")
    return get_for_user(qs, caller.user, evaluation_id)  # type: ignore[arg-type]


def _out(ev: Evaluation) -> EvaluationOut:
    return EvaluationOut(
        id=ev.pk,
        run=ev.run_id,
        cell=ev.run.cell_id,
        eval_set=ev.eval_set,
        mode=ev.mode,
        judge=ev.judge,
        prompt_versions=ev.prompt_versions,
        candidates=[c.label for c in ev.candidates.all()],
        n_prompts=ev.prompts.count(),
        summary=ev.summary,
        agreement=selectors.agreement(evaluation=ev),
        consistency=selectors.consistency(evaluation=ev),
        errors=ev.errors,
        created_at=ev.created_at,
    )


def _order(v: PairVerdict, side: str) -> OrderOut:
    return OrderOut(
        verdict=getattr(v, f"{side}_verdict"),
        status=getattr(v, f"{side}_status"),
        rationale=getattr(v, f"{side}_rationale"),
        error=getattr(v, f"{side}_error"),
        confidence=getattr(v, f"{side}_confidence"),
    )


@router.get("/{evaluation_id}", response={200: EvaluationOut, **ERRORS}, summary="An evaluation")
def evaluation_get(request: HttpRequest, evaluation_id: int = id_path()) -> EvaluationOut:
    return _out(_evaluation(request, evaluation_id))


@router.get(
    "/{evaluation_id}/verdicts",
    response={200: ListOut[VerdictOut], **ERRORS},
    summary="Pairwise verdicts in both orders, with human votes",
)
def verdict_list(
    request: HttpRequest,
    page: Query[Page],
    evaluation_id: int = id_path(),
    inconsistent: bool = False,
) -> ListOut[VerdictOut]:
    ev = _evaluation(request, evaluation_id)
    qs = ev.verdicts.select_related("prompt").prefetch_related("votes__user")
    if inconsistent:
        qs = qs.filter(inconsistent=True)
    rows, more = paginate(qs, limit=page.limit, after=page.after)
    data = [
        VerdictOut(
            id=v.pk,
            item_id=v.prompt.item_id,
            category=v.prompt.category,
            prompt=v.prompt.text,
            a=v.a,
            b=v.b,
            outcome=v.outcome,
            inconsistent=v.inconsistent,
            calibrated=v.calibrated,
            prompt_version=v.prompt_version,
            a_first=_order(v, "ab"),
            b_first=_order(v, "ba"),
            human_votes={h.user.get_username(): h.vote for h in v.votes.all()},
        )
        for v in rows
    ]
    return ListOut[VerdictOut](data=data, has_more=more)


@router.post(
    "/verdicts/{verdict_id}/vote",
    response={200: VoteOut, **ERRORS},
    summary="Vote A, B or tie on a pair (editors)",
)
def verdict_vote(request: HttpRequest, body: VoteIn, verdict_id: int = id_path()) -> VoteOut:
    caller = caller_of(request)
    qs = PairVerdict.objects.filter(evaluation__run__cell__project__team=caller.team)
    verdict = get_for_user(qs, caller.user, verdict_id, need="edit")  # type: ignore[arg-type]
    vote = human_vote_cast(verdict=verdict, user=caller.user, vote=body.vote)
    return VoteOut(verdict=verdict.pk, user=caller.user.get_username(), vote=vote.vote)
