from django.apps import AppConfig


class ProjectsConfig(AppConfig):
    name = "webapp.projects"
    label = "projects"

    def ready(self) -> None:
        from webapp.projects import receivers  # noqa: F401 - connects the signal handlers
