"""Errors a user can act on. Each names its cause; the CLI prints them without a traceback."""

from __future__ import annotations


class FinetuneError(Exception):
    """Base class: the message is written for the user.

    `code` is a stable name for the kind of problem (the web app's reports key on it, never
    on the wording), `line` the file line (or example number) it is about, and `detail`
    the message without its "line N: " prefix.
    """

    def __init__(self, message: str, *, code: str | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.line = line
        prefix = f"line {line}: "
        self.detail = message.removeprefix(prefix) if line is not None else message


class ModelNotFound(FinetuneError):
    pass


class ModelUnreadable(ModelNotFound):
    """A model's files are there but cannot be read as a model (registering, loading)."""


class DataError(FinetuneError):
    pass


class TrainingError(FinetuneError):
    pass


class OutOfMemory(TrainingError):
    pass


class NaNLoss(TrainingError):
    pass


class DiskFull(TrainingError):
    """The disk (or the quota) holding the run's folder ran out while it wrote there."""


class EmptyDataset(TrainingError):
    pass


class Cancelled(TrainingError):
    pass
