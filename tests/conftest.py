"""Root conftest: points pytest-django at the web settings. Tests that do not ask for the
`db` fixture (tests/core) never touch a database."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
# Set up here, at import, because tests/web/conftest.py imports models; pytest-django's
# own setup runs before this file is read unless the ini option is set in pyproject.
django.setup()
