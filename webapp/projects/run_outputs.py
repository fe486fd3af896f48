"""What a cell run's `outputs` holds, one typed record per runnable kind.

Writes (webapp.projects.run_lifecycle) check the dict against its kind's record: an
unknown key or a value of the wrong type raises, naming both. Reads get the record, so
the web side reads `outputs.adapter_dir`, not a string key. The stored keys are the
record's field names, unchanged from the untyped days. Folders (`output_dir`,
`adapter_dir`) are storage keys such as `runs/12/adapter`, the same on every host
(webapp.core.storage), never a host's path.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field, fields
from functools import cache
from typing import Any, Union, get_args, get_origin, get_type_hints

from webapp.projects.models import CellRun


class OutputsError(ValueError):
    """A runner wrote outputs its kind does not declare: a bug in the runner."""


@dataclass(frozen=True)
class RunOutputs:
    """What any run may hold: why it failed. Kinds without a runner of their own."""

    error: str | None = None


@dataclass(frozen=True)
class FinetuneOutputs(RunOutputs):
    output_dir: str | None = None
    dataset_version: int | None = None
    dataset_label: str | None = None  # lineage keeps the name if the dataset is deleted
    config: dict[str, Any] | None = None  # the TrainConfig the worker built
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    steps: int | None = None
    total_steps: int | None = None
    train_loss: float | None = None
    best_val_loss: float | None = None
    best_step: int | None = None
    history: list[dict[str, Any]] | None = None
    adapter_dir: str | None = None
    final: str | None = None  # "last", "best" or a checkpoint's step
    trained_tokens: int | None = None
    transferable: dict[str, Any] | None = None  # seeds + discriminator job's state


@dataclass(frozen=True)
class TransferOutputs(RunOutputs):
    output_dir: str | None = None
    phases: dict[str, Any] | None = None
    source: dict[str, Any] | None = None
    partial: dict[str, Any] | None = None  # what a stopped transfer had done
    report: dict[str, Any] | None = None
    adapter_dir: str | None = None


@dataclass(frozen=True)
class EvaluationOutputs(RunOutputs):
    evaluation_id: int | None = None
    n_prompts: int | None = None
    candidates: list[str] | None = None
    # The fine-tune or transfer runs compared: run id (a JSON key, so a string) -> their
    # candidates' labels. The lineage finds a run's evaluations by it.
    candidate_runs: dict[str, list[str]] | None = None
    proposal: dict[str, Any] | None = None
    errors: int | None = None


@dataclass(frozen=True)
class PlaygroundOutputs(RunOutputs):
    model: str | None = None
    messages: list[dict[str, Any]] | None = None
    answers: list[dict[str, Any]] | None = None


OUTPUTS: dict[str, type[RunOutputs]] = {
    "finetune": FinetuneOutputs,
    "transfer": TransferOutputs,
    "evaluation": EvaluationOutputs,
    "playground": PlaygroundOutputs,
}


def outputs_type(kind: str) -> type[RunOutputs]:
    return OUTPUTS.get(kind, RunOutputs)


@cache
def _hints(record: type[RunOutputs]) -> dict[str, Any]:
    return get_type_hints(record)


def _fits(hint: Any, value: Any) -> bool:
    """Whether value fits the annotation (containers checked shallowly)."""
    if hint is Any:
        return True
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return any(_fits(arg, value) for arg in get_args(hint))
    if hint is type(None):
        return value is None
    if isinstance(value, bool):  # a bool is an int to isinstance; never to a record
        return hint is bool
    if hint is float:
        return isinstance(value, int | float)
    return isinstance(value, origin or hint)


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", None) if get_origin(hint) is None else str(hint)


def outputs_check(kind: str, outputs: dict[str, Any]) -> dict[str, Any]:
    """`outputs` unchanged if it fits the kind's record; OutputsError naming the key if not."""
    if not isinstance(outputs, dict):
        raise OutputsError(f"{kind} run outputs must be a dict, got {type(outputs).__name__}.")
    hints = _hints(outputs_type(kind))
    for key, value in outputs.items():
        if key not in hints:
            known = ", ".join(sorted(hints))
            raise OutputsError(f"{kind} run outputs: unknown key {key!r} (known: {known}).")
        if not _fits(hints[key], value):
            raise OutputsError(
                f"{kind} run outputs: {key!r} must be {_name(hints[key]).replace('typing.', '')}, "
                f"got {type(value).__name__} {value!r:.80}."
            )
    return outputs


def outputs_of(run: CellRun, kind: str | None = None) -> RunOutputs:
    """The run's outputs as its kind's record. Keys a record no longer declares are left
    out, so a page still opens on a row an older worker wrote. `kind` saves loading the
    cell where the caller knows it (a FineTuningJob's run is always a fine-tune)."""
    record = outputs_type(kind or run.cell.kind)
    names = {f.name for f in fields(record)}
    return record(**{k: v for k, v in (run.outputs or {}).items() if k in names})
