from django.apps import AppConfig


class TransfersConfig(AppConfig):
    name = "webapp.transfers"
    label = "transfers"

    def ready(self) -> None:
        # Registers the transfer cell kind in every process that sets Django up (web and
        # workers alike), before any form or runner looks it up.
        from webapp.transfers import kind  # noqa: F401
