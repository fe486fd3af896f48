"""Reads for datasets."""

from __future__ import annotations

from django.conf import settings
from django.db.models import Count, Max, QuerySet, Sum

from webapp.datasets.models import Dataset, DatasetVersion
from webapp.teams.models import Team


def dataset_list_for_team(*, team: Team) -> QuerySet[Dataset]:
    return team.datasets.annotate(n_versions=Count("versions"), latest=Max("versions__version"))


def datasets_for_purpose(*, team_id: int, purpose: str) -> QuerySet[Dataset]:
    """The team's datasets a cell may pick: fine-tuning data or evaluation prompts."""
    return Dataset.objects.filter(team_id=team_id, purpose=purpose)


def dataset_versions(*, dataset: Dataset) -> QuerySet[DatasetVersion]:
    return dataset.versions.select_related("created_by").order_by("-version")


def dataset_version_latest(*, dataset: Dataset) -> DatasetVersion | None:
    return dataset.versions.order_by("-version").first()


def team_storage_used(*, team: Team) -> int:
    """Bytes of every dataset version file the team keeps."""
    used = DatasetVersion.objects.filter(dataset__team=team).aggregate(n=Sum("size"))["n"]
    return int(used or 0)


def team_storage_left(*, team: Team) -> int | None:
    """Bytes the team may still upload under TEAM_STORAGE_BYTES; None: no limit."""
    limit = settings.TEAM_STORAGE_BYTES
    return max(0, limit - team_storage_used(team=team)) if limit else None
