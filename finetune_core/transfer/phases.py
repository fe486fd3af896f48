"""The pieces of a transfer's run that hold state between phases: the timer that adds
each phase's seconds to the report, and the models, loaded once and only when needed."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from finetune_core.errors import FinetuneError

if TYPE_CHECKING:
    from finetune_core.transfer.config import TransferConfig


@contextmanager
def timed_phase(
    times: dict[str, float],
    name: str,
    log: Callable[[str], None] | None = None,
    on_end: Callable[[dict[str, float]], None] | None = None,
) -> Iterator[None]:
    """Times a phase; a resumed phase adds to the time its earlier attempt spent."""
    started = time.monotonic()
    if log:
        log(f"{name} ...")
    try:
        yield
    finally:
        times[name] = round(times.get(name, 0.0) + time.monotonic() - started, 2)
        gc.collect()  # each phase drops its models before the next loads
        if on_end:
            on_end(times)
        if log:
            log(f"{name}: {times[name]:.1f}s")


class Models:
    """The models a transfer uses, each loaded once and only when a phase needs it (a
    resumed attempt may need none), and dropped when its phases are over."""

    def __init__(self, cfg: TransferConfig, source: str, source_adapter: str) -> None:
        self.cfg, self.source, self.source_adapter = cfg, source, source_adapter
        self._target: Any = None
        self._teacher: Any = None

    def target(self) -> Any:
        from finetune_core.infer import load_chat_model

        if self._target is None:
            try:
                self._target = load_chat_model(self.cfg.target, quantization=self.cfg.quantization)
            except FinetuneError:
                raise
            except Exception as exc:  # not a causal LM: it cannot write inputs
                raise FinetuneError(
                    f"the target model {self.cfg.target} cannot generate: it does not load as "
                    f"a text generation model ({type(exc).__name__}: {str(exc)[:300]})"
                ) from exc
        return self._target

    def drop_target(self) -> None:
        self._target = None
        gc.collect()

    def teacher(self) -> Any:
        from finetune_core.infer import load_chat_model

        if self._teacher is None:
            self._teacher = load_chat_model(
                self.source, adapter=self.source_adapter, quantization=self.cfg.quantization
            )
        return self._teacher

    def drop_teacher(self) -> None:
        self._teacher = None
        gc.collect()

    def student(self, adapter: str) -> Any:
        from finetune_core.infer import load_chat_model

        return load_chat_model(self.cfg.target, adapter=adapter, quantization=self.cfg.quantization)
