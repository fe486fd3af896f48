"""/api/evaluations: an evaluation's results, its per-pair verdicts and human votes, and
"Make preference data" (its preview, and the dataset version it makes).

Registered with one line in webapp/api/native/app.py ROUTERS. Every object is fetched
through webapp.teams.access with the key's user, limited to the key's team.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from django.http import HttpRequest
from ninja import Query, Router, Schema, Status
from pydantic import Field

from webapp.api.native.common import (
    ERRORS,
    MAX_ID,
    ListOut,
    Page,
    caller_of,
    id_path,
    paginate,
)
from webapp.datasets.models import Dataset, DatasetVersion
from webapp.evaluations import selectors
from webapp.evaluations.models import Evaluation, PairVerdict
from webapp.evaluations.preference import (
    PreferenceSelection,
    default_dataset_name,
    offers_calibrated,
    preference_selection,
)
from webapp.evaluations.services import human_vote_cast, preference_data_create
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


class DroppedOut(Schema):
    code: str
    reason: str
    pairs: int


class PreferencePairOut(Schema):
    verdict: int
    item_id: str
    preferred: str
    non_preferred: str
    source: str
    votes: int
    prompt_version: str


class PreferencePreviewOut(Schema):
    object: str = "evaluation.preference_data"
    evaluation: int
    kept: int
    calibrated: bool = Field(description="Flipped verdicts kept by their calibrated outcome")
    offers_calibrated: bool = Field(description="The judge recorded calibrated outcomes")
    by_source: dict[str, int]
    reference_agreement: dict[str, dict[str, int]] = Field(
        description="Per source: kept pairs where exactly one answer matches a reference "
        "(decided), and how many prefer it (agrees)"
    )
    against_references: bool = Field(description="Most checked pairs prefer the wrong answer")
    dropped: list[DroppedOut]
    pairs: list[PreferencePairOut]
    has_more: bool
    default_name: str


CALIBRATED = (
    "Also keep a verdict that flipped with the order by the judge's position-calibrated "
    "outcome (local constrained judges); such pairs have source judge_calibrated"
)


class PreferenceDataIn(Schema):
    dataset: int | None = Field(
        None, ge=1, le=MAX_ID, description="A fine-tuning dataset of the team: its next version"
    )
    name: str | None = Field(
        None, max_length=100, description="Or a new dataset's name (default: the preview's)"
    )
    calibrated: bool = Field(False, description=CALIBRATED)


class DatasetVersionOut(Schema):
    id: int
    object: str = "dataset.version"
    dataset: int
    name: str
    version: int
    status: str
    origin: dict[str, Any]
    created_at: datetime


# The preview lists the first kept pairs; the dataset version holds them all.
PREVIEW_PAIRS = 100


def _evaluation(request: HttpRequest, evaluation_id: int, need: str = "view") -> Evaluation:
    caller = caller_of(request)
    qs = Evaluation.objects.filter(run__cell__project__team=caller.team).select_related("run__cell")
    return get_for_user(qs, caller.user, evaluation_id, need=need)  # type: ignore[arg-type]


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


def _preview(selection: PreferenceSelection) -> PreferencePreviewOut:
    pairs = [
        PreferencePairOut(
            verdict=p.verdict.pk,
            item_id=p.verdict.prompt.item_id,
            preferred=p.preferred,
            non_preferred=p.rejected,
            source=p.source,
            votes=p.votes,
            prompt_version=p.verdict.prompt_version,
        )
        for p in selection.kept[:PREVIEW_PAIRS]
    ]
    return PreferencePreviewOut(
        evaluation=selection.evaluation.pk,
        kept=len(selection.kept),
        calibrated=selection.calibrated,
        offers_calibrated=offers_calibrated(selection.evaluation),
        by_source=selection.by_source,
        reference_agreement=selection.reference_agreement,
        against_references=selection.against_references,
        dropped=[DroppedOut(code=c, reason=why, pairs=n) for c, why, n in selection.drop_rows],
        pairs=pairs,
        has_more=len(selection.kept) > PREVIEW_PAIRS,
        default_name=default_dataset_name(selection.evaluation),
    )


@router.get(
    "/{evaluation_id}/preference-data",
    response={200: PreferencePreviewOut, **ERRORS},
    summary="Preview: the pairs that would become preference data, and why others are left out",
)
def preference_data_preview(
    request: HttpRequest,
    evaluation_id: int = id_path(),
    calibrated: bool = Query(False, description=CALIBRATED),
) -> PreferencePreviewOut:
    ev = _evaluation(request, evaluation_id)
    return _preview(preference_selection(evaluation=ev, calibrated=calibrated))


@router.post(
    "/{evaluation_id}/preference-data",
    response={201: DatasetVersionOut, **ERRORS},
    summary="Make preference data: votes and consistent verdicts as a dataset version (editors)",
)
def preference_data_make(
    request: HttpRequest, body: PreferenceDataIn, evaluation_id: int = id_path()
) -> Status:
    caller = caller_of(request)
    ev = _evaluation(request, evaluation_id, need="edit")
    dataset = None
    if body.dataset is not None:  # the key's team only: any other id is a 404
        qs = Dataset.objects.filter(team=caller.team)
        dataset = get_for_user(qs, caller.user, body.dataset, need="edit")
    version = preference_data_create(
        evaluation=ev,
        created_by=caller.user,
        dataset=dataset,
        name=(body.name or "").strip() or default_dataset_name(ev),
        calibrated=body.calibrated,
    )
    return Status(201, _version_out(version))


def _version_out(version: DatasetVersion) -> DatasetVersionOut:
    return DatasetVersionOut(
        id=version.pk,
        dataset=version.dataset_id,
        name=version.dataset.name,
        version=version.version,
        status=version.status,
        origin=version.origin,
        created_at=version.created_at,
    )
