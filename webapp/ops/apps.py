from django.apps import AppConfig


class OpsConfig(AppConfig):
    name = "webapp.ops"
    label = "ops"

    def ready(self) -> None:
        from webapp.jobs import fleet
        from webapp.ops import base_models_admin  # noqa: F401 - registers its ModelAdmin
        from webapp.ops.workers import queue_capacities

        fleet.set_source(queue_capacities)  # routing reads the workers' records through it
