from django.apps import AppConfig


class OpsConfig(AppConfig):
    name = "webapp.ops"
    label = "ops"

    def ready(self) -> None:
        from webapp.ops import base_models_admin  # noqa: F401 - registers its ModelAdmin
