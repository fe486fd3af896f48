"""Reference metrics: normalised exact match, multiple-choice accuracy by log-likelihood,
validation loss and perplexity. Each returns per-item scores and a bootstrap 95% CI."""

from __future__ import annotations

import math
import re
import string
from typing import TYPE_CHECKING, Any

from finetune_core.evaluate.candidates import Answer
from finetune_core.evaluate.sets import EvalItem, EvalSet
from finetune_core.evaluate.stats import bootstrap_ci

if TYPE_CHECKING:
    from finetune_core.infer import ChatModel

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD-style: lowercase, drop punctuation and articles, squeeze whitespace."""
    text = text.lower().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(
    prediction: str, references: tuple[str, ...] | list[str], regex: str | None = None
) -> bool:
    """True if the (regex-extracted) prediction equals any reference after normalisation."""
    if regex:
        found = re.search(regex, prediction)
        prediction = found.group(0) if found else ""
    pred = normalize_answer(prediction)
    return any(pred == normalize_answer(r) for r in references)


def exact_match_scores(
    evalset: EvalSet, answers: dict[str, Answer], seed: int = 0
) -> dict[str, Any]:
    scores = {
        it.id: float(exact_match(answers[it.id].text, it.references, evalset.output_regex))
        for it in evalset
        if it.references and answers[it.id].status == "ok"
    }
    return {"per_item": scores, **bootstrap_ci(list(scores.values()), seed=seed)}


def _choice_batch(chat: ChatModel, item: EvalItem) -> list[float]:
    """Sum of log p(choice tokens | prompt) for each choice of one item."""
    import torch

    from finetune_core.data.render import render_prompt
    from finetune_core.data.types import Message

    tok = chat.tokenizer
    prompt = render_prompt(tok, [Message(m.role, m.content) for m in item.messages])
    conts = [tok(c, add_special_tokens=False)["input_ids"] for c in item.choices]
    rows = [prompt + c for c in conts]
    width = max(len(r) for r in rows)
    pad = tok.pad_token_id or 0
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    device = next(chat.model.parameters()).device
    with torch.no_grad():
        logits = chat.model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
    logp = torch.log_softmax(logits.float(), dim=-1)
    totals = []
    for row, cont in enumerate(conts):
        start = len(prompt)
        positions = torch.arange(start - 1, start - 1 + len(cont), device=logp.device)
        targets = torch.tensor(cont, device=logp.device)
        totals.append(float(logp[row, positions, targets].sum()) if cont else -math.inf)
    return totals


def choice_accuracy(chat: ChatModel, evalset: EvalSet, seed: int = 0) -> dict[str, Any]:
    """BIG-bench multiple_choice_grade: the most likely choice must be an accepted answer."""
    scores, picks = {}, {}
    for item in evalset:
        if len(item.choices) < 2:
            continue
        logps = _choice_batch(chat, item)
        best = item.choices[max(range(len(logps)), key=logps.__getitem__)]
        picks[item.id] = best
        scores[item.id] = float(best in item.references)
    return {"per_item": scores, "picks": picks, **bootstrap_ci(list(scores.values()), seed=seed)}


def validation_loss(
    chat: ChatModel, evalset: EvalSet, max_length: int = 1024, seed: int = 0
) -> dict[str, Any]:
    """Mean token loss on the first reference of each item, perplexity, and CIs."""
    import torch

    from finetune_core.data.pack import collate, pack
    from finetune_core.data.render import render_example
    from finetune_core.data.types import Example, Message
    from finetune_core.train.recipe import token_loss

    losses, counts = [], []
    chat.model.eval()
    for item in evalset:
        if not item.references:
            continue
        ex = Example((*item.messages, Message("assistant", item.references[0])))
        rows = pack([render_example(chat.tokenizer, ex)], max_length, packing=False)
        if not rows:
            continue
        with torch.no_grad():
            loss, n = token_loss(chat.model, collate(rows, chat.tokenizer.pad_token_id or 0))
        losses.append(float(loss))
        counts.append(n)
    ci = bootstrap_ci(losses, weights=counts, seed=seed)
    ppl = {k: (math.exp(v) if isinstance(v, float) else None) for k, v in ci.items() if k != "n"}
    return {"loss": ci, "perplexity": {**ppl, "n": ci["n"]}, "tokens": sum(counts)}
