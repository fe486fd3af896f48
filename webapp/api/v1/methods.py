"""OpenAI's fine-tuning `method`: `{"type": "supervised" | "dpo", "<type>": {"hyperparameters":
{...}}}`, read from a request and written back into the job object.

Each hyperparameter is a number in OpenAI's documented range, or "auto" (the preset's, or
the method's usual beta). The type becomes the fine-tune cell's `training_method`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from finetune_core.contracts.train import DEFAULT_BETA
from webapp.api.body import field
from webapp.api.errors import ApiError

SUPERVISED, DPO = "supervised", "dpo"
COMMON = ("n_epochs", "batch_size", "learning_rate_multiplier")
# The hyperparameters each method takes, as OpenAI documents them.
METHOD_HYPERPARAMETERS: dict[str, tuple[str, ...]] = {SUPERVISED: COMMON, DPO: ("beta", *COMMON)}


@dataclass(frozen=True)
class Range:
    """OpenAI's bounds on one hyperparameter (`low` excluded where `open_low`)."""

    integer: bool
    low: float
    high: float | None = None
    open_low: bool = False

    def problem(self, value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "a number or 'auto'"
        if self.integer and not (isinstance(value, int) or float(value).is_integer()):
            return "a whole number or 'auto'"
        above = value > self.low if self.open_low else value >= self.low
        if above and (self.high is None or value <= self.high):
            return None
        low = f"more than {self.low:g}" if self.open_low else f"at least {self.low:g}"
        return low + (f" and at most {self.high:g}" if self.high is not None else "")


RANGES = {
    "n_epochs": Range(integer=True, low=1, high=50),
    "batch_size": Range(integer=True, low=1, high=256),
    "learning_rate_multiplier": Range(integer=False, low=0, open_low=True),
    "beta": Range(integer=False, low=0, high=2, open_low=True),
}


def _error(message: str, param: str) -> ApiError:
    return ApiError(400, message, param=param, code="invalid_value")


def _checked(hyper: dict[str, Any], where: str, kind: str) -> dict[str, Any]:
    allowed = METHOD_HYPERPARAMETERS[kind]
    for name, value in hyper.items():
        if name not in allowed:
            names = ", ".join(allowed)
            raise _error(
                f"Unknown hyperparameter {name!r} for method {kind!r}; it takes {names}.",
                f"{where}.{name}",
            )
        problem = None if value == "auto" else RANGES[name].problem(value)
        if problem:
            raise _error(f"{name} must be {problem}, got {value!r}.", f"{where}.{name}")
    return {k: int(v) if RANGES[k].integer and v != "auto" else v for k, v in hyper.items()}


def request_method(data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The method type and its hyperparameters from a create request. Without `method`, the
    older top-level `hyperparameters` of a supervised job."""
    method = field(data, "method", dict)
    if method is None:
        hyper = field(data, "hyperparameters", dict, default={})
        return SUPERVISED, _checked(hyper, "hyperparameters", SUPERVISED)
    kind = field(method, "type", str, required=True, param="method.type")
    if kind not in METHOD_HYPERPARAMETERS:
        what = "Reinforcement fine-tuning is" if kind == "reinforcement" else f"{kind!r} is"
        raise _error(f"{what} not supported; use 'supervised' or 'dpo'.", "method.type")
    stray = sorted(set(method) - {"type", kind})
    if stray:
        raise _error(
            f"method.{stray[0]} does not go with method type {kind!r}.", f"method.{stray[0]}"
        )
    if data.get("hyperparameters"):
        raise _error(
            f"Give the hyperparameters in method.{kind}.hyperparameters, not beside method.",
            "hyperparameters",
        )
    where = f"method.{kind}"
    body = field(method, kind, dict, default={}, param=where)
    hyper = field(body, "hyperparameters", dict, default={}, param=f"{where}.hyperparameters")
    return kind, _checked(hyper, f"{where}.hyperparameters", kind)


def method_object(config: dict[str, Any], hyper: dict[str, Any]) -> dict[str, Any]:
    """The job's `method`, its hyperparameters resolved as the run uses them."""
    if config.get("training_method") != DPO:
        return {"type": SUPERVISED, SUPERVISED: {"hyperparameters": hyper}}
    beta = config.get("beta")
    beta = DEFAULT_BETA[DPO] if beta in (None, "") else beta
    return {"type": DPO, DPO: {"hyperparameters": {"beta": beta, **hyper}}}
