from django.apps import AppConfig


class HomeConfig(AppConfig):
    """The top of the web layers: the pages and tools that bring the apps together (the
    dashboard, the template library every page loads, the demo set-up)."""

    name = "webapp.home"
    label = "home"
