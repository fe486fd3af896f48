"""Writes for user accounts."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from webapp.teams.services import team_create


@transaction.atomic
def user_signup(*, username: str, password: str, email: str = "") -> AbstractBaseUser:
    """Create the user and their personal team together, or neither."""
    user = get_user_model().objects.create_user(username=username, email=email, password=password)
    team_create(name=f"{username}'s team", owner=user, personal=True)
    return user
