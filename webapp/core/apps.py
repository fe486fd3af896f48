from pathlib import Path

from django.apps import AppConfig
from django.conf import settings


class CoreConfig(AppConfig):
    name = "webapp.core"
    label = "core"

    def ready(self) -> None:
        # SQLite (database and default broker) cannot create its parent directory.
        for folder in (settings.DATA_DIR, Path(settings.FILE_UPLOAD_TEMP_DIR)):
            Path(folder).mkdir(parents=True, exist_ok=True)
