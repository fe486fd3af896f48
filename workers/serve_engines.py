"""The serving process's loaded models: one continuous-batching engine per base model
(and quantization), kept between requests; fine-tuned adapters join their base's engine,
so requests for different adapters of one base share each forward.

Adapters are named as the worker's model cache names them (`model_cache.adapter_key`):
a folder whose weights were replaced gets a new name, so a stale adapter is never served.
Least recently used idle engines are dropped past SERVE_MAX_BASES; an engine holding more
than MAX_ADAPTERS adapters is rebuilt once idle (the batched LoRA cannot unload one).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import TYPE_CHECKING

from django.conf import settings

from workers.model_cache import adapter_key

if TYPE_CHECKING:
    from finetune_core.infer.engine import Engine

log = logging.getLogger(__name__)
MAX_ADAPTERS = 16


class Engines:
    def __init__(self, max_bases: int | None = None, dtype: str | None = None) -> None:
        self.max_bases = max_bases or settings.SERVE_MAX_BASES
        self.dtype = dtype or settings.SERVE_DTYPE
        self.engines: OrderedDict[tuple[str, str], Engine] = OrderedDict()
        self.loads = 0

    def get(self, model: str, quantization: str) -> Engine:
        key = (model, quantization)
        engine = self.engines.get(key)
        if engine is not None and engine.idle and len(engine.lora.names) > MAX_ADAPTERS:
            del self.engines[key]
            engine = None
        if engine is None:
            self._make_room()
            engine = self.engines[key] = self._load(model, quantization)
        self.engines.move_to_end(key)
        return engine

    def adapter(self, engine: Engine, storage_key: str) -> str:
        """The engine's name for the adapter stored under `storage_key`, loaded if new."""
        from workers.workspace import local_copy

        folder = str(local_copy(storage_key))
        name = adapter_key(folder)
        if name not in engine.lora.names:
            engine.add_adapter(name, folder)
        return name

    def busy(self) -> list[Engine]:
        return [e for e in self.engines.values() if not e.idle]

    def _make_room(self) -> None:
        idle = [key for key, engine in self.engines.items() if engine.idle]
        while len(self.engines) >= self.max_bases and idle:
            del self.engines[idle.pop(0)]

    def _load(self, model: str, quantization: str) -> Engine:
        import torch

        from finetune_core.infer.engine import Engine

        self.loads += 1
        log.info("serve: loading %s (%s)", model, quantization)
        return Engine.load(
            model,
            quantization=quantization,  # type: ignore[arg-type]
            compute_dtype=torch.float32 if self.dtype == "fp32" else None,
            max_rows=settings.SERVE_MAX_BATCH,
        )
