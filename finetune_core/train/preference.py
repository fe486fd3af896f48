"""Preference tuning inside the recipe: DPO (sigmoid loss, Rafailov et al. 2023) and SimPO
(reference-free, Meng et al. 2024), on pairs of a preferred and a non-preferred answer.

pairs -> reference log-probabilities, once per pair -> per step: both answers' summed
log-probabilities under the policy -> the loss and rewards/chosen, rewards/rejected,
rewards/margins, rewards/accuracies. With rpo_alpha (DPO only) the step's loss also holds
rpo_alpha x the preferred answers' NLL per token (Iterative RPO, Pang et al. 2024): plain
DPO only widens the gap, and can do so by lowering both answers' likelihoods.

The reference is the model as the run starts, never a second copy of the base: a fresh
adapter's reference is the base alone (the adapter disabled), a run that starts from an
adapter (init_adapter) compares against that adapter as loaded, frozen.

Reference log-probabilities are computed once per pair, before the first step, and kept
(checkpoints carry them, so a resumed run does not recompute them), rather than in every
step. Measured with benchmarks/dpo_reference_cost.py (QLoRA, gradient checkpointing, 4
pairs a micro-batch, 2 CPU threads on a shared machine): the reference's no-grad forward
costs 0.24 of a DPO step on tiny-llama (0.62 s vs 2.54 s, ~860 tokens a pair) and 0.20 on
SmolLM2-135M (14.4 s vs 71.2 s, ~210 tokens a pair). On the fly that is paid at every
step, epoch after epoch; cached, once per pair: the same as on the fly in a run of one
epoch, half of it in two (the default preset), a third in three. The cache also needs no
second adapter in memory when DPO continues from an adapter (the policy moves; the cache
was taken before it did), and costs 8 bytes a pair.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from finetune_core.contracts.train import PREFERENCE_METRICS
from finetune_core.data.pack import IGNORE, Row, collate
from finetune_core.data.render import Rendered, render_example
from finetune_core.data.types import PreferenceExample
from finetune_core.errors import DataError
from finetune_core.train.chunked_loss import trained_loss
from finetune_core.train.config import TrainConfig

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

REWARDS = PREFERENCE_METRICS


@dataclass(frozen=True)
class Pair:
    """A rendered pair: prompt + preferred answer, prompt + the other; labels on the answers."""

    index: int  # the pair's key in the reference cache: its position in the data read
    chosen: Rendered
    rejected: Rendered

    def __len__(self) -> int:
        return len(self.chosen.input_ids) + len(self.rejected.input_ids)


# --- data ------------------------------------------------------------------------------


def _read_pairs(path: str, cfg: TrainConfig) -> list[PreferenceExample]:
    from finetune_core.data import read_examples

    examples = list(read_examples(path, fmt=cfg.data_format, column_map=cfg.column_map))
    if examples and not isinstance(examples[0], PreferenceExample):
        raise DataError(
            f"{cfg.training_method} trains on preference data, and {path} holds answers only: "
            'give one JSONL line per pair, {"input": {"messages": [...]}, "preferred_output": '
            '[{"role": "assistant", ...}], "non_preferred_output": [...]}, or train it with '
            "training_method supervised",
            code="not_preference_data",
        )
    return examples  # type: ignore[return-value]


def _cut(sequence: Rendered, max_length: int) -> Rendered:
    return Rendered(sequence.input_ids[:max_length], sequence.labels[:max_length], sequence.line)


def render_pair(tokenizer: PreTrainedTokenizerBase, example: PreferenceExample, index: int) -> Pair:
    chosen = render_example(tokenizer, example)
    rejected = render_example(tokenizer, example.with_rejected())
    return Pair(index, chosen, rejected)


def prepare_pairs(
    cfg: TrainConfig, tokenizer: PreTrainedTokenizerBase
) -> tuple[list[Pair], list[Pair], dict[str, Any]]:
    """Read, split and render preference pairs; pairs whose answers max_length cuts away
    entirely are left out (their prompt alone fills it). Returns train and validation pairs
    and the data facts, as prepare_rows does."""
    from finetune_core.data import train_val_split
    from finetune_core.train.outputs import file_sha256

    examples = _read_pairs(cfg.data, cfg)
    if cfg.limit_examples:
        examples = examples[: cfg.limit_examples]
    if cfg.val_data:
        train_ex, val_ex = examples, _read_pairs(cfg.val_data, cfg)
    else:
        split = train_val_split(examples, val_fraction=cfg.val_fraction, seed=cfg.seed)
        train_ex, val_ex = split  # type: ignore[assignment]
    rendered = [render_pair(tokenizer, ex, i) for i, ex in enumerate([*train_ex, *val_ex])]
    cut = [
        Pair(p.index, _cut(p.chosen, cfg.max_length), _cut(p.rejected, cfg.max_length))
        for p in rendered
    ]
    kept = [p for p in cut if p.chosen.n_trained and p.rejected.n_trained]
    train = [p for p in kept if p.index < len(train_ex)]
    info = {
        "data_sha256": file_sha256(cfg.data),
        "format": "preference",
        "n_train_examples": len(train_ex),
        "n_val_examples": len(val_ex),
        "n_train_rows": len(train),
        "n_truncated": sum(len(p) > len(c) for p, c in zip(rendered, cut, strict=True)),
        "train_tokens": sum(len(p) for p in train),
    }
    return train, [p for p in kept if p.index >= len(train_ex)], info


# --- log-probabilities and losses ---------------------------------------------------------


def sequence_logps(
    model: torch.nn.Module, sequences: list[Rendered], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sequence's summed log-probability of its trained (answer) tokens, in fp32, and
    how many there were. One forward pass over all sequences; the output layer runs only at
    answer positions, sequence by sequence (see chunked_loss)."""
    rows = []
    for sequence in sequences:
        rows.append(Row())
        rows[-1].add(sequence)
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in collate(rows, pad_id).items()}
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = causal_lm.get_decoder()(
        input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False
    ).last_hidden_state[:, :-1]
    labels = batch["labels"][:, 1:]
    trained = labels != IGNORE
    head = causal_lm.get_output_embeddings()
    softcap = getattr(causal_lm.config, "final_logit_softcapping", None)
    logps = [
        -trained_loss(head, hidden[i][trained[i]], labels[i][trained[i]], softcap=softcap)
        for i in range(len(rows))
    ]
    return torch.stack(logps).float(), trained.sum(dim=1)


def dpo_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sigmoid DPO per pair: -log sigmoid(beta * (log-ratio chosen - log-ratio rejected)),
    a log-ratio being log pi(answer) - log pi_ref(answer). Returns it and the rewards,
    beta * log-ratio, of the chosen and the rejected answers (detached)."""
    chosen_ratio, rejected_ratio = chosen - ref_chosen, rejected - ref_rejected
    loss = -F.logsigmoid(beta * (chosen_ratio - rejected_ratio))
    return loss, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


def simpo_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    chosen_tokens: torch.Tensor,
    rejected_tokens: torch.Tensor,
    beta: float,
    gamma: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SimPO per pair: -log sigmoid(r_chosen - r_rejected - gamma), the reward of an answer
    being beta times its mean token log-probability (no reference). Returns it and the
    rewards (detached)."""
    chosen_reward = beta * chosen / chosen_tokens.clamp(min=1)
    rejected_reward = beta * rejected / rejected_tokens.clamp(min=1)
    loss = -F.logsigmoid(chosen_reward - rejected_reward - gamma)
    return loss, chosen_reward.detach(), rejected_reward.detach()


# --- the objective the recipe runs ----------------------------------------------------------


class PreferenceObjective:
    """What the recipe calls for a preference run: the reference cache, the gradient of one
    step's micro-batches and the validation loss."""

    def __init__(self, cfg: TrainConfig, model: torch.nn.Module, pad_id: int) -> None:
        self.cfg, self.model, self.pad_id = cfg, model, pad_id
        self.beta = cfg.effective_beta
        self.reference: dict[int, tuple[float, float]] = {}

    @property
    def needs_reference(self) -> bool:
        return self.cfg.training_method == "dpo"

    # The reference cache, carried by checkpoints (JSON floats round-trip exactly).
    def state(self) -> dict[str, Any]:
        cache = {str(i): list(v) for i, v in sorted(self.reference.items())}
        return {"reference_logps": cache} if self.needs_reference else {}

    def load_state(self, state: dict[str, Any]) -> None:
        saved = state.get("reference_logps") or {}
        self.reference = {int(i): (float(c), float(r)) for i, (c, r) in saved.items()}

    def _reference_mode(self) -> Any:
        """The reference: a fresh adapter disabled (the base alone), or the starting
        adapter as it is before the first step."""
        if self.cfg.init_adapter:
            return nullcontext()
        return self.model.disable_adapter()

    def uncached(self, pairs: list[Pair]) -> int:
        """How many of `pairs` cache_reference has still to compute."""
        return sum(p.index not in self.reference for p in pairs) if self.needs_reference else 0

    @torch.no_grad()
    def cache_reference(
        self,
        pairs: list[Pair],
        should_stop: Callable[[], bool] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        """Reference log-probabilities of every pair not cached yet, batch by batch; returns
        early when should_stop says so (the recipe then checkpoints what is cached)."""
        if not self.needs_reference:
            return
        todo = [p for p in pairs if p.index not in self.reference]
        was_training = self.model.training
        self.model.eval()  # no dropout in the reference
        try:
            for start in range(0, len(todo), self.cfg.batch_size):
                if should_stop is not None and should_stop():
                    return
                batch = todo[start : start + self.cfg.batch_size]
                with self._reference_mode():
                    logps, _ = self._logps(batch)
                chosen, rejected = logps.tolist()[: len(batch)], logps.tolist()[len(batch) :]
                for pair, c, r in zip(batch, chosen, rejected, strict=True):
                    self.reference[pair.index] = (c, r)
                if progress is not None:
                    progress(min(start + len(batch), len(todo)), len(todo))
        finally:
            self.model.train(was_training)

    def _logps(self, pairs: list[Pair]) -> tuple[torch.Tensor, torch.Tensor]:
        sequences = [p.chosen for p in pairs] + [p.rejected for p in pairs]
        return sequence_logps(self.model, sequences, self.pad_id)

    def losses(self, pairs: list[Pair]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-pair preference loss and the chosen and rejected rewards under the policy."""
        loss, chosen, rejected, _ = self.terms(pairs)
        return loss, chosen, rejected

    def terms(
        self, pairs: list[Pair]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """losses(), and each preferred answer's negative log-likelihood summed over its
        tokens (the rpo_alpha term's numerator)."""
        logps, tokens = self._logps(pairs)
        chosen, rejected = logps.chunk(2)
        if self.cfg.training_method == "simpo":
            n_chosen, n_rejected = tokens.chunk(2)
            loss, r_chosen, r_rejected = simpo_loss(
                chosen, rejected, n_chosen, n_rejected, self.beta, self.cfg.simpo_gamma
            )
        else:
            ref = torch.tensor([self.reference[p.index] for p in pairs], device=chosen.device)
            loss, r_chosen, r_rejected = dpo_loss(chosen, rejected, ref[:, 0], ref[:, 1], self.beta)
        return loss, r_chosen, r_rejected, -chosen

    @property
    def nll_weight(self) -> float:
        """rpo_alpha in DPO runs; SimPO has no NLL term here."""
        return self.cfg.rpo_alpha if self.cfg.training_method == "dpo" else 0.0

    def _objective(
        self, loss: torch.Tensor, nll: torch.Tensor, n_pairs: int, n_tokens: int
    ) -> torch.Tensor:
        """One micro-batch's share of the step's loss: the mean preference loss over the
        step's pairs, plus rpo_alpha times the NLL per preferred-answer token over the whole
        step (as TRL: its "sft" term is the mean over every chosen token of the batch, not a
        mean of per-answer means)."""
        total = loss.sum() / n_pairs
        if self.nll_weight:
            total = total + self.nll_weight * nll.sum() / max(n_tokens, 1)
        return total

    def accumulate(self, micro_batches: list[list[Pair]]) -> tuple[float, int, dict[str, float]]:
        """Backpropagate the step's loss over every pair of its micro-batches; returns it,
        the tokens processed and the step's mean rewards, margin and accuracy."""
        pairs = [pair for micro in micro_batches for pair in micro]
        n_pairs, n_chosen = max(len(pairs), 1), sum(p.chosen.n_trained for p in pairs)
        total, sums = 0.0, dict.fromkeys(REWARDS, 0.0)
        for micro in micro_batches:
            loss, chosen, rejected, nll = self.terms(micro)
            objective = self._objective(loss, nll, n_pairs, n_chosen)
            objective.backward()
            total += float(objective.detach())
            _add_rewards(sums, chosen, rejected)
        tokens = sum(len(pair) for pair in pairs)
        return total, tokens, {k: v / n_pairs for k, v in sums.items()}

    @torch.no_grad()
    def evaluate(self, pairs: list[Pair]) -> tuple[float | None, dict[str, float]]:
        """The loss over the validation pairs (as one step over all of them) and their mean
        rewards."""
        if not pairs:
            return None, {}
        self.model.eval()
        n_chosen = sum(p.chosen.n_trained for p in pairs)
        total, sums = 0.0, dict.fromkeys(REWARDS, 0.0)
        for start in range(0, len(pairs), self.cfg.batch_size):
            loss, chosen, rejected, nll = self.terms(pairs[start : start + self.cfg.batch_size])
            total += float(self._objective(loss, nll, len(pairs), n_chosen))
            _add_rewards(sums, chosen, rejected)
        self.model.train()
        return total, {k: v / len(pairs) for k, v in sums.items()}


def _add_rewards(sums: dict[str, float], chosen: torch.Tensor, rejected: torch.Tensor) -> None:
    sums["rewards/chosen"] += float(chosen.sum())
    sums["rewards/rejected"] += float(rejected.sum())
    sums["rewards/margins"] += float((chosen - rejected).sum())
    sums["rewards/accuracies"] += float((chosen > rejected).float().sum())


__all__ = ["Pair", "PreferenceObjective", "dpo_loss", "prepare_pairs", "simpo_loss"]
