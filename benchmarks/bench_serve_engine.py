"""The serving engine against today's path: 16 concurrent requests, 4 adapters, one base.

SmolLM2-135M-Instruct in 4-bit NF4 with 4 LoRA adapters (r=16 on every linear layer,
random weights nudged small so answers stay fluent), 16 chat requests for 64 tokens each,
greedy, all arriving at once:

- engine: finetune_core.infer.engine.Engine, every request submitted at t=0, stepped
  until all finish (continuous batching, one forward per step for all rows);
- serial: today's path, `generate` for one request at a time on a preloaded base +
  adapter (the worker's model cache keeps them loaded), in arrival order, so request i
  waits for the i-1 before it;
- one adapter: the engine again with a single adapter loaded and used by all 16.

Prints tokens/s, time to first token (p50/p99), time per output token, the ratios, how
many answers are identical between the two paths, then one JSON line. With
--compare-lora it first times the two multi-adapter LoRA paths (batched hooks, peft's
adapter_names) on tiny-llama and SmolLM2 and says which is faster. Not a test.

    python -m benchmarks.bench_serve_engine [--clients 16] [--tokens 64] [--compare-lora]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

MODEL = "smollm2-135m-instruct"
QUESTIONS = [
    "Explain briefly why the sky is blue.",
    "Give three tips for learning a new language.",
    "What is a prime number? Give an example.",
    "Describe a cat to someone who has never seen one.",
    "How does a bicycle stay upright?",
    "Write a short poem about the sea.",
    "What is the difference between weather and climate?",
    "Explain what a computer program is to a child.",
    "Why do leaves change colour in autumn?",
    "Give a recipe for a simple tomato soup.",
    "What causes the seasons on Earth?",
    "How do bees make honey?",
    "Summarise the story of Romeo and Juliet.",
    "What is photosynthesis?",
    "Give advice for a first job interview.",
    "Why is sleep important?",
]


def make_adapters(model: str, n: int, folder: Path, r: int = 16) -> dict[str, str]:
    from peft import LoraConfig, get_peft_model

    from finetune_core.models import load_model

    out = {}
    for i in range(n):
        base = load_model(model, quantization="none", compute_dtype=torch.float32)
        torch.manual_seed(100 + i)
        config = LoraConfig(
            r=r, lora_alpha=2 * r, target_modules="all-linear", init_lora_weights=False
        )
        peft_model = get_peft_model(base, config)
        with torch.no_grad():
            for name, p in peft_model.named_parameters():
                if "lora_B" in name:
                    p.mul_(0.05)  # a nudge, not a new model
        peft_model.save_pretrained(folder / f"a{i}")
        out[f"a{i}"] = str(folder / f"a{i}")
    return out


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def figures(
    ttft: list[float], tokens: list[int], spans: list[float], wall: float
) -> dict[str, Any]:
    per_token = [s / max(1, t - 1) for s, t in zip(spans, tokens, strict=True) if t > 1]
    return {
        "seconds": wall,
        "output_tokens": sum(tokens),
        "tokens_per_s": sum(tokens) / wall,
        "ttft_p50_s": pct(ttft, 50),
        "ttft_p99_s": pct(ttft, 99),
        "time_per_output_token_s": statistics.mean(per_token) if per_token else None,
    }


def run_engine(engine: Any, requests: list[Any]) -> tuple[dict[str, Any], list[str]]:
    t0 = time.perf_counter()
    handles = [engine.submit(r) for r in requests]
    engine.run_until_idle()
    wall = time.perf_counter() - t0
    result = figures(
        [h.first_token_at - h.submitted_at for h in handles],
        [h.completion_tokens for h in handles],
        [h.finished_at - h.first_token_at for h in handles],
        wall,
    )
    result["steps"] = engine.steps
    return result, [h.text for h in handles]


def run_serial(chats: dict[str, Any], requests: list[Any]) -> tuple[dict[str, Any], list[str]]:
    from finetune_core.infer import generate

    ttft, tokens, spans, texts = [], [], [], []
    t0 = time.perf_counter()
    for r in requests:
        first: list[float] = []
        (g,) = generate(
            chats[r.adapter],
            [r.messages],
            max_new_tokens=r.max_tokens,
            on_text=lambda _row, _t, first=first: first or first.append(time.perf_counter()),
        )
        done = time.perf_counter()
        start = first[0] if first else done
        ttft.append(start - t0)  # every client asked at t0
        tokens.append(g.completion_tokens)
        spans.append(done - start)
        texts.append(g.text)
    return figures(ttft, tokens, spans, time.perf_counter() - t0), texts


def decode_ms(engine: Any, requests: list[Any]) -> float:
    """Median time of a decode step while every request is in the batch."""
    for r in requests:
        engine.submit(r)
    while len(engine.active) < len(requests) and not engine.idle:
        engine.step()
    times = []
    while not engine.idle and len(engine.active) == len(requests):
        t0 = time.perf_counter()
        engine.step()
        times.append(time.perf_counter() - t0)
    engine.run_until_idle()
    return 1000 * statistics.median(times)


def compare_lora(folder: Path, clients: int, tokens: int) -> dict[str, Any]:
    """Both multi-adapter LoRA paths, decode steps with every row in: 4 adapters mixed and
    one adapter for all rows (4 loaded), twice each in turn, per model."""
    from finetune_core.infer.engine import Engine, Request
    from finetune_core.models import load_model, load_tokenizer

    out: dict[str, Any] = {}
    for model, quantization in (("tiny-llama", "none"), (MODEL, "nf4")):
        adapters = make_adapters(model, 4, folder / model)
        engines = {
            kind: Engine(
                load_model(model, quantization=quantization).eval(),
                load_tokenizer(model),
                adapters=adapters,
                lora=kind,
            )
            for kind in ("batched", "peft")
        }
        row: dict[str, Any] = {}
        for mix in (4, 1):
            requests = [
                Request(
                    messages=[{"role": "user", "content": q}],
                    adapter=f"a{i % mix}",
                    max_tokens=tokens,
                )
                for i, q in enumerate((QUESTIONS * 4)[:clients])
            ]
            times: dict[str, list[float]] = {"batched": [], "peft": []}
            for kind in ["batched", "peft"] * 2:
                times[kind].append(decode_ms(engines[kind], requests))
            for kind, t in times.items():
                row[f"{kind}_{mix}_adapters_ms_per_step"] = min(t)
            row[f"peft_over_batched_{mix}_adapters"] = min(times["peft"]) / min(times["batched"])
            print(
                f"LoRA paths on {model} ({quantization}), decode step of {clients} rows, "
                f"{mix} adapter(s) in use: batched {min(times['batched']):.1f} ms, peft "
                f"adapter_names {min(times['peft']):.1f} ms ({row[f'peft_over_batched_{mix}_adapters']:.2f}x)"
            )
        out[model] = row
    return out


class RowsKV:
    """The alternative to BatchKV, for --compare-cache: one cache per request (as a
    DynamicCache per row), each step appending the new column to every row (torch.cat, as
    DynamicCache does) and left-padding the rows into one batch for the attention."""

    def __init__(self) -> None:
        self.kv: list[list[list[torch.Tensor]]] = []  # row -> layer -> [keys, values]

    @property
    def rows(self) -> int:
        return len(self.kv)

    def _lengths(self) -> list[int]:
        return [row[0][0].shape[2] for row in self.kv]

    def add(self, kv: list[tuple[torch.Tensor, torch.Tensor]]) -> int:
        self.kv.append([[k, v] for k, v in kv])
        return self.rows - 1

    def remove(self, slot: int) -> None:
        self.kv[slot] = self.kv[-1]
        self.kv.pop()

    def prepare(self) -> None:
        pass

    def positions(self, device: torch.device) -> torch.Tensor:
        return torch.tensor([[n] for n in self._lengths()], device=device)

    def mask(self, device: torch.device) -> torch.Tensor:
        lengths = torch.tensor(self._lengths(), device=device)
        columns = torch.arange(int(lengths.max()) + 1, device=device)
        return (columns[None, :] >= (lengths.max() - lengths)[:, None])[:, None, None, :]

    def update(
        self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, **_: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = []
        for j, new in enumerate((key, value)):
            rows = []
            for i, row in enumerate(self.kv):
                row[layer_idx][j] = torch.cat([row[layer_idx][j], new[i : i + 1]], dim=2)
                rows.append(row[layer_idx][j])
            width = max(r.shape[2] for r in rows)
            padded = [torch.nn.functional.pad(r, (0, 0, width - r.shape[2], 0)) for r in rows]
            out.append(torch.cat(padded))
        return out[0], out[1]

    def advance(self) -> None:
        pass


def compare_cache(
    adapters: dict[str, str], clients: int, tokens: int, dtype: Any
) -> dict[str, Any]:
    """Decode steps of `clients` rows with BatchKV and with RowsKV, twice each in turn."""
    from finetune_core.infer.engine import Engine, Request
    from finetune_core.models import load_model, load_tokenizer

    engine = Engine(
        load_model(MODEL, quantization="nf4", compute_dtype=dtype).eval(),
        load_tokenizer(MODEL),
        adapters=adapters,
    )
    requests = [
        Request(
            messages=[{"role": "user", "content": q * (1 + i % 3)}],
            adapter=f"a{i % 4}",
            max_tokens=tokens,
        )
        for i, q in enumerate((QUESTIONS * 4)[:clients])
    ]
    times: dict[str, list[float]] = {"BatchKV": [], "RowsKV": []}
    from finetune_core.infer.batch_cache import BatchKV

    for name in ["BatchKV", "RowsKV"] * 2:
        engine.cache = BatchKV() if name == "BatchKV" else RowsKV()
        times[name].append(decode_ms(engine, requests))
    row = {f"{k}_ms_per_step": min(v) for k, v in times.items()}
    print(
        f"KV cache on {MODEL}, decode step of {clients} rows (prompts of 1-3 questions): "
        f"BatchKV {row['BatchKV_ms_per_step']:.1f} ms, one cache per row + padding "
        f"{row['RowsKV_ms_per_step']:.1f} ms"
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--adapters", type=int, default=4)
    parser.add_argument("--prefill-tokens", type=int, default=256)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument(
        "--dtype",
        choices=["default", "fp32", "bf16"],
        default="default",
        help="compute dtype (default: the loader's, bf16 on a CPU with native bf16)",
    )
    parser.add_argument("--compare-lora", action="store_true")
    parser.add_argument("--compare-cache", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault(
        "FINETUNE_CORE_CACHE", str(Path(__file__).resolve().parents[1] / ".cache")
    )
    if args.threads:
        torch.set_num_threads(args.threads)

    from finetune_core.infer import load_chat_model
    from finetune_core.infer.engine import Engine, Request
    from finetune_core.models import load_model, load_tokenizer
    from finetune_core.models.loading import default_compute_dtype

    dtype = {"default": None, "fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    load = os.getloadavg()[0]
    summary: dict[str, Any] = {"model": MODEL, "quantization": "nf4", "clients": args.clients}
    summary.update(dtype=str(dtype or default_compute_dtype()).removeprefix("torch."))
    summary.update(tokens=args.tokens, adapters=args.adapters, threads=torch.get_num_threads())
    summary.update(prefill_tokens=args.prefill_tokens)
    with tempfile.TemporaryDirectory() as tmp:
        if args.compare_lora:
            summary["lora_paths"] = compare_lora(Path(tmp), args.clients, 32)
        adapters = make_adapters(MODEL, args.adapters, Path(tmp))
        if args.compare_cache:
            summary["kv_cache"] = compare_cache(adapters, args.clients, 48, dtype)
        requests = [
            Request(
                messages=[{"role": "user", "content": q}],
                adapter=f"a{i % args.adapters}",
                max_tokens=args.tokens,
            )
            for i, q in enumerate((QUESTIONS * 4)[: args.clients])
        ]
        tokenizer = load_tokenizer(MODEL)
        engine = Engine(
            load_model(MODEL, quantization="nf4", compute_dtype=dtype).eval(),
            tokenizer,
            adapters=adapters,
            prefill_tokens=args.prefill_tokens,
        )
        one = Engine(
            load_model(MODEL, quantization="nf4", compute_dtype=dtype).eval(),
            tokenizer,
            adapters={"a0": adapters["a0"]},
            prefill_tokens=args.prefill_tokens,
        )
        chats = {
            name: load_chat_model(MODEL, adapter=folder, compute_dtype=dtype)
            for name, folder in adapters.items()
        }
        warm = [Request(**{**r.__dict__, "max_tokens": 4}) for r in requests[:4]]
        run_engine(engine, warm)
        run_engine(one, [Request(**{**r.__dict__, "adapter": "a0"}) for r in warm])
        run_serial(chats, warm)

        # Alternate so drifting load on the shared machine hits all three alike.
        summary["engine"], engine_texts = run_engine(engine, requests)
        summary["serial"], serial_texts = run_serial(chats, requests)
        one_requests = [Request(**{**r.__dict__, "adapter": "a0"}) for r in requests]
        summary["engine_one_adapter"], _ = run_engine(one, one_requests)

    e, s, o = summary["engine"], summary["serial"], summary["engine_one_adapter"]
    summary["throughput_ratio_vs_serial"] = e["tokens_per_s"] / s["tokens_per_s"]
    summary["four_vs_one_adapter_time_ratio"] = e["seconds"] / o["seconds"]
    summary["ttft_p50_s"] = e["ttft_p50_s"]
    summary["identical_answers"] = sum(
        a == b for a, b in zip(engine_texts, serial_texts, strict=True)
    )
    summary["loadavg_1min"] = [load, os.getloadavg()[0]]

    print(
        f"{MODEL} nf4 ({summary['dtype']}), prefill budget {args.prefill_tokens}, {args.clients} clients x {args.tokens} tokens, {args.adapters} adapters, "
        f"{summary['threads']} threads, load average {load:.1f} -> {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'path':<22} {'seconds':>8} {'tokens':>7} {'tok/s':>7} {'TTFT p50':>9} {'TTFT p99':>9} {'s/token':>8}"
    )
    for name, f in (
        ("serial (today)", s),
        (f"engine, {args.adapters} adapters", e),
        ("engine, 1 adapter", o),
    ):
        print(
            f"{name:<22} {f['seconds']:8.2f} {f['output_tokens']:7d} {f['tokens_per_s']:7.1f} "
            f"{f['ttft_p50_s']:9.2f} {f['ttft_p99_s']:9.2f} {f['time_per_output_token_s']:8.3f}"
        )
    print(
        f"throughput engine/serial {summary['throughput_ratio_vs_serial']:.2f}x, "
        f"{args.adapters} vs 1 adapter time {summary['four_vs_one_adapter_time_ratio']:.2f}x, "
        f"identical answers {summary['identical_answers']}/{args.clients}"
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
