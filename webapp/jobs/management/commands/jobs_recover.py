"""`manage.py jobs_recover`: re-queue or fail jobs whose worker stopped sending heartbeats."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from webapp.jobs.recovery import jobs_recover


class Command(BaseCommand):
    help = "Re-queue (resume) or fail running jobs whose worker stopped sending heartbeats."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--stale-after", type=int, default=None, help="seconds; default from settings"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        outcomes = jobs_recover(stale_after_s=options["stale_after"])
        for outcome in outcomes:
            self.stdout.write(f"job {outcome.job_id}: {outcome.action}")
        self.stdout.write(f"{len(outcomes)} stale job(s) handled")
