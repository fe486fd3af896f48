from pathlib import Path

from django.apps import AppConfig
from django.conf import settings
from django.core import checks


def storage_check(**kwargs: object) -> list[checks.CheckMessage]:
    """At start (runserver, migrate, check, the workers): STORAGE_URL's bucket answers."""
    from webapp.core.storage import unreachable

    hint = "Check STORAGE_URL, the AWS_* credentials, and that the bucket exists."
    return [checks.Error(problem, hint=hint, id="tunebook.E001") for problem in unreachable()]


class CoreConfig(AppConfig):
    name = "webapp.core"
    label = "core"

    def ready(self) -> None:
        checks.register(storage_check, "storage")
        # SQLite (database and default broker) cannot create its parent directory, and
        # WhiteNoise warns about a missing STATIC_ROOT (collectstatic fills it).
        folders = (settings.DATA_DIR, settings.FILE_UPLOAD_TEMP_DIR, settings.STATIC_ROOT)
        for folder in folders:
            Path(folder).mkdir(parents=True, exist_ok=True)
