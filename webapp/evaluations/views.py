"""Evaluation views: the comparison page, votes, diff, export, sharing, "make preference
data", judge backends and prompts, and "pick the best checkpoint by judge". Parse, call a
service, render."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from webapp.core.forms import error_text
from webapp.evaluations import exports, selectors, services
from webapp.evaluations.charts import ci_chart
from webapp.evaluations.forms import JudgeBackendForm, JudgePromptForm, PreferenceDataForm
from webapp.evaluations.models import Evaluation, JudgeBackend, PairVerdict, PromptKind
from webapp.evaluations.preference import (
    default_dataset_name,
    no_winner_message,
    offers_calibrated,
    preference_selection,
)
from webapp.projects.models import CellRun, Project
from webapp.teams.access import get_for_user, role_of
from webapp.teams.models import ROLE_CAN, Team

EVALS = Evaluation.objects.select_related("run__cell__project__team")


def _where(ev: Evaluation) -> dict[str, Any]:
    """The evaluation and what holds it, for a page's heading and crumbs."""
    run = ev.run
    return {"ev": ev, "run": run, "cell": run.cell, "project": run.cell.project}


def comparison_context(
    request: HttpRequest, ev: Evaluation, *, read_only: bool = False
) -> dict[str, Any]:
    team = ev.run.cell.project.team
    filters = selectors.Filters.from_query(request.GET)
    board = selectors.leaderboard(evaluation=ev)
    return {
        **_where(ev),
        "team": team,
        "candidates": list(ev.candidates.all()),
        "board": board,
        "chart": ci_chart(board),
        "pairs": ev.summary.get("pairs", []),
        # Categories without a judged pair would show as empty headings.
        "by_category": {k: v for k, v in ev.summary.get("by_category", {}).items() if v},
        "metrics": ev.summary.get("metrics", {}),
        "proposal": ev.summary.get("proposal"),
        "rows": selectors.prompt_rows(evaluation=ev, filters=filters, user=request.user),
        "filters": filters,
        "agreement": selectors.agreement(evaluation=ev),
        "consistency": selectors.consistency(evaluation=ev),
        "can_vote": not read_only and role_of(request.user, team) in ROLE_CAN["edit"],
        "read_only": read_only,
        "max_rows": selectors.MAX_ROWS,
    }


@login_required
@require_GET
def evaluation_detail(request: HttpRequest, evaluation_id: int) -> HttpResponse:
    ev = get_for_user(EVALS, request.user, evaluation_id)
    return render(request, "evaluations/comparison.html", comparison_context(request, ev))


@login_required
@require_GET
def evaluation_shared(request: HttpRequest, token: str) -> HttpResponse:
    """A shared link: read-only for every member of the team, 404 for anyone else."""
    found = EVALS.filter(share_token=token).values_list("pk", flat=True).first()
    if found is None:
        raise Http404("No such shared comparison")
    ev = get_for_user(EVALS, request.user, found)
    context = comparison_context(request, ev, read_only=True)
    return render(request, "evaluations/comparison.html", context)


@login_required
@require_POST
def evaluation_share(request: HttpRequest, evaluation_id: int) -> HttpResponse:
    ev = get_for_user(EVALS, request.user, evaluation_id, need="edit")
    if request.POST.get("action") == "unshare":
        services.evaluation_unshare(evaluation=ev)
        messages.success(request, "The shared link no longer works.")
    else:
        token = services.evaluation_share(evaluation=ev)
        link = request.build_absolute_uri(reverse("evaluation_shared", args=[token]))
        messages.success(request, f"Read-only link for team members: {link}")
    return redirect("evaluation_detail", evaluation_id=ev.pk)


@login_required
@require_http_methods(["GET", "POST"])
def preference_data(request: HttpRequest, evaluation_id: int) -> HttpResponse:
    """The preview of what "Make preference data" keeps and drops; a POST makes the version."""
    need = "edit" if request.method == "POST" else "view"
    ev = get_for_user(EVALS, request.user, evaluation_id, need=need)
    team = ev.run.cell.project.team
    initial = {"name": default_dataset_name(ev)}
    form = PreferenceDataForm(request.POST or None, team=team, initial=initial)
    # The opt-in: the preview's toggle (GET), carried by the form that saves what it showed.
    calibrated = (request.POST if request.method == "POST" else request.GET).get(
        "calibrated"
    ) == "1"
    if request.method == "POST" and form.is_valid():
        try:
            version = services.preference_data_create(
                evaluation=ev,
                created_by=request.user,
                dataset=form.cleaned_data["dataset"],
                name=form.cleaned_data["name"],
                calibrated=calibrated,
            )
        except ValidationError as exc:
            form.add_error(None, error_text(exc))
        else:
            messages.success(request, f"Made {version}; it is being validated.")
            return redirect("dataset_version_detail", version_id=version.pk)
    selection = preference_selection(evaluation=ev, calibrated=calibrated)
    context = {
        **_where(ev),
        "team": team,
        "selection": selection,
        "offers_calibrated": offers_calibrated(ev),
        "no_winner": "" if selection.kept else no_winner_message(ev, calibrated),
        "form": form,
        "can_edit": role_of(request.user, team) in ROLE_CAN["edit"],
    }
    status = 400 if form.errors else 200
    return render(request, "evaluations/preference_data.html", context, status=status)


@login_required
@require_POST
def verdict_vote(request: HttpRequest, verdict_id: int) -> HttpResponse:
    verdict = get_for_user(
        PairVerdict.objects.select_related("evaluation"), request.user, verdict_id, need="edit"
    )
    try:
        services.human_vote_cast(
            verdict=verdict, user=request.user, vote=request.POST.get("vote", "")
        )
    except ValidationError as exc:
        return HttpResponse(error_text(exc), status=400)
    if request.htmx:
        verdict.my_vote = request.POST["vote"]
        votes = list(verdict.votes.select_related("user"))
        verdict.disagrees = verdict.decided and any(v.vote != verdict.outcome for v in votes)
        context = {"v": verdict, "can_vote": True, "votes": votes}
        return render(request, "evaluations/_votes.html", context)
    return redirect(reverse("evaluation_detail", args=[verdict.evaluation_id]) + f"#v-{verdict.pk}")


@login_required
@require_GET
def verdict_diff(request: HttpRequest, verdict_id: int) -> HttpResponse:
    verdict = get_for_user(PairVerdict.objects.select_related("prompt"), request.user, verdict_id)
    answers = {a.candidate: a.text for a in verdict.prompt.answers.all()}
    diff = selectors.diff_html(answers.get(verdict.a, ""), answers.get(verdict.b, ""))
    return render(request, "evaluations/_diff.html", {"v": verdict, "diff": diff})


@login_required
@require_GET
def evaluation_export(request: HttpRequest, evaluation_id: int, fmt: str) -> HttpResponse:
    ev = get_for_user(EVALS, request.user, evaluation_id)
    if fmt == "json":
        doc = exports.export_json(evaluation=ev)
        response: HttpResponse = JsonResponse(doc, json_dumps_params={"indent": 2})
    elif fmt == "csv":
        body = exports.export_csv(evaluation=ev)
        response = HttpResponse(body, content_type="text/csv; charset=utf-8")
    else:
        raise Http404("Unknown format")
    name = f"evaluation-{ev.pk}"
    response["Content-Disposition"] = f'attachment; filename="{name}.{fmt}"'
    return response


@login_required
def backends(request: HttpRequest, team_id: int) -> HttpResponse:
    """The team's judge backends; keys are write-only (never shown again)."""
    need = "edit" if request.method == "POST" else "view"
    team = get_for_user(Team, request.user, team_id, need=need)
    form = JudgeBackendForm(request.POST or None)
    if request.method == "POST":
        if request.POST.get("delete"):
            backend = get_for_user(JudgeBackend, request.user, request.POST["delete"], need="edit")
            if backend.team_id != team.pk:
                raise Http404("No such backend")
            services.judge_backend_delete(backend=backend)
            messages.success(request, f"Deleted {backend.name}.")
            return redirect("evaluation_backends", team_id=team.pk)
        if form.is_valid():
            try:
                services.judge_backend_create(
                    team=team, created_by=request.user, **form.cleaned_data
                )
            except ValidationError as exc:
                form.add_error(None, exc)  # next to its field (the base URL's refusal)
            else:
                messages.success(request, "Saved. The API key is stored encrypted.")
                return redirect("evaluation_backends", team_id=team.pk)
    context = {
        "team": team,
        "backends": selectors.team_backends(team=team),
        "form": form,
        "can_edit": role_of(request.user, team) in ROLE_CAN["edit"],
    }
    return render(request, "evaluations/backends.html", context, status=400 if form.errors else 200)


@login_required
def prompts(request: HttpRequest, project_id: int) -> HttpResponse:
    need = "edit" if request.method == "POST" else "view"
    project = get_for_user(
        Project.objects.select_related("team"), request.user, project_id, need=need
    )
    kind = request.GET.get("kind", "pairwise")
    start = selectors.prompt_start(project=project, kind=kind) or {}
    form = JudgePromptForm(request.POST or None, initial={"kind": kind, **start})
    if request.method == "POST" and form.is_valid():
        try:
            p = services.judge_prompt_save(
                project=project, created_by=request.user, **form.cleaned_data
            )
        except ValidationError as exc:
            form.add_error(None, error_text(exc))
        else:
            messages.success(request, f"Saved {p.label}; the next evaluation runs use it.")
            return redirect("evaluation_prompts", project_id=project.pk)
    context = {
        "project": project,
        "team": project.team,
        "versions": selectors.project_prompts(project=project),
        "kinds": PromptKind.choices,
        "kind": kind,
        "form": form,
        "can_edit": role_of(request.user, project.team) in ROLE_CAN["edit"],
    }
    return render(request, "evaluations/prompts.html", context, status=400 if form.errors else 200)


@login_required
@require_POST
def best_checkpoint(request: HttpRequest, run_id: int) -> HttpResponse:
    run = get_for_user(
        CellRun.objects.select_related("cell__project__team"), request.user, run_id, need="edit"
    )
    judge = None
    if request.POST.get("judge"):  # optional: a team backend instead of the local judge
        judge = get_for_user(JudgeBackend, request.user, request.POST["judge"])
        if judge.team_id != run.cell.project.team_id:
            raise Http404("No such backend")
    try:
        eval_run = services.best_checkpoint_evaluate(run=run, by=request.user, judge=judge)
    except ValidationError as exc:
        messages.error(request, error_text(exc))
        return redirect("run_detail", run_id=run.pk)
    messages.success(request, "Judging every checkpoint against the base model.")
    return redirect("run_detail", run_id=eval_run.pk)
