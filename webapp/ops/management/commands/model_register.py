"""manage.py model_register SOURCE: offer a base model to teams (a Hugging Face folder, a
.gguf file, or a hub id in this host's cache). Run it where the model's files are."""

from __future__ import annotations

from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from webapp.core.catalog import context_text, size_text
from webapp.ops.base_models import base_model_register


class Command(BaseCommand):
    help = "Register a base model: a Hugging Face folder, a .gguf file, or an owner/name hub id."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("source", help="model folder, .gguf file, or owner/name hub id")
        parser.add_argument("--name", default="", help="what jobs and /v1 call it (a slug)")
        parser.add_argument("--label", default="", help="what the forms show")
        parser.add_argument("--licence", default="", help="the licence's text or URL")
        parser.add_argument("--hub-id", default="", help="the public id exports name as base")
        parser.add_argument(
            "--chat-template-file",
            default="",
            help="a Jinja chat template to use instead of the tokenizer's",
        )
        parser.add_argument(
            "--hidden", action="store_true", help="register, but do not offer it yet"
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        template = opts["chat_template_file"]
        try:
            model = base_model_register(
                source=opts["source"],
                name=opts["name"],
                label=opts["label"],
                licence=opts["licence"],
                hub_id=opts["hub_id"],
                chat_template=Path(template).read_text() if template else "",
                offered=not opts["hidden"],
            )
        except (ValidationError, OSError) as exc:
            raise CommandError(" ".join(getattr(exc, "messages", [str(exc)]))) from None
        self.stdout.write(
            f"registered {model.name}: {model.model_type}, {size_text(model.parameters)}, "
            f"{context_text(model.context_length)}"
            + ("" if model.offered else " (not offered yet)")
        )
