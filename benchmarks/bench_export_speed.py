"""Generation speed on this CPU: llama.cpp on an exported q8_0 GGUF (tools/llama) against
Tunebook's own generation (finetune_core.infer: the merged folder, unquantized, and the
base in NF4 + the adapter, as the playground serves it). A quick measurement, not a test.

    python -m benchmarks.bench_export_speed RUN [--tokens 64] [--threads 1]

Measured on the shared 2-core CPU, SmolLM2-135M + a LoRA, 32 tokens x 3 prompts (llama.cpp's
figure includes reading the prompt), one thread each (OMP_NUM_THREADS=1, load ~2.5):
llama.cpp q8_0 31.7 tokens/s; ours 16.2 (merged, fp32) and 16.7 (NF4 + adapter). Under a
load of ~13 with torch's default threads: llama.cpp 40.9, ours 1.2 and 2.5 (oversubscribed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from finetune_core.export import export_run
from finetune_core.infer import generate, load_chat_model

LLAMA = Path(__file__).resolve().parents[1] / "tools" / "llama"
PROMPTS = ["Tell me about the moon.", "Write a short story about a robot.", "Explain rain."]


def llama_cpp_speed(gguf_file: Path, texts: list[str], tokens: int, threads: int) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        json.dump(texts, f)
        f.flush()
        done = subprocess.run(
            ["node", str(LLAMA / "greedy.mjs"), str(gguf_file), f.name, str(tokens)],
            capture_output=True, text=True, check=True,
            env={**os.environ, "LLAMA_THREADS": str(threads)},
        )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])["tokens_per_second"]


def ours_speed(model: str, adapter: str | None, quantization: str, tokens: int) -> float:
    chat = load_chat_model(model, adapter=adapter, quantization=quantization)
    start = time.perf_counter()
    results = generate(
        chat, [[{"role": "user", "content": p}] for p in PROMPTS], max_new_tokens=tokens
    )
    made = sum(len(chat.tokenizer(r.text, add_special_tokens=False)["input_ids"]) for r in results)
    return made / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    out = Path(args.run) / "exports"
    q8 = export_run(args.run, fmt="gguf", type_="q8_0", out=out / "gguf-q8_0")
    merged = export_run(args.run, fmt="merged", type_="f16", out=out / "merged-f16", measure=False)
    chat = load_chat_model(merged["folder"], quantization="none")
    texts = [
        chat.tokenizer.apply_chat_template(
            [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
        )
        for p in PROMPTS
    ]
    figures = {
        "llama_cpp_q8_0": llama_cpp_speed(
            Path(q8["folder"]) / q8["gguf_file"], texts, args.tokens, args.threads
        ),
        "ours_merged_unquantized": ours_speed(merged["folder"], None, "none", args.tokens),
        "ours_nf4_plus_adapter": ours_speed(
            q8["base_model"], str(Path(args.run) / "adapter"), "nf4", args.tokens
        ),
    }
    print(json.dumps({k: round(v, 2) for k, v in figures.items()}, indent=2))


if __name__ == "__main__":
    main()
