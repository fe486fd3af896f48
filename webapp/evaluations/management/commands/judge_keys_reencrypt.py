"""`manage.py judge_keys_reencrypt`: move stored judge API keys to the current SECRET_KEY."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from webapp.evaluations.services import judge_backend_keys_reencrypt


class Command(BaseCommand):
    help = (
        "Re-encrypt every judge backend's API key under SECRET_KEY, so the old key can be "
        "removed from SECRET_KEY_FALLBACKS."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        moved, unreadable = judge_backend_keys_reencrypt()
        for pk in unreadable:
            self.stderr.write(f"judge backend {pk}: key unreadable under every configured key")
        self.stdout.write(f"{moved} judge API key(s) re-encrypted under SECRET_KEY")
