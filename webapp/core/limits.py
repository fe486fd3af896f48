"""The error every per-team limit raises (settings TEAM_*; each limit's check lives with
what it limits: storage in webapp.datasets, jobs in webapp.jobs, steps in webapp.projects)."""

from __future__ import annotations

from django.core.exceptions import ValidationError


class LimitExceeded(ValidationError):
    """A team is over an operator's limit. A ValidationError, so web forms and messages show
    it as they show any refusal; the APIs answer `status` (413 storage, 429 jobs) and
    `api_code` in OpenAI's error shape."""

    def __init__(self, message: str, *, status: int, api_code: str, field: str = "") -> None:
        super().__init__({field: message} if field else message)
        self.status, self.api_code, self.field = status, api_code, field


class StorageFailed(LimitExceeded):
    """Not a team's limit but the server's own: its disk is full, or its object store did not
    take the file. A LimitExceeded so that pages and both APIs show it as they show a limit
    (its message, a 5xx `status`, `api_code`), never as a traceback."""
