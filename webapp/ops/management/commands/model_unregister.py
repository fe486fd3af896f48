"""manage.py model_unregister NAME: refused while a job uses the model."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from webapp.core.models import BaseModel
from webapp.ops.base_models import base_model_unregister


class Command(BaseCommand):
    help = "Unregister a base model (refused while a job uses it)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("name")

    def handle(self, *args: Any, **opts: Any) -> None:
        model = BaseModel.objects.filter(name=opts["name"]).first()
        if model is None:
            raise CommandError(f"No model named {opts['name']!r} is registered.")
        try:
            base_model_unregister(model=model)
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        self.stdout.write(f"unregistered {opts['name']}")
