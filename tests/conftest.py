"""Root conftest. pytest-django reads DJANGO_SETTINGS_MODULE from pyproject; tests that do
not ask for the `db` fixture (tests/core) never touch a database."""

import os
from pathlib import Path

# Models and tokenizers build into the repo's cache, never a user's home.
os.environ.setdefault("FINETUNE_CORE_CACHE", str(Path(__file__).resolve().parents[1] / ".cache"))
