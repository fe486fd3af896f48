"""Loaded models, kept per worker process: base models stay in memory, adapters are swapped.

Each base model is loaded once; fine-tuned adapters are attached to it by PEFT under
their own names and switched with set_adapter, so answering with another adapter costs
a small adapter load, not a base-model load. Least recently used entries are evicted.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from finetune_core.contracts.layout import ADAPTER_WEIGHTS

MAX_BASES = 2
MAX_ADAPTERS = 4


def adapter_key(folder: str) -> str:
    """A module-safe name that changes when the folder's weights are replaced."""
    weights = Path(folder) / ADAPTER_WEIGHTS
    stamp = f"{Path(folder).resolve()}:{weights.stat().st_mtime_ns}"
    return "a" + hashlib.sha1(stamp.encode()).hexdigest()[:16]


class _Entry:
    def __init__(self, chat: Any) -> None:
        self.chat = chat
        self.adapters: OrderedDict[str, None] = OrderedDict()


class ModelCache:
    def __init__(self, max_bases: int = MAX_BASES, max_adapters: int = MAX_ADAPTERS) -> None:
        self.max_bases, self.max_adapters = max_bases, max_adapters
        self.bases: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self.lock = threading.Lock()
        self.loads = 0  # base-model loads, for tests and logs

    def _base(self, name: str, quantization: str) -> _Entry:
        from finetune_core.infer import load_chat_model

        key = (name, quantization)
        if key in self.bases:
            self.bases.move_to_end(key)
            return self.bases[key]
        while len(self.bases) >= self.max_bases:
            self.bases.popitem(last=False)
        self.loads += 1
        entry = _Entry(load_chat_model(name, quantization=quantization))  # type: ignore[arg-type]
        self.bases[key] = entry
        return entry

    def _attach(self, entry: _Entry, folder: str) -> None:
        from peft import PeftModel

        key = adapter_key(folder)
        model = entry.chat.model
        if key not in entry.adapters:
            if isinstance(model, PeftModel):
                model.load_adapter(folder, adapter_name=key)
            else:
                model = PeftModel.from_pretrained(model, folder, adapter_name=key)
                model.eval()
                entry.chat.model = model
            entry.adapters[key] = None
        entry.adapters.move_to_end(key)
        model.set_adapter(key)
        while len(entry.adapters) > self.max_adapters:
            old, _ = entry.adapters.popitem(last=False)
            model.delete_adapter(old)

    @contextmanager
    def use(self, name: str, *, quantization: str, adapter: str | None) -> Iterator[Any]:
        """The chat model with `adapter` active, or with adapters disabled when None."""
        with self.lock:
            entry = self._base(name, quantization)
            if adapter:
                self._attach(entry, adapter)
                guard = nullcontext()
            elif entry.adapters:
                guard = entry.chat.model.disable_adapter()
            else:
                guard = nullcontext()
            with guard:
                yield entry.chat


CACHE = ModelCache()
