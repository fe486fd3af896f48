from django.apps import AppConfig


class EvaluationsConfig(AppConfig):
    name = "webapp.evaluations"
    label = "evaluations"

    def ready(self) -> None:
        # Registers the `evaluation` cell kind. ready() runs in web and worker processes
        # alike (Celery's Django fix-up calls django.setup()), so both see the kind.
        from webapp.evaluations import kind  # noqa: F401
