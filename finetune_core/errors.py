"""Errors a user can act on. Each names its cause; the CLI prints them without a traceback."""

from __future__ import annotations


class FinetuneError(Exception):
    """Base class: the message is written for the user."""


class ModelNotFound(FinetuneError):
    pass


class DataError(FinetuneError):
    pass


class TrainingError(FinetuneError):
    pass


class OutOfMemory(TrainingError):
    pass


class NaNLoss(TrainingError):
    pass


class EmptyDataset(TrainingError):
    pass


class Cancelled(TrainingError):
    pass
