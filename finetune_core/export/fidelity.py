"""How far the merged 16-bit model is from the model as trained (the 4-bit base plus the
adapter): the mean KL divergence of next-token distributions and greedy agreement."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import torch

from finetune_core.data import bigbench_task_path
from finetune_core.export.common import FinishedRun, Reporter
from finetune_core.infer.generate import left_pad

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# Above these the manifest warns: the merged model answers noticeably differently.
KL_WARN = 0.05  # nats per token
AGREEMENT_WARN = 0.9  # share of greedy tokens that match
PROMPT_TASK = "sports_understanding"


def fidelity_prompts(tokenizer: PreTrainedTokenizerBase, n: int) -> list[list[int]]:
    """n chat prompts from a bundled BIG-bench task, templated as in training."""
    examples = json.loads(bigbench_task_path(PROMPT_TASK).read_text())["examples"][:n]
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": e["input"]}], tokenize=True, add_generation_prompt=True
        )["input_ids"]
        for e in examples
    ]


def as_trained(run: FinishedRun) -> torch.nn.Module:
    """The run's model exactly as it trained: its base at its quantization + the adapter."""
    from peft import PeftModel

    from finetune_core.models.loading import load_model

    base = load_model(run.base_model, quantization=run.quantization, compute_dtype=torch.float32)
    return PeftModel.from_pretrained(base, run.adapter).eval()


@torch.no_grad()
def _log_probs(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids=ids, attention_mask=mask).logits.float()
    return torch.log_softmax(logits, dim=-1)


@torch.no_grad()
def _greedy(
    model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, new: int, pad: int
) -> torch.Tensor:
    out = model.generate(
        input_ids=ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
        do_sample=False, pad_token_id=pad,
    )  # fmt: skip
    return out[:, ids.shape[1] :]


def measure(
    run: FinishedRun,
    merged: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    hooks: Reporter,
    *,
    n_prompts: int = 50,
    new_tokens: int = 16,
) -> dict[str, Any]:
    """KL(as trained || merged) averaged over every prompt position, and the share of greedy
    tokens (new_tokens per prompt, compared position by position) that agree."""
    hooks.report("measuring the merge against the model as trained", 0.6)
    trained = as_trained(run)
    merged = merged.to(torch.float32)
    ids, mask = left_pad(fidelity_prompts(tokenizer, n_prompts), tokenizer.pad_token_id)
    p, q = _log_probs(trained, ids, mask), _log_probs(merged, ids, mask)
    kl = (p.exp() * (p - q)).sum(-1)[mask.bool()]
    hooks.report("greedy answers of both models", 0.75)
    a = _greedy(trained, ids, mask, new_tokens, tokenizer.pad_token_id)
    b = _greedy(merged, ids, mask, new_tokens, tokenizer.pad_token_id)
    figures = {
        "prompts": len(ids),
        "new_tokens": new_tokens,
        "quantization_as_trained": run.quantization,
        "mean_kl": round(float(kl.mean()), 6),
        "max_kl": round(float(kl.max()), 6),
        "greedy_token_agreement": round(float((a == b).float().mean()), 4),
        "greedy_identical_answers": round(float((a == b).all(-1).float().mean()), 4),
    }
    return figures


def warnings_for(figures: dict[str, Any]) -> list[str]:
    out = []
    if figures["mean_kl"] > KL_WARN:
        out.append(
            f"the merged 16-bit model differs from the model as trained: mean KL "
            f"{figures['mean_kl']:.4f} nats per token (warning above {KL_WARN}); the adapter "
            "on the 4-bit base is closer to what training saw"
        )
    if figures["greedy_token_agreement"] < AGREEMENT_WARN:
        out.append(
            f"greedy answers agree on {figures['greedy_token_agreement']:.0%} of tokens "
            f"(warning below {AGREEMENT_WARN:.0%})"
        )
    return out
