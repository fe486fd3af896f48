"""What DPO's reference costs per step: computed on the fly vs cached once per pair.

    python benchmarks/dpo_reference_cost.py --model smollm2-135m-instruct --steps 6

Times, on the same micro-batches, one DPO step (the policy's forward and backward over
chosen and rejected, as training runs it: QLoRA, gradient checkpointing) and the
reference's no-grad forward with the adapter disabled. On the fly, every step pays both;
cached, the reference is paid once per pair (one epoch's worth), then never again.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from transformers import PreTrainedTokenizerBase

from finetune_core.data.types import Message, PreferenceExample
from finetune_core.models import load_tokenizer
from finetune_core.train.config import TrainConfig
from finetune_core.train.preference import PreferenceObjective, render_pair
from finetune_core.train.setup import build_model


def pairs(tokenizer: PreTrainedTokenizerBase, n: int, words: int) -> list:
    out = []
    for i in range(n):
        prompt = f"Question {i}: add {i} and {2 * i}, then explain the steps carefully."
        good = " ".join(["the sum is", str(3 * i)] + ["because"] * words)
        bad = " ".join(["the sum is", str(3 * i + 1)] + ["since"] * words)
        example = PreferenceExample(
            (Message("user", prompt), Message("assistant", good)),
            rejected=Message("assistant", bad),
        )
        out.append(render_pair(tokenizer, example, i))
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="tiny-llama")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--answer-words", type=int, default=48)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = TrainConfig(model=args.model, data="x", training_method="dpo", batch_size=args.batch_size)
    tokenizer = load_tokenizer(cfg.model)
    model = build_model(cfg)
    objective = PreferenceObjective(cfg, model, tokenizer.pad_token_id)
    data = pairs(tokenizer, args.batch_size * (args.steps + 1), args.answer_words)
    batches = [data[i : i + args.batch_size] for i in range(0, len(data), args.batch_size)]
    ref_s, step_s = [], []
    for n, batch in enumerate(batches):
        start = time.perf_counter()
        objective.cache_reference(batch)  # the reference forward of this micro-batch
        mid = time.perf_counter()
        model.train()
        objective.accumulate([batch])  # the policy's forward and backward
        model.zero_grad(set_to_none=True)
        end = time.perf_counter()
        if n:  # the first batch warms up
            ref_s.append(mid - start)
            step_s.append(end - mid)
    ref, step = statistics.median(ref_s), statistics.median(step_s)
    result = {
        "model": args.model,
        "batch_pairs": args.batch_size,
        "tokens_per_pair": statistics.mean(len(p) for p in data),
        "reference_forward_s": round(ref, 4),
        "policy_step_s": round(step, 4),
        "on_the_fly_overhead": round(ref / step, 3),
        "cached_overhead_at_epochs": {e: round(ref / step / e, 3) for e in (1, 2, 3)},
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
