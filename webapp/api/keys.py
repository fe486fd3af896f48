"""API keys: made and revoked by a team's owners (the key pages, tests, set-up); both
APIs authenticate with them (webapp.api.auth)."""

from __future__ import annotations

import secrets

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.utils import timezone

from webapp.api.auth import KEY_START, PREFIX_LEN, hash_key
from webapp.api.models import ApiKey
from webapp.teams.models import Team


def api_key_create(
    *, team: Team, created_by: AbstractBaseUser, name: str, read_only: bool = False
) -> tuple[ApiKey, str]:
    """A new key; the full key is returned once and only its sha256 is stored."""
    name = name.strip()
    if not name:
        raise ValidationError({"name": "Give the key a name."})
    for _ in range(5):
        full = KEY_START + secrets.token_urlsafe(32)
        prefix = full[:PREFIX_LEN]
        if not ApiKey.objects.filter(prefix=prefix).exists():
            break
    key = ApiKey.objects.create(
        team=team,
        created_by=created_by,
        name=name[:100],
        prefix=prefix,
        hashed_secret=hash_key(full),
        read_only=read_only,
    )
    return key, full


def api_key_revoke(*, key: ApiKey) -> ApiKey:
    ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    key.refresh_from_db()
    return key
