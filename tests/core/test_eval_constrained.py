"""Constrained local verdicts on the tiny random model: the verdict is the argmax of the
scored labels, its probabilities sum to 1 over the allowed set, and it always parses."""

from __future__ import annotations

import math

import pytest
import torch

from finetune_core.data.render import render_prompt
from finetune_core.data.types import Message
from finetune_core.evaluate import (
    PAIRWISE_REFERENCE_VERDICT_FIRST,
    Answer,
    Budget,
    Judge,
    LocalBackend,
    ModelPool,
    balanced_position,
    calibrated_pair_summary,
    make_item,
    parse_rating,
    parse_verdict,
)
from finetune_core.evaluate.constrained import (
    PAIRWISE_OPTIONS,
    RATING_OPTIONS,
    SAME_MARGIN,
    VerdictOptions,
    constrained_verdicts,
    cut_rationale,
    option_sequences,
)
from finetune_core.evaluate.sets import EvalSet
from finetune_core.infer.generate import as_messages


@pytest.fixture(scope="module")
def chat():  # -> ChatModel
    return ModelPool("none", torch.float32).get("tiny-llama")


CONVS = [
    [{"role": "user", "content": "Which answer is better? A: yes B: no"}],
    [
        {"role": "system", "content": "Judge fairly."},
        {"role": "user", "content": "Compare: 'Paris' and 'London, the capital of France'."},
    ],
    [{"role": "user", "content": "x"}],
]


def _reference_logprobs(chat, conv: list[dict], start: str, seqs: list[list[int]]) -> list[float]:
    """log p(seq | prompt + start), each scored alone by teacher forcing: no padding, no cache."""
    tok = chat.tokenizer
    prefix = (
        render_prompt(tok, as_messages(conv)) + tok(start, add_special_tokens=False)["input_ids"]
    )
    out = []
    for seq in seqs:
        ids = torch.tensor([prefix + seq])
        with torch.no_grad():
            logp = torch.log_softmax(chat.model(input_ids=ids).logits.float(), dim=-1)[0]
        out.append(sum(float(logp[len(prefix) - 1 + k, t]) for k, t in enumerate(seq)))
    return out


@pytest.mark.parametrize("options", [PAIRWISE_OPTIONS, RATING_OPTIONS])
def test_option_sequences_are_prefix_free(chat, options: VerdictOptions) -> None:
    seqs = option_sequences(chat.tokenizer, options)
    assert len(seqs) == len(options.labels) and all(seqs)
    for i, s in enumerate(seqs):
        assert not any(j != i and t[: len(s)] == s for j, t in enumerate(seqs))
    decoded = [chat.tokenizer.decode(s) for s in seqs]
    # Each sequence spells its label (a prefix label also gets the start of "]]").
    assert all(d.startswith(label) for d, label in zip(decoded, options.labels, strict=True))


@pytest.mark.parametrize(
    ("options", "rationales"),
    [
        (PAIRWISE_OPTIONS, None),
        (PAIRWISE_OPTIONS, ["A is shorter.", "B is wrong about the capital.", ""]),
        (RATING_OPTIONS, None),
        (RATING_OPTIONS, ["Mostly right.", "", "Too short to help anyone."]),
    ],
)
def test_constrained_verdict_is_the_argmax_of_scored_labels(
    chat, options: VerdictOptions, rationales: list[str] | None
) -> None:
    # Batch of 2 over 3 prompts of different lengths: left padding must change nothing.
    got = constrained_verdicts(chat, CONVS, options, rationales, batch_size=2)
    seqs = option_sequences(chat.tokenizer, options)
    parse = parse_verdict if options.kind == "pairwise" else parse_rating
    for n, (conv, verdict) in enumerate(zip(CONVS, got, strict=True)):
        rationale = rationales[n] if rationales else ""
        start = rationale + options.after_rationale if rationale else options.lead
        ref = _reference_logprobs(chat, conv, start, seqs)
        best = options.labels[max(range(len(ref)), key=ref.__getitem__)]
        assert verdict.label == best
        assert list(verdict.probabilities) == list(options.labels)
        assert math.fsum(verdict.probabilities.values()) == pytest.approx(1.0, abs=1e-9)
        total = math.log(sum(math.exp(v) for v in ref))
        for label, lp in zip(options.labels, ref, strict=True):
            assert verdict.logprobs[label] == pytest.approx(lp, abs=1e-3)
            assert verdict.probabilities[label] == pytest.approx(math.exp(lp - total), abs=1e-4)
        assert verdict.probabilities[verdict.label] == max(verdict.probabilities.values())
        # The recorded text reads back, through the free-text parser, as the chosen verdict.
        value = parse(verdict.text)
        assert value == (
            {"C": "tie"}.get(best, best) if options.kind == "pairwise" else float(best)
        )
        assert verdict.text.startswith(rationale)


def test_rationale_is_cut_before_the_judges_own_verdict() -> None:
    assert cut_rationale("A is better.  [[B]] no, [[A]]") == "A is better."
    assert cut_rationale("no verdict here \n") == "no verdict here"
    assert cut_rationale("[[A]]") == ""


def _pair_set(n: int) -> tuple[EvalSet, dict[str, dict[str, Answer]]]:
    items = [
        make_item([Message("user", f"Is {i} even?")], ["yes" if i % 2 == 0 else "no"])
        for i in range(n)
    ]
    es = EvalSet("t", items)
    answers = {
        "x": {it.id: Answer("yes") for it in items},
        "y": {it.id: Answer("no, it is odd") for it in items},
    }
    return es, answers


def test_local_judge_is_always_parseable_and_records_probabilities(chat) -> None:
    es, answers = _pair_set(3)
    backend = LocalBackend(chat, batch_size=4)
    judge = Judge(backend, max_tokens=6)
    results = judge.compare(es, answers)
    assert judge.constrained and backend.calls == 6  # both orders, no retries needed
    for r in results:
        for j in (r.ab, r.ba):
            assert j.status == "ok" and j.constrained and j.attempts == 1
            assert j.value in ("A", "B", "tie") and parse_verdict(j.raw) == j.value
            assert math.fsum(j.probabilities.values()) == pytest.approx(1.0)
            assert j.confidence == max(j.probabilities.values())
        # Swap logic holds on constrained verdicts: a flip is a tie flagged inconsistent.
        first = {"A": "a", "B": "b", "tie": "tie"}[r.ab.value]
        second = {"A": "b", "B": "a", "tie": "tie"}[r.ba.value]
        assert r.inconsistent == (first != second)
        assert r.outcome == (first if first == second else "tie")
    grades = judge.grade(es, answers)
    assert len(grades) == 6 and all(g.status == "ok" for g in grades)
    for g in grades:
        assert g.rating == parse_rating(g.judgment.raw) and 1 <= g.rating <= 10
        assert g.judgment.confidence == max(g.judgment.probabilities.values())


def test_verdict_first_judge_writes_no_rationale(chat) -> None:
    es, answers = _pair_set(2)
    judge = Judge(LocalBackend(chat), verdict_first=True)
    results = judge.compare(es, answers)
    assert all(r.prompt_version == PAIRWISE_REFERENCE_VERDICT_FIRST.version for r in results)
    for r in results:
        for j in (r.ab, r.ba):
            # Only the verdict: "[[X]]" with no generated text before it.
            assert j.raw == f"[[{ {'tie': 'C'}.get(j.value, j.value) }]]"
            assert j.constrained and j.status == "ok"


def test_call_limit_skips_constrained_judgments(chat) -> None:
    es, answers = _pair_set(2)
    backend = LocalBackend(chat, budget=Budget(max_calls=2))
    first, second = Judge(backend, verdict_first=True).compare(es, answers)
    assert first.ab.status == first.ba.status == "ok" and first.outcome in ("a", "b", "tie")
    assert second.outcome == "skipped_limit" and backend.calls == 2


def test_rationale_goes_through_generate_and_batches_are_reported(chat) -> None:
    # Constrained judging writes its rationale with the backend's own generation, stopped
    # where a verdict begins, and reports each finished batch to the judge's on_progress.
    seen: list[int] = []
    reported: list[tuple[int, int]] = []
    stops: list[object] = []

    class Counting(LocalBackend):
        def _generate(self, conversations: list, *args: object) -> list:
            seen.append(len(conversations))
            stops.append(args[-1])
            return super()._generate(conversations, *args)

    es, answers = _pair_set(3)
    results = Judge(Counting(chat, batch_size=4), max_tokens=4).compare(
        es, answers, on_progress=lambda done, total: reported.append((done, total))
    )
    assert reported == [(0, 6), (4, 6), (6, 6)]
    assert sum(seen) == 6 and all(r.ab.status == r.ba.status == "ok" for r in results)
    assert set(stops) == {("[[",)}  # a rationale ends where the judge begins a verdict


def test_balanced_position_cancels_a_constant_first_slot_bias() -> None:
    # The judge says A in both orders (a strict-swap tie), but prefers A more when a is A.
    ab, ba = {"A": 0.9, "B": 0.08, "C": 0.02}, {"A": 0.7, "B": 0.25, "C": 0.05}
    outcome, probs = balanced_position(ab, ba)
    assert outcome == "a" and math.fsum(probs.values()) == pytest.approx(1.0)
    assert probs["a"] == pytest.approx((0.9 + 0.25) / 2) and probs["b"] == pytest.approx(0.39)
    assert balanced_position(ba, ab)[0] == "b"  # swapping the orders swaps the winner
    assert (
        balanced_position({"A": 0.1, "B": 0.1, "C": 0.8}, {"A": 0.2, "B": 0.2, "C": 0.6})[0]
        == "tie"
    )
    assert balanced_position(None, ba) is None and balanced_position({"7": 1.0}, ba) is None
    # Identical answers: the same prompt in both orders. Equal (or noise-close) a and b are
    # a tie, not a win for whichever candidate is listed first.
    same = {"A": 0.95, "B": 0.02, "C": 0.03}
    assert balanced_position(same, same)[0] == "tie"
    noisy = {"A": 0.95 + 2e-5, "B": 0.02 - 2e-5, "C": 0.03}
    assert balanced_position(same, noisy)[0] == "tie"
    assert balanced_position(same, {"A": 0.9495, "B": 0.0205, "C": 0.03})[0] == "a"  # 5e-4


def test_compare_records_calibrated_outcomes(chat) -> None:
    es, answers = _pair_set(3)
    results = Judge(LocalBackend(chat), verdict_first=True).compare(es, answers)
    for r in results:
        outcome, probs = balanced_position(r.ab.probabilities, r.ba.probabilities)
        best = max(probs, key=probs.get) if abs(probs["a"] - probs["b"]) > SAME_MARGIN else "tie"
        assert r.calibrated == outcome == best
        assert r.calibrated_probabilities == probs
    (row,) = calibrated_pair_summary(results, n_boot=20)
    assert row["wins"] + row["ties"] + row["losses"] == 3 and row["inconsistent"] == 0
    assert row["wins"] == sum(r.calibrated == "a" for r in results)
