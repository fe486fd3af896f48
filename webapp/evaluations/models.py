"""Evaluation results per cell run, the team's judge backends, per-project judge prompts
(versioned) and human votes."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from webapp.projects.models import CellRun, Project
from webapp.teams.models import Team


class BackendKind(models.TextChoices):
    OPENAI = "openai", "OpenAI-compatible endpoint"


# The judge's rationale length where an evaluation cell does not say (0: verdict first).
JUDGE_RATIONALE_TOKENS = 256


class JudgeBackend(models.Model):
    """An OpenAI-compatible chat endpoint of a team: a judge, or a candidate to evaluate.

    The local model run by the workers is the default judge and needs no row.
    """

    TEAM_PATH = "team"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="judge_backends")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=10, choices=BackendKind.choices, default=BackendKind.OPENAI)
    base_url = models.URLField(max_length=500)
    model = models.CharField(max_length=200)
    # Fernet token (see crypto.py); the plain key is never stored nor shown again.
    api_key_encrypted = models.TextField(blank=True)
    price_prompt_1k = models.FloatField(default=0.0)
    price_completion_1k = models.FloatField(default=0.0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["team_id", "name", "id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.model})"


class PromptKind(models.TextChoices):
    PAIRWISE = "pairwise", "Pairwise"
    PAIRWISE_REFERENCE = "pairwise-reference", "Pairwise, reference-guided"
    SINGLE = "single", "Single-answer grading"
    SINGLE_REFERENCE = "single-reference", "Single-answer grading, reference-guided"


class JudgePrompt(models.Model):
    """One version of a project's judge prompt of one kind; an edit adds a version."""

    TEAM_PATH = "project__team"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="judge_prompts")
    kind = models.CharField(max_length=20, choices=PromptKind.choices)
    version = models.PositiveIntegerField()
    system = models.TextField()
    user = models.TextField()
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project_id", "kind", "-version"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "kind", "version"], name="judgeprompt_unique_version"
            )
        ]

    @property
    def label(self) -> str:
        return f"{self.kind}-v{self.version}"

    def __str__(self) -> str:
        return self.label


class Evaluation(models.Model):
    """The stored result of one evaluation cell run."""

    TEAM_PATH = "run__cell__project__team"

    run = models.OneToOneField(CellRun, on_delete=models.CASCADE, related_name="evaluation")
    eval_set = models.CharField(max_length=200)
    mode = models.CharField(max_length=20)
    judge = models.CharField(max_length=300, blank=True)
    # Versions of the judge prompts used (each verdict records its own too).
    prompt_versions = models.JSONField(default=list, blank=True)
    # Aggregates computed by the worker: pairs, ranking, by_category, metrics, grades, budget.
    summary = models.JSONField(default=dict, blank=True)
    errors = models.JSONField(default=list, blank=True)
    # Set when someone shares the comparison; team members open it read-only by this token.
    share_token = models.CharField(max_length=43, unique=True, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"Evaluation of {self.run}"


class EvalCandidate(models.Model):
    evaluation = models.ForeignKey(Evaluation, on_delete=models.CASCADE, related_name="candidates")
    position = models.PositiveIntegerField()
    label = models.CharField(max_length=200)
    kind = models.CharField(max_length=10)  # base | adapter | openai
    model = models.CharField(max_length=200)
    adapter = models.CharField(max_length=500, blank=True)
    base_url = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["evaluation_id", "position"]

    def __str__(self) -> str:
        return self.label


class EvalPrompt(models.Model):
    evaluation = models.ForeignKey(Evaluation, on_delete=models.CASCADE, related_name="prompts")
    position = models.PositiveIntegerField()
    item_id = models.CharField(max_length=64)
    category = models.CharField(max_length=200, blank=True)
    text = models.TextField()
    references = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["evaluation_id", "position"]

    def __str__(self) -> str:
        return self.text[:60]


class EvalAnswer(models.Model):
    prompt = models.ForeignKey(EvalPrompt, on_delete=models.CASCADE, related_name="answers")
    candidate = models.CharField(max_length=200)  # EvalCandidate.label
    text = models.TextField(blank=True)
    status = models.CharField(max_length=20, default="ok")
    error = models.TextField(blank=True)
    completion_tokens = models.PositiveIntegerField(default=0)
    cached = models.BooleanField(default=False)

    class Meta:
        ordering = ["prompt_id", "id"]


class PairVerdict(models.Model):
    """One pair on one prompt, judged in both orders (A first, then B first)."""

    TEAM_PATH = "evaluation__run__cell__project__team"

    evaluation = models.ForeignKey(Evaluation, on_delete=models.CASCADE, related_name="verdicts")
    prompt = models.ForeignKey(EvalPrompt, on_delete=models.CASCADE, related_name="verdicts")
    a = models.CharField(max_length=200)
    b = models.CharField(max_length=200)
    outcome = models.CharField(max_length=20)  # a | b | tie | error | skipped_*
    inconsistent = models.BooleanField(default=False)
    prompt_version = models.CharField(max_length=100)
    ab_verdict = models.CharField(max_length=10, blank=True)  # A | B | tie, as the judge said
    ab_status = models.CharField(max_length=20)
    ab_rationale = models.TextField(blank=True)
    ab_error = models.TextField(blank=True)
    ba_verdict = models.CharField(max_length=10, blank=True)
    ba_status = models.CharField(max_length=20)
    ba_rationale = models.TextField(blank=True)
    ba_error = models.TextField(blank=True)
    # Constrained local judges: the chosen label's probability in each order, and the
    # outcome from both orders' probabilities averaged (position-calibrated), kept beside
    # the strict swap rule's outcome.
    ab_confidence = models.FloatField(null=True, blank=True)
    ba_confidence = models.FloatField(null=True, blank=True)
    calibrated = models.CharField(max_length=10, blank=True)

    class Meta:
        ordering = ["prompt__position", "id"]

    @property
    def decided(self) -> bool:
        return self.outcome in ("a", "b", "tie")


class Grade(models.Model):
    """Single-answer grading: a 1-10 rating of one answer."""

    evaluation = models.ForeignKey(Evaluation, on_delete=models.CASCADE, related_name="grades")
    prompt = models.ForeignKey(EvalPrompt, on_delete=models.CASCADE, related_name="grades")
    candidate = models.CharField(max_length=200)
    rating = models.FloatField(null=True, blank=True)
    status = models.CharField(max_length=20)
    prompt_version = models.CharField(max_length=100)
    rationale = models.TextField(blank=True)

    class Meta:
        ordering = ["prompt__position", "id"]


class Vote(models.TextChoices):
    A = "a", "A is better"
    B = "b", "B is better"
    TIE = "tie", "Tie"


class HumanVote(models.Model):
    TEAM_PATH = "verdict__evaluation__run__cell__project__team"

    verdict = models.ForeignKey(PairVerdict, on_delete=models.CASCADE, related_name="votes")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    vote = models.CharField(max_length=3, choices=Vote.choices)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["verdict", "user"], name="humanvote_one_per_user")
        ]
