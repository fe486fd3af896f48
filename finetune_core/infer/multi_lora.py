"""Several LoRA adapters on one base model, each row of a batch with its own (or none).

Two ways, same interface (`model`, `add(name, folder)`, `select(per-row names) -> kwargs`):

- `BatchedLoRA` (the engine's default): forward hooks on the base model's linear layers.
  Per layer, every loaded adapter's A matrices are stacked into one [sum r, in] matrix
  and the B matrices into one [out, sum r]. When every adapter is in the batch, a forward
  costs two matmuls per layer whatever the mix: each row keeps only its own adapter's
  columns (a 0/1 mask) and its scaling. When only some are, each one in use adds two
  matmuls on views of its own columns (rows of other adapters scaled by 0), so loaded but
  idle adapters cost nothing. The base model is left as it is (NF4 or not).
- `PeftMixed`: peft's mixed-batch inference (`adapter_names=` on forward), which runs
  each distinct adapter's LoRA on its sub-batch (index, two matmuls, index-add per
  adapter per layer).

Measured on the shared 2-core CPU (benchmarks/bench_serve_engine.py --compare-lora: one
decode step of 16 rows, 4 random adapters r=16 on every linear layer, median of the steps,
best of two runs in turn; other engineers' jobs were running, so the figures move by ~20%):

    model (dtype)              adapters in use   batched    peft adapter_names
    tiny-llama (fp32)          4                 3.9 ms     10.3 ms  (2.7x)
                               1                 4.0 ms      6.5 ms  (1.6x)
    SmolLM2-135M NF4 (bf16)    4                 169 ms      252 ms  (1.5x)
                               1                 152 ms      180 ms  (1.2x)

(1 torch thread; with 2 threads, 3.0 vs 7.6 ms and 123 vs 214 ms.) peft pays, per layer
and per distinct adapter, an index, two small matmuls and an index-add; the stacked form
pays two matmuls per layer whatever the mix. So the engine takes `BatchedLoRA`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from finetune_core.contracts.layout import ADAPTER_CONFIG, ADAPTER_WEIGHTS

# Which one the engine takes unless told: the faster in the measurement above.
LORA_CHOICE = "batched"
BASE = "__base__"  # peft's name for "no adapter" in adapter_names


def read_adapter(folder: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """A peft LoRA folder: its config and its weights (keys as peft saves them)."""
    folder = Path(folder)
    config = json.loads((folder / ADAPTER_CONFIG).read_text())
    if (folder / ADAPTER_WEIGHTS).exists():
        from safetensors.torch import load_file

        weights = load_file(str(folder / ADAPTER_WEIGHTS))
    else:
        weights = torch.load(folder / "adapter_model.bin", map_location="cpu", weights_only=True)
    if config.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"{folder}: a {config.get('peft_type')} adapter, not LoRA")
    unsupported = [
        k for k in ("use_dora", "rank_pattern", "alpha_pattern", "modules_to_save") if config.get(k)
    ]
    if unsupported or config.get("fan_in_fan_out"):
        raise ValueError(
            f"{folder}: {', '.join(unsupported) or 'fan_in_fan_out'} adapters cannot share a batch"
        )
    return config, weights


class _Layer:
    """One base linear layer's stacked adapters."""

    def __init__(self) -> None:
        self.a: torch.Tensor | None = None  # [sum r, in]
        self.b: torch.Tensor | None = None  # [out, sum r]
        self.spans: dict[int, tuple[int, int]] = {}  # adapter index -> its columns
        self.scaling: dict[int, float] = {}
        self.key: tuple = ()  # layers of equal keys share their per-forward masks

    def stack(self, index: int, a: torch.Tensor, b: torch.Tensor, scaling: float) -> None:
        start = 0 if self.a is None else self.a.shape[0]
        self.a = a if self.a is None else torch.cat([self.a, a])
        self.b = b if self.b is None else torch.cat([self.b, b], dim=1)
        self.spans[index] = (start, start + a.shape[0])
        self.scaling[index] = scaling
        self.key = tuple(sorted((i, *span, self.scaling[i]) for i, span in self.spans.items()))

    def plan(self, picks: torch.Tensor, used: set[int]) -> list[tuple]:
        """(columns or None for all, column mask or None, per-row scaling) terms whose sum
        is the rows' delta: one stacked term when every adapter of this layer is in use,
        else one per adapter in use (views of its columns), so idle adapters cost nothing.
        Shared by the layers of the same key; each applies it to its own A and B."""
        device = self.a.device
        if used >= set(self.spans):
            owner = torch.zeros(self.a.shape[0], dtype=torch.long)
            for i, (start, end) in self.spans.items():
                owner[start:end] = i
            mask = (owner[None, :] == picks[:, None]).float()[:, None, :]  # [rows, 1, sum r]
            scale = torch.tensor([self.scaling.get(int(i), 0.0) for i in picks])[:, None, None]
            return [(None, mask.to(device), scale.to(device))]
        terms = []
        for i in sorted(used & set(self.spans)):
            scale = ((picks == i).float() * self.scaling[i])[:, None, None]
            terms.append((self.spans[i], None, scale.to(device)))
        return terms


class BatchedLoRA:
    """Batched multi-adapter LoRA through forward hooks on the base model."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.names: list[str] = []
        self.layers: dict[str, _Layer] = {}
        self._active: dict[tuple, list[tuple]] | None = None
        self._hooks: list = []

    def add(self, name: str, folder: str | Path) -> None:
        if name in self.names:
            raise ValueError(f"adapter {name!r} is loaded already")
        config, weights = read_adapter(folder)
        r, alpha = int(config["r"]), float(config["lora_alpha"])
        scaling = alpha / (r**0.5 if config.get("use_rslora") else r)
        modules = dict(self.model.named_modules())
        index = len(self.names) + 1  # 0 is "no adapter"
        found = False
        for key, a in weights.items():
            if ".lora_A." not in key:
                continue
            path = key.split(".lora_A.")[0].removeprefix("base_model.model.")
            module = modules.get(path)
            if module is None or not hasattr(module, "in_features"):
                raise ValueError(f"{folder}: no linear layer {path} in the base model")
            b = weights[key.replace(".lora_A.", ".lora_B.")]
            layer = self.layers.get(path)
            if layer is None:
                layer = self.layers[path] = _Layer()
                self._hooks.append(module.register_forward_hook(self._hook(layer)))
            device = module.weight.device
            layer.stack(index, a.float().to(device), b.float().to(device), scaling)
            found = True
        if not found:
            raise ValueError(f"{folder}: no LoRA weights")
        self.names.append(name)

    def select(self, rows: list[str | None]) -> dict:
        """Set the adapter of each row for the next forwards; no extra forward kwargs."""
        index = [0 if n is None else self.names.index(n) + 1 for n in rows]
        used = set(index) - {0}
        if not used:
            self._active = None  # plain base forward: the hooks do nothing
            return {}
        picks = torch.tensor(index)
        self._active = {}
        for layer in self.layers.values():
            if layer.key not in self._active:
                self._active[layer.key] = layer.plan(picks, used)
        return {}

    def _hook(self, layer: _Layer):
        def hook(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            if self._active is None:
                return output
            x = args[0].to(layer.a.dtype)
            delta = None
            for span, mask, scale in self._active[layer.key]:
                a, b = layer.a, layer.b
                if span is not None:
                    a, b = a[span[0] : span[1]], b[:, span[0] : span[1]]
                # As peft: lora_B(lora_A(x)) * scaling, added in the output's dtype.
                h = torch.nn.functional.linear(x, a)
                term = torch.nn.functional.linear(h if mask is None else h * mask, b) * scale
                delta = term if delta is None else delta + term
            return output if delta is None else output + delta.to(output.dtype)

        return hook


class PeftMixed:
    """peft's own mixed-batch LoRA: a PeftModel holding every adapter."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.base, self.model = model, model
        self.names: list[str] = []

    def add(self, name: str, folder: str | Path) -> None:
        read_adapter(folder)  # the same refusals as BatchedLoRA (DoRA cannot mix)
        if not self.names:
            from peft import PeftModel

            self.model = PeftModel.from_pretrained(self.base, str(folder), adapter_name=name)
            self.model.eval()
        else:
            self.model.load_adapter(str(folder), adapter_name=name)
        self.names.append(name)

    def select(self, rows: list[str | None]) -> dict:
        if not self.names:
            return {}
        return {"adapter_names": [BASE if n is None else n for n in rows]}


def make_adapters(model: torch.nn.Module, kind: str = LORA_CHOICE) -> BatchedLoRA | PeftMixed:
    if kind == "batched":
        return BatchedLoRA(model)
    if kind == "peft":
        return PeftMixed(model)
    raise ValueError(f"lora must be 'batched' or 'peft', not {kind!r}")
