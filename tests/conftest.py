"""Root conftest. pytest-django reads DJANGO_SETTINGS_MODULE from pyproject; tests that do
not ask for the `db` fixture (tests/core) never touch a database."""

import os
from pathlib import Path

# Models and tokenizers build into the repo's cache, never a user's home.
os.environ.setdefault("FINETUNE_CORE_CACHE", str(Path(__file__).resolve().parents[1] / ".cache"))

# Processes a test starts (workers, servers) often get their own DATA_DIR, where each would
# generate its own SECRET_KEY; like production hosts, they are given this process's key.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
from django.conf import settings  # noqa: E402 - after the environment it reads

os.environ.setdefault("SECRET_KEY", settings.SECRET_KEY)
