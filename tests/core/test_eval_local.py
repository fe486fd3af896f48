"""Eval sets, reference metrics and a local judge on the tiny random model; run + export + CLI."""

from __future__ import annotations

import json

import pytest

from finetune_core.cli import main
from finetune_core.data.types import Message
from finetune_core.errors import DataError
from finetune_core.evaluate import (
    Candidate,
    Judge,
    LocalBackend,
    ModelPool,
    exact_match,
    from_bigbench,
    from_dataset,
    from_prompt_file,
    make_item,
    normalize_answer,
    run_evaluation,
    write_csv,
    write_json,
)
from finetune_core.evaluate.metrics import _choice_batch, choice_accuracy, validation_loss
from finetune_core.evaluate.sets import EvalSet


def test_bigbench_sets_keep_choices_and_stable_ids() -> None:
    es = from_bigbench("sports_understanding")
    first = es.items[0]
    assert len(es) == 1000 and first.category == "sports_understanding"
    assert set(first.choices) == {"plausible", "implausible"} and first.references == ("plausible",)
    assert (
        first.messages[0].content.startswith("Determine whether")
        and "Jamal Murray" in first.prompt_text
    )
    assert [i.id for i in from_bigbench("sports_understanding").head(5)] == [
        i.id for i in es.head(5)
    ]
    assert len({i.id for i in es}) == len(es)
    arith = from_bigbench("arithmetic-2_digit_addition").head(3)
    assert arith.output_regex and arith.items[0].references[0] == "109" and len(arith) == 3


def test_prompt_file_and_dataset_split(tmp_path) -> None:
    f = tmp_path / "p.jsonl"
    lines = [
        {"prompt": "Capital of France?", "reference": "Paris", "category": "geo"},
        {"prompt": "2+2?", "references": ["4", "four"], "system": "Be brief."},
        {"messages": [{"role": "user", "content": "hi"}]},
    ]
    f.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    es = from_prompt_file(f)
    assert [i.references for i in es] == [("Paris",), ("4", "four"), ()]
    assert es.items[0].category == "geo" and es.items[1].messages[0].role == "system"
    f.write_text('{"prompt": "ok"}\n{"reference": "x"}\n')
    with pytest.raises(DataError, match="line 2"):
        from_prompt_file(f)
    data = tmp_path / "train.jsonl"
    rows = [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(20)]
    data.write_text("\n".join(json.dumps(r) for r in rows))
    val = from_dataset(data, val_fraction=0.2)
    assert len(val) == 4 and all(i.references[0] == "a" + i.prompt_text[1:] for i in val)


@pytest.mark.parametrize(
    ("prediction", "refs", "hit"),
    [
        ("The answer is Paris.", ["Paris"], False),
        ("  paris. ", ["Paris"], True),
        ("The Eiffel tower!", ["eiffel tower"], True),
        ("an apple", ["Apple"], True),
        ("THREE", ["three", "3"], True),
        ("3", ["three", "3"], True),
        ("three apples", ["three"], False),
        ("", ["x"], False),
    ],
)
def test_exact_match_normalisation(prediction: str, refs: list[str], hit: bool) -> None:
    assert exact_match(prediction, refs) is hit


def test_exact_match_with_output_regex() -> None:
    assert normalize_answer("  A  Tale, of the\tCity ") == "tale of city"
    assert (
        exact_match("80 plus 29 is 109.", ["109"], regex=r"[-+]?\d+") is False
    )  # first number: 80
    assert exact_match("It is 109.", ["109"], regex=r"[-+]?\d+") is True


def test_choice_accuracy_picks_the_most_likely_choice(pool: ModelPool) -> None:
    chat = pool.get("tiny-llama")
    item = make_item(
        [Message("user", "Is it plausible?")],
        ["plausible"],
        ["plausible", "implausible", "maybe not"],
    )
    logps = _choice_batch(chat, item)
    # Padding the batch changes nothing: each choice scored alone gives the same value.
    for choice, lp in zip(item.choices, logps, strict=True):
        alone = make_item(item.messages, item.references, [choice, choice])
        assert _choice_batch(chat, alone)[0] == pytest.approx(lp, abs=1e-4)
    es = EvalSet("t", [item])
    got = choice_accuracy(chat, es)
    best = item.choices[logps.index(max(logps))]
    assert got["picks"][item.id] == best and got["value"] == float(best == "plausible")


def test_validation_loss_and_perplexity(pool: ModelPool) -> None:
    es = EvalSet(
        "t", [make_item([Message("user", f"q {i}")], [f"answer number {i}"]) for i in range(3)]
    )
    got = validation_loss(pool.get("tiny-llama"), es)
    loss, ppl = got["loss"], got["perplexity"]
    assert loss["n"] == 3 and got["tokens"] > 0 and 0 < loss["value"] < 20
    assert ppl["value"] == pytest.approx(2.718281828 ** loss["value"], rel=1e-6)
    assert loss["low"] <= loss["value"] <= loss["high"]


def test_free_text_local_judge_records_garbage_as_errors(pool: ModelPool) -> None:
    # Unconstrained, the random model writes no verdict (the free-text path an API judge
    # takes): every judgment is retried once, then kept as an error.
    es = EvalSet("t", [make_item([Message("user", "hi")])])
    from finetune_core.evaluate import Answer

    answers = {"x": {es.items[0].id: Answer("hello")}, "y": {es.items[0].id: Answer("hey")}}
    backend = LocalBackend(pool.get("tiny-llama"), constrained=False)
    judge = Judge(backend, max_tokens=8)
    (result,) = judge.compare(es, answers)
    assert not judge.constrained and result.outcome == "error" and backend.calls == 4
    assert result.ab.status == "unparseable" and result.ab.attempts == 2
    assert not result.ab.constrained and result.ab.probabilities is None


def test_run_export_and_cli(pool: ModelPool, tmp_path) -> None:
    es = from_bigbench("sports_understanding").head(2)
    cands = [
        Candidate("base", "tiny-llama", label="one"),
        Candidate("base", "tiny-llama", label="two"),
    ]
    from finetune_core.evaluate import AnswerCache, Decoding

    result = run_evaluation(
        es,
        cands,
        judge=Judge(LocalBackend(pool.get("tiny-llama")), max_tokens=4),
        mode="both",
        decoding=Decoding(max_new_tokens=4),
        cache=AnswerCache(tmp_path / "c.sqlite"),
        pool=pool,
        n_boot=50,
    )
    assert result["answers_generated"] == 2  # "two" hit the answers "one" made
    assert set(result["metrics"]["one"]) == {"exact_match", "choice_accuracy", "loss", "perplexity"}
    # The local judge is constrained by default: every verdict parses, none is an error.
    assert result["pairs"][0]["errors"] == 0 and result["pairs"][0]["n"] == 2
    assert result["judge"]["constrained"] and len(result["grades"]) == 4
    assert all(j[o]["constrained"] for j in result["judgments"] for o in ("ab", "ba"))
    assert all(g["status"] == "ok" and 1 <= g["rating"] <= 10 for g in result["grades"])
    write_json(result, tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())["eval_set"]["n_items"] == 2
    names = sorted(p.name for p in write_csv(result, tmp_path / "r"))
    assert names == [f"r.{n}.csv" for n in ("answers", "grades", "judgments", "metrics", "pairs")]
    import csv

    with (tmp_path / "r.judgments.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and all(r["calibrated"] in ("a", "b", "tie") for r in rows)
    assert all(0 < float(r["confidence_ab"]) <= 1 for r in rows)
    assert result["pairs_calibrated"][0]["n"] == 2
    out = tmp_path / "cli.json"
    code = main(
        ["evaluate", "--task", "object_counting", "--limit", "2", "--candidate", "base:tiny-llama",
         "--judge", "none", "--metrics", "exact_match", "--max-new-tokens", "4", "--quantization",
         "none", "--cache", str(tmp_path / "c.sqlite"), "--out", str(out)]
    )  # fmt: skip
    assert (
        code == 0 and json.loads(out.read_text())["metrics"]["tiny-llama"]["exact_match"]["n"] == 2
    )


def test_length_sorted_batches_return_answers_in_item_order(pool: ModelPool) -> None:
    from finetune_core.evaluate import AnswerCache, Decoding, generate_answers

    # Lengths out of order, so sorting into batches moves items around.
    prompts = ["a much longer question about the rules of cricket", "hi", "what is 2+2?", "x y"]
    es = EvalSet("t", [make_item([Message("user", p)]) for p in prompts])
    cand = [Candidate("base", "tiny-llama")]
    dec = Decoding(max_new_tokens=5)
    got = {}
    for batch in (1, 3):
        answers = generate_answers(
            cand, es, decoding=dec, cache=AnswerCache(":memory:"), pool=pool, batch_size=batch
        )
        got[batch] = {i: a.text for i, a in answers["tiny-llama"].items()}
    assert list(got[3]) == [it.id for it in es] and got[3] == got[1]
    assert len(set(got[1].values())) > 1  # different prompts, different answers: a real check
