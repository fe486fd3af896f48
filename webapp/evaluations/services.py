"""Writes: judge backends, judge prompt versions, stored results, votes, sharing, and the
"pick the best checkpoint by judge" evaluation."""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from django.db.models import Max

from finetune_core.contracts.egress import EgressRefused
from finetune_core.contracts.prompts import PromptTemplateError, prompt_check
from webapp.datasets.models import Dataset, DatasetPurpose, DatasetVersion
from webapp.datasets.services import dataset_version_create
from webapp.evaluations.crypto import KeyUnreadable, encrypt, reencrypt
from webapp.evaluations.models import (
    EvalAnswer,
    EvalCandidate,
    EvalPrompt,
    Evaluation,
    Grade,
    HumanVote,
    JudgeBackend,
    JudgePrompt,
    PairVerdict,
    PromptKind,
    Vote,
)
from webapp.evaluations.preference import no_winner_message, preference_selection
from webapp.evaluations.selectors import egress_policy
from webapp.projects.models import Cell, CellRun, Project, RunStatus
from webapp.projects.run_outputs import outputs_of
from webapp.projects.services import cell_create, cell_run_create
from webapp.teams.models import Team


def judge_backend_create(
    *,
    team: Team,
    name: str,
    base_url: str,
    model: str,
    api_key: str,
    created_by: AbstractBaseUser,
    price_prompt_1k: float = 0.0,
    price_completion_1k: float = 0.0,
) -> JudgeBackend:
    if not name.strip() or not model.strip():
        raise ValidationError("A backend needs a name and a model.")
    try:  # early and clear; the worker checks again when it connects
        egress_policy().check_url(base_url)
    except EgressRefused as exc:
        raise ValidationError({"base_url": str(exc)}) from None
    return JudgeBackend.objects.create(
        team=team,
        name=name.strip()[:100],
        base_url=base_url.strip(),
        model=model.strip(),
        api_key_encrypted=encrypt(api_key.strip()),
        price_prompt_1k=price_prompt_1k or 0.0,
        price_completion_1k=price_completion_1k or 0.0,
        created_by=created_by,
    )


def judge_backend_delete(*, backend: JudgeBackend) -> None:
    backend.delete()


def judge_backend_keys_reencrypt() -> tuple[int, list[int]]:
    """Re-encrypt every stored judge API key under SECRET_KEY (after a rotation, before
    the old key leaves SECRET_KEY_FALLBACKS). Returns how many moved, and the backends
    whose key no configured key can read (their owners must enter it again)."""
    moved, unreadable = 0, []
    for pk in JudgeBackend.objects.exclude(api_key_encrypted="").values_list("pk", flat=True):
        with transaction.atomic():
            backend = JudgeBackend.objects.select_for_update().get(pk=pk)
            try:
                backend.api_key_encrypted = reencrypt(backend.api_key_encrypted)
            except KeyUnreadable:
                unreadable.append(pk)
                continue
            backend.save(update_fields=["api_key_encrypted"])
            moved += 1
    return moved, unreadable


@transaction.atomic
def judge_prompt_save(
    *, project: Project, kind: str, system: str, user: str, created_by: AbstractBaseUser
) -> JudgePrompt:
    """A new version; earlier versions stay, so old verdicts keep their prompt."""
    if kind not in PromptKind.values:
        raise ValidationError({"kind": f"Unknown prompt kind {kind!r}."})
    try:
        prompt_check(user, kind=kind)
    except PromptTemplateError as exc:
        raise ValidationError({"user": str(exc)}) from None
    Project.objects.select_for_update().filter(pk=project.pk).first()
    latest = project.judge_prompts.filter(kind=kind).aggregate(n=Max("version"))["n"] or 0
    return JudgePrompt.objects.create(
        project=project,
        kind=kind,
        version=latest + 1,
        system=system.strip(),
        user=user,
        created_by=created_by,
    )


def _judgment(j: dict[str, Any]) -> dict[str, Any]:
    return {
        "verdict": str(j.get("value") or ""),
        "status": j.get("status", "error"),
        "rationale": j.get("raw") or "",
        "error": j.get("error") or "",
        "confidence": j.get("confidence"),
    }


@transaction.atomic
def evaluation_store(*, run: CellRun, result: dict[str, Any], mode: str) -> Evaluation:
    """Save a finetune_core.evaluate result dict; replaces an earlier save of the same run."""
    Evaluation.objects.filter(run=run).delete()
    judge = result.get("judge") or {}
    summary = {
        k: result[k]
        for k in (
            "pairs",
            "pairs_calibrated",
            "ranking",
            "by_category",
            "consistency",
            "metrics",
            "grade_summary",
            "timing",
            "answers_generated",
            "proposal",
            "templates",
        )
        if k in result
    }
    summary["budget"] = judge.get("budget")
    ev = Evaluation.objects.create(
        run=run,
        eval_set=result["eval_set"]["name"][:200],
        mode=mode,
        judge=f"{judge.get('backend', '')} {judge.get('model', '')}".strip()[:300],
        # The versions that produced verdicts or grades (the judge holds all four kinds).
        prompt_versions=sorted(
            {j["prompt_version"] for j in (*result.get("judgments", []), *result.get("grades", []))}
        )
        or judge.get("prompt_versions", []),
        summary=summary,
        errors=result.get("errors", []),
    )
    EvalCandidate.objects.bulk_create(
        EvalCandidate(
            evaluation=ev,
            position=n,
            label=c["label"],
            kind=c["kind"],
            model=c["model"],
            adapter=c.get("adapter") or "",
            base_url=c.get("base_url") or "",
        )
        for n, c in enumerate(result["candidates"])
    )
    prompts = {}
    for n, item in enumerate(result["items"]):
        prompts[item["id"]] = EvalPrompt.objects.create(
            evaluation=ev,
            position=n,
            item_id=item["id"],
            category=item.get("category") or "",
            text=item["prompt"],
            references=item.get("references") or [],
        )
    EvalAnswer.objects.bulk_create(
        EvalAnswer(
            prompt=prompts[item_id],
            candidate=label,
            text=a.get("text") or "",
            status=a.get("status", "ok"),
            error=a.get("error") or "",
            completion_tokens=a.get("completion_tokens") or 0,
            cached=bool(a.get("cached")),
        )
        for label, by_item in result.get("answers", {}).items()
        for item_id, a in by_item.items()
    )
    verdicts = []
    for j in result.get("judgments", []):
        ab, ba = _judgment(j["ab"]), _judgment(j["ba"])
        verdicts.append(
            PairVerdict(
                evaluation=ev,
                prompt=prompts[j["item_id"]],
                a=j["a"],
                b=j["b"],
                outcome=j["outcome"],
                inconsistent=j["inconsistent"],
                prompt_version=j["prompt_version"],
                calibrated=j.get("calibrated") or "",
                **{f"ab_{k}": v for k, v in ab.items()},
                **{f"ba_{k}": v for k, v in ba.items()},
            )
        )
    PairVerdict.objects.bulk_create(verdicts)
    Grade.objects.bulk_create(
        Grade(
            evaluation=ev,
            prompt=prompts[g["item_id"]],
            candidate=g["candidate"],
            rating=g.get("rating"),
            status=g["status"],
            prompt_version=g["prompt_version"],
            rationale=(g.get("judgment") or {}).get("raw") or "",
        )
        for g in result.get("grades", [])
    )
    return ev


def human_vote_cast(*, verdict: PairVerdict, user: AbstractBaseUser, vote: str) -> HumanVote:
    """One vote per person and pair; voting again changes it."""
    if vote not in Vote.values:
        raise ValidationError("A vote is a, b or tie.")
    obj, _ = HumanVote.objects.update_or_create(verdict=verdict, user=user, defaults={"vote": vote})
    return obj


def evaluation_share(*, evaluation: Evaluation) -> str:
    if not evaluation.share_token:
        evaluation.share_token = secrets.token_urlsafe(32)
        evaluation.save(update_fields=["share_token"])
    return evaluation.share_token


def evaluation_unshare(*, evaluation: Evaluation) -> None:
    evaluation.share_token = None
    evaluation.save(update_fields=["share_token"])


@transaction.atomic
def best_checkpoint_evaluate(
    *, run: CellRun, by: AbstractBaseUser, judge: JudgeBackend | None = None
) -> CellRun:
    """An evaluation cell judging every checkpoint of `run` against its base model on the
    fine-tune's validation prompts; its result proposes the best one as final."""
    cell = run.cell
    if cell.kind != "finetune" or run.status != RunStatus.SUCCEEDED:
        raise ValidationError("Only a finished fine-tune run has checkpoints to judge.")
    if not outputs_of(run).checkpoints:
        raise ValidationError("This run saved no checkpoints.")
    dataset_cell = Cell.objects.filter(pk=cell.config.get("dataset_cell")).first()
    if dataset_cell is None:
        raise ValidationError("The fine-tune's dataset cell no longer exists.")
    quantization = run.inputs.get("quantization") or "nf4"
    eval_cell = cell_create(
        project=cell.project,
        kind="evaluation",
        title=f"Best checkpoint of {cell}"[:100],
        config={
            "source": "dataset_cell",
            "dataset_cell": dataset_cell.pk,
            "base_model": run.inputs["base_model"],
            "checkpoints_of": cell.pk,
            "judge_mode": "auto",
            "judge_model": run.inputs["base_model"],
            "judge": judge.pk if judge else None,
            "quantization": quantization if quantization in ("nf4", "none") else "nf4",
        },
        created_by=by,
    )
    return cell_run_create(cell=eval_cell, created_by=by)


def preference_data_create(
    *,
    evaluation: Evaluation,
    created_by: AbstractBaseUser,
    dataset: Dataset | None = None,
    name: str = "",
    calibrated: bool = False,
) -> DatasetVersion:
    """The evaluation's votes and consistent judge verdicts (`calibrated`: and flipped ones
    by their position-calibrated outcome) as a new version of `dataset`, or of a new
    fine-tuning dataset called `name` in the evaluation's team. The worker validates it as
    it does an upload; its origin links it to the evaluation (lineage)."""
    team = evaluation.run.cell.project.team
    if dataset is not None and dataset.team_id != team.pk:
        raise ValidationError({"dataset": "Pick a dataset of this evaluation's team."})
    with transaction.atomic():
        # A re-stored result replaces the evaluation's rows: read them under its lock.
        Evaluation.objects.select_for_update().filter(pk=evaluation.pk).first()
        selection = preference_selection(evaluation=evaluation, calibrated=calibrated)
        if not selection.kept:
            raise ValidationError(no_winner_message(evaluation, calibrated))
        upload = SimpleUploadedFile(
            f"preferences-evaluation-{evaluation.pk}.jsonl",
            selection.jsonl(),
            content_type="application/jsonl",
        )
        return dataset_version_create(
            team=team,
            name=dataset.name if dataset is not None else name,
            upload=upload,
            created_by=created_by,
            purpose=DatasetPurpose.TRAINING,  # the worker detects the preference format
            preview_model=selection.preview_model(),
            origin=selection.origin(),
        )
