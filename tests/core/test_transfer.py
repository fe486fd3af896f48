"""Trans-LoRA on the tiny random models: prompt format, item cutting, discriminator rows,
rejection-sampling bookkeeping with a real tiny discriminator, distillation pairs, and an
end-to-end tiny-llama -> tiny-llama-wide transfer."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from finetune_core.data import Example, Message, bigbench_task_path, read_examples
from finetune_core.data.render import render_prompt
from finetune_core.errors import FinetuneError
from finetune_core.infer import generate, load_chat_model
from finetune_core.models.loading import end_of_turn_ids
from finetune_core.train import TrainConfig, train
from finetune_core.transfer import (
    Discriminator,
    DiscriminatorConfig,
    Hooks,
    TransferConfig,
    TransferStopped,
    cut_at_item,
    format_table,
    list_prompt,
    load_discriminator,
    load_seeds,
    select_seeds,
    synthesize,
    train_discriminator,
    transfer,
)
from finetune_core.transfer.discriminator import (
    discriminator_examples,
    question_prompt,
    recall_threshold,
    write_discriminator_data,
    write_info,
)
from finetune_core.transfer.sampling import item_token_budget
from finetune_core.transfer.seeds import exact_match, normalize, task_input
from finetune_core.transfer.source import QV, run_adapter
from finetune_core.transfer.student import (
    answer_confidence,
    confident_pairs,
    distillation_examples,
    most_confident,
    parse_target_modules,
    teacher_answers,
    teacher_filter,
    with_source_shape,
)

TASK = "arithmetic-2_digit_addition"
FAST = {"eval_every": 1000, "save_every": 1000, "warmup_ratio": 0.0}


def qa(x: str, a: str) -> Example:
    return Example(messages=(Message("user", x), Message("assistant", a)), references=(a,))


def test_list_prompt_is_the_papers_format() -> None:
    seeds = ["What is 1 plus 2?", "What is 3 plus 4?", "a", "b", "c"]
    assert list_prompt(seeds) == (
        "Here are 10 examples:\n1. What is 1 plus 2?\n2. What is 3 plus 4?\n3. a\n4. b\n5. c\n6."
    )


@pytest.mark.parametrize(
    ("raw", "item"),
    [
        (" foo\n7. bar", "foo"),
        ("foo 7. bar", "foo 7. bar"),  # a number inside the line is not a new item
        ("foo\n  8. bar\n9. baz", "foo"),
        ("two\nlines\n7.", "two\nlines"),
        ("  foo  \n\t ", "foo"),
        ("", ""),
        ("\n7. only the next item", ""),
    ],
)
def test_cut_at_next_item_number(raw: str, item: str) -> None:
    assert cut_at_item(raw) == item


def test_normalised_exact_match_accepts_any_reference() -> None:
    assert normalize("  Plausible. ") == "plausible"
    assert exact_match("109!", ("108", "109"))
    assert not exact_match("1 09", ("109",))


def test_discriminator_rows_label_real_yes_and_synthetic_no(tmp_path: Path) -> None:
    assert question_prompt("What is 1 plus 2?", "t") == (
        "What is 1 plus 2?\n Is the above question from t dataset?"
    )
    path = tmp_path / "d.jsonl"
    assert write_discriminator_data(["r1", "r2"], ["s1"], "arith", path) == 3
    rows = [json.loads(line)["messages"] for line in path.read_text().splitlines()]
    labels = {m[0]["content"]: m[1]["content"] for m in rows}
    suffix = "\n Is the above question from arith dataset?"
    assert labels == {"r1" + suffix: "yes", "r2" + suffix: "yes", "s1" + suffix: "no"}
    assert all([m["role"] for m in r] == ["user", "assistant"] for r in rows)
    assert len(discriminator_examples(["a"], ["b", "c"], "t")) == 3


def test_distillation_pairs_are_chat_examples_of_input_and_teacher_answer() -> None:
    seed = qa("What is 1 plus 1?", "2")
    pairs = distillation_examples(["x1", "x2", "x3"], ["a1", "  ", "a3"], [seed])
    assert [[(m.role, m.content) for m in e.messages] for e in pairs] == [
        [("user", "x1"), ("assistant", "a1")],
        [("user", "x3"), ("assistant", "a3")],  # an empty teacher answer teaches nothing
        [("user", "What is 1 plus 1?"), ("assistant", "2")],
    ]


def test_item_budget_is_twice_the_longest_input_within_bounds() -> None:
    tok = load_chat_model("tiny-llama", quantization="none").tokenizer
    question = "What is 12 plus 34? " * 4
    n = len(tok(question, add_special_tokens=False)["input_ids"])
    assert n > 8
    assert item_token_budget(tok, ["a", question]) == max(16, 2 * n)
    assert item_token_budget(tok, [question], factor=1.5, cap=20) == 20
    assert item_token_budget(tok, ["a"]) == 16  # a one-word task still gets room


def test_most_confident_keeps_that_share_in_order() -> None:
    conf = [-0.1, -2.0, -0.5, float("-inf"), -0.05]
    assert most_confident(conf, 1.0) == [0, 1, 2, 3, 4]
    assert most_confident(conf, 0.6) == [0, 2, 4]  # 3 of 5, back in their own order
    assert most_confident(conf, 0.01) == [4]  # never none
    assert most_confident([], 0.5) == []
    pairs = confident_pairs(["a", "b", "c", "d", "e"], ["1", "2", "3", "", "5"], conf, 0.6)
    assert [e.messages[0].content for e in pairs] == ["a", "c", "e"]
    report = teacher_filter(["a", "b", "c", "d", "e"], ["1", "2", "3", "", "5"], conf, 0.6)
    assert report["kept"] == 3 and report["answers"] == 5 and report["keep"] == 0.6
    assert [d["input"] for d in report["sample_dropped"]] == ["d", "b"]  # least sure first


def test_the_teacher_is_surer_of_its_own_answers_and_batching_changes_nothing() -> None:
    # fp32 on every CPU: the comparisons below are to 1e-4, finer than bf16's rounding.
    chat = load_chat_model("tiny-llama", quantization="none", compute_dtype=torch.float32)
    inputs = ["What is 1 plus 1?", "Name a colour, please, in one word.", "Hi"]
    own = [g.text for g in generate(chat, [[{"role": "user", "content": x}] for x in inputs],
                                    max_new_tokens=4)]  # fmt: skip
    assert any(o.strip() for o in own)
    other = ["zebra quantum", "7 7 7 7", "ok"]
    surer = answer_confidence(chat, inputs, own, batch_size=3)
    assert all(c <= 0 for c in surer)
    assert surer == pytest.approx(answer_confidence(chat, inputs, own, batch_size=1), abs=1e-4)
    less = answer_confidence(chat, inputs, other)
    assert all(a > b for a, b, o in zip(surer, less, own, strict=True) if o.strip())
    assert answer_confidence(chat, ["x"], [""]) == [float("-inf")]
    # Measured while writing (batched, left-padded), the teacher's confidence is the
    # teacher-forced mean over the very tokens it wrote, one row at a time.
    answers, sure = teacher_answers(chat, inputs, max_new_tokens=4, batch_size=2)
    assert answers == [o.strip() for o in own]
    assert sure == pytest.approx([_forced_mean(chat, x, 4) for x in inputs], abs=1e-4)


def _forced_mean(chat: Any, x: str, n: int) -> float:
    """Greedy-generate n tokens alone, then score them with one plain forward pass."""
    prompt = render_prompt(chat.tokenizer, [Message("user", x)])
    ids = torch.tensor([prompt])
    new = chat.model.generate(input_ids=ids, max_new_tokens=n, do_sample=False)[0, len(prompt) :]
    new = new[~torch.isin(new, torch.tensor(end_of_turn_ids(chat.tokenizer)))][:n]
    with torch.no_grad():
        logits = chat.model(input_ids=torch.cat([ids[0], new])[None]).logits[0]
    picked = logits[len(prompt) - 1 : -1].log_softmax(-1).gather(1, new[:, None])
    return picked.mean().item()


def test_seeds_are_distinct_and_reproducible() -> None:
    examples = [qa(f"q{i % 4}", str(i)) for i in range(12)]
    seeds = select_seeds(examples, k=4, seed=3)
    assert len({s.messages[0].content for s in seeds}) == 4
    assert select_seeds(examples, k=4, seed=3) == seeds
    with pytest.raises(Exception, match="distinct"):
        select_seeds(examples, k=5)


@pytest.fixture(scope="module")
def source_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny source adapter trained for a few steps on 30 arithmetic examples."""
    run = tmp_path_factory.mktemp("transfer") / "source"
    cfg = TrainConfig(
        model="tiny-llama",
        data=str(bigbench_task_path(TASK)),
        output_dir=str(run),
        limit_examples=30,
        val_fraction=0.2,
        max_steps=2,
        batch_size=4,
        max_length=64,
        learning_rate=5e-3,
        quantization="none",
        **FAST,
    )
    assert train(cfg).status == "succeeded"
    return run


@pytest.fixture(scope="module")
def discriminator_run(source_run: Path) -> dict:
    return train_discriminator(
        DiscriminatorConfig(
            run=str(source_run),
            n_real=6,
            max_new_tokens=12,
            max_length=160,
            learning_rate=5e-3,
            quantization="none",
            train_overrides={"max_steps": 2, **FAST},
        )
    )


def test_discriminator_is_stored_beside_the_source_adapter(
    source_run: Path, discriminator_run: dict
) -> None:
    folder = source_run / "discriminator"
    assert (folder / "adapter" / "adapter_config.json").exists()
    info = json.loads((folder / "discriminator.json").read_text())
    assert info["task"] == TASK and info["source_model"] == "tiny-llama"
    assert info["question"] == "\n Is the above question from {task} dataset?"
    assert info["real"] == 6 and 1 <= info["synthetic"] <= 6
    seeds = load_seeds(source_run / "transfer")
    assert len(seeds) == 5 and all(s.messages[-1].role == "assistant" for s in seeds)
    rows = list(read_examples(source_run / "transfer" / "discriminator_data.jsonl", fmt="chat"))
    assert sum(r.messages[1].content == "yes" for r in rows) == 6


@pytest.mark.parametrize(
    ("margins", "recall", "passing"),
    [
        ([float(m) for m in range(1, 11)], 0.8, 8),
        ([float(m) for m in range(1, 11)], 1.0, 10),
        ([float(m) for m in range(10, 0, -1)], 0.35, 4),  # at least that share; any order
        ([-3.0, -2.0, -1.0, 2.0], 0.9, 1),  # never looser than p(yes) > p(no)
    ],
)
def test_recall_threshold_keeps_that_share_of_real_inputs(
    margins: list[float], recall: float, passing: int
) -> None:
    threshold = recall_threshold(margins, recall)
    assert threshold >= 0
    assert sum(m > threshold for m in margins) == passing


@pytest.mark.parametrize("recall", [0.0, -0.5, 1.5])
def test_recall_threshold_rejects_a_share_outside_0_1(recall: float) -> None:
    with pytest.raises(FinetuneError, match="real_recall must be in"):
        recall_threshold([1.0, 2.0], recall)


def test_discriminator_scores_held_out_real_inputs_and_filters_stricter(
    source_run: Path, discriminator_run: dict
) -> None:
    # 30 examples: 24 train (6 of them trained on) + 6 validation -> 24 never seen. Only
    # their margins are kept: the inputs themselves are customer data.
    calibration = discriminator_run["calibration"]
    info = json.loads((source_run / "discriminator" / "discriminator.json").read_text())
    assert info["calibration"] == calibration and calibration["n"] == 24
    assert set(calibration) == {"n", "margins", "accepted_at_0"}
    margins = calibration["margins"]
    assert margins == sorted(margins)
    strict = load_discriminator(source_run / "discriminator", quantization="none", real_recall=0.5)
    assert strict.threshold == recall_threshold(margins, 0.5) >= 0
    rows = [s.messages[0].content for s in load_seeds(source_run / "transfer")] + ["1 + 1 ="]
    scored = strict.margins(rows)
    assert strict.accepts(rows) == [m > strict.threshold for m in scored]


def test_a_stricter_filter_needs_the_calibration_margins(yes_run: Path) -> None:
    with pytest.raises(FinetuneError, match="kept no margins of held-out real inputs"):
        load_discriminator(yes_run / "discriminator", quantization="none", real_recall=0.9)
    with pytest.raises(FinetuneError, match="real_recall must be in"):
        TransferConfig(run=str(yes_run), target="t", output_dir="o", real_recall=2.0).validate()


def test_yes_and_no_are_told_apart_by_distinct_first_tokens(discriminator_run: dict) -> None:
    disc = Discriminator.from_chat(load_chat_model("tiny-llama", quantization="none"), TASK)
    assert disc.yes_ids and disc.no_ids and not set(disc.yes_ids) & set(disc.no_ids)


def test_rejection_sampling_bookkeeping(source_run: Path, discriminator_run: dict) -> None:
    disc = load_discriminator(source_run / "discriminator", quantization="none")
    target = load_chat_model("tiny-llama-wide", quantization="none")
    seeds = [s.messages[0].content for s in load_seeds(source_run / "transfer")]
    for discriminator in (disc, None):
        got = synthesize(
            target, seeds, 3, discriminator=discriminator, max_attempts=7, batch_size=4,
            max_new_tokens=8, seed=1,
        )  # fmt: skip
        assert got.attempts <= 7 and len(got.accepted) <= min(3, got.attempts)
        assert got.attempts == len(got.accepted) + got.empty + got.duplicates + got.rejected
        assert got.acceptance_rate == len(got.accepted) / got.attempts
        assert len(got.accepted) == 3 or got.attempts == 7  # stops at N or at the budget
        assert len(set(got.accepted)) == len(got.accepted)
        assert not set(got.accepted) & set(seeds)
        assert all(a and a == a.strip() for a in got.accepted)
        assert got.filtered == (discriminator is not None)
        if discriminator is None:
            assert got.rejected == 0
        else:
            margins = disc.margins(got.accepted + got.rejected_samples)
            assert [m > 0 for m in margins] == [True] * len(got.accepted) + [False] * got.rejected


@pytest.fixture(scope="module")
def yes_run(
    source_run: Path, discriminator_run: dict, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The source run with a discriminator that learned to say "yes" (real rows only): it
    keeps the tiny target's gibberish, so every phase runs; the real objective is tested
    above."""
    run = tmp_path_factory.mktemp("yes") / "run"
    shutil.copytree(source_run, run, ignore=shutil.ignore_patterns("checkpoint*", "discriminator"))
    seeds = [s.messages[0].content for s in load_seeds(run / "transfer")]
    data = run.parent / "yes.jsonl"
    write_discriminator_data(seeds * 4, [], TASK, data)
    train(
        TrainConfig(
            model="tiny-llama", data=str(data), output_dir=str(run / "discriminator"),
            target_modules=["q_proj", "v_proj"], max_steps=6, learning_rate=2e-2,
            quantization="none", max_length=160, val_fraction=0.0, batch_size=4, **FAST,
        )
    )  # fmt: skip
    write_info(run / "discriminator", task=TASK, source_model="tiny-llama")
    return run


def test_end_to_end_tiny_transfer(yes_run: Path, tmp_path: Path) -> None:
    run = yes_run
    report = transfer(
        TransferConfig(
            run=str(run), target="tiny-llama-wide", output_dir=str(tmp_path / "out"),
            n_synthetic=4, max_attempts=8, teacher_max_new_tokens=6,
            eval_max_new_tokens=6, eval_limit=4, max_steps=2, max_length=128,
            learning_rate=5e-3, quantization="none", ablations=("seeds_only",),
        )
    )  # fmt: skip
    adapter = Path(report["adapter"])
    # Rank and targets left unset: the student takes the source adapter's shape.
    student = json.loads((adapter / "adapter_config.json").read_text())
    source = json.loads((run_adapter(run) / "adapter_config.json").read_text())
    assert student["r"] == source["r"] and student["target_modules"]
    assert sorted(student["target_modules"]) == sorted(source["target_modules"])
    assert report["config"]["lora_r"] == source["r"]
    assert set(report["accuracy"]) == {
        "source_adapter", "target_base", "transferred", "ablation_seeds_only",
    }  # fmt: skip
    for r in report["accuracy"].values():
        assert r["n"] == 4 and 0 <= r["accuracy"] <= 1
    s = report["synthesis"]
    assert s["filtered"] and s["accepted"] >= 1 and s["acceptance_rate"] > 0
    assert s["filter"] == {"threshold": 0.0, "real_recall": None, "real_passing": None}
    # Tokens per candidate left unset: twice the longest seed's, in the target's tokens.
    target = load_chat_model("tiny-llama-wide", quantization="none").tokenizer
    seeds = [task_input(x) for x in load_seeds(run / "transfer")]
    assert s["max_new_tokens"] == item_token_budget(target, seeds) >= 16
    assert report["distillation_pairs"] >= 5  # the seeds join the teacher's pairs
    assert report["teacher_filter"]["kept"] == report["teacher_filter"]["answers"] == 4
    for phase in ("synthesize", "teacher", "train_transferred", "eval_transferred"):
        assert report["phase_seconds"][phase] >= 0
    assert json.loads((tmp_path / "out" / "report.json").read_text())["adapter"] == str(adapter)
    assert "transferred" in format_table(report)


def test_the_teacher_confidence_filter_retrains_only_the_student(
    yes_run: Path, tmp_path: Path
) -> None:
    cfg = TransferConfig(
        run=str(yes_run), target="tiny-llama-wide", output_dir=str(tmp_path / "out"),
        n_synthetic=4, max_attempts=8, teacher_max_new_tokens=6, eval_max_new_tokens=6,
        eval_limit=2, max_steps=1, max_length=128, quantization="none",
    )  # fmt: skip
    first = transfer(replace(cfg, teacher_keep=0.75))
    assert "teacher_confidence" not in first["phase_seconds"]  # measured while writing
    assert first["teacher_filter"]["kept"] == 3
    out = tmp_path / "out"
    saved = json.loads((out / "teacher.json").read_text())
    answers, confidence = saved["main"], saved["confidence"]["main"]  # measured while writing
    assert len(confidence) == len(answers) == 4 and all(c <= 0 for c in confidence)
    report = transfer(replace(cfg, teacher_keep=0.5), resume=True)
    assert {"synthesis", "teacher", "eval_target_base"} <= set(report["reused"])
    assert "train_transferred" not in report["reused"]  # a student setting: trained again
    assert "teacher_confidence" not in report["phase_seconds"]  # no second pass
    kept = most_confident(confidence, 0.5)
    assert report["teacher_filter"]["kept"] == len(kept) == 2
    assert report["distillation_pairs"] == sum(bool(answers[i].strip()) for i in kept) + 5
    # Answers an older run saved without it are scored by a teacher-forced pass.
    older = {k: v for k, v in saved.items() if k != "confidence"}
    (out / "teacher.json").write_text(json.dumps(older))
    again = transfer(replace(cfg, teacher_keep=0.6), resume=True)
    assert again["phase_seconds"]["teacher_confidence"] >= 0 and "teacher" in again["reused"]
    rescored = json.loads((out / "teacher.json").read_text())["confidence"]["main"]
    teacher = load_chat_model("tiny-llama", adapter=str(run_adapter(yes_run)), quantization="none")
    inputs = json.loads((out / "synthesis.json").read_text())["inputs"]
    assert rescored == pytest.approx(answer_confidence(teacher, inputs, answers), abs=1e-4)
    with pytest.raises(FinetuneError, match="teacher_keep"):
        transfer(replace(cfg, teacher_keep=0.0))


def test_student_shape_defaults_to_the_source_adapters() -> None:
    source = {"lora_r": 16, "target_modules": "all-linear"}
    unset = with_source_shape(TransferConfig(run="r", target="t", output_dir="o"), source)
    assert (unset.lora_r, unset.target_modules) == (16, "all-linear")
    paper = TransferConfig(run="r", target="t", output_dir="o", lora_r=8, target_modules=QV)
    assert with_source_shape(paper, source) == paper  # an explicit choice is kept
    older = with_source_shape(paper, {})  # a run config without them: kept as well
    assert (older.lora_r, older.target_modules) == (8, QV)
    parsed = [parse_target_modules(t) for t in (None, "", "all-linear", "q_proj,v_proj")]
    assert parsed == [None, None, "all-linear", QV]  # CLI, cell and bench read it alike


def test_tiny_transfer_with_logit_distillation(
    source_run: Path, discriminator_run: dict, tmp_path: Path
) -> None:
    # discriminator_run keeps the seeds beside the source adapter.
    # Unfiltered, so the tiny target's gibberish is kept; the student learns the teacher's
    # token distributions (one byte-level tokenizer for both tiny models).
    events: list[tuple[str, int, int | None, dict]] = []
    hooks = Hooks(progress=lambda phase, cur, tot, info: events.append((phase, cur, tot, info)))
    report = transfer(
        TransferConfig(
            run=str(source_run), target="tiny-llama-wide", output_dir=str(tmp_path / "out"),
            filtered=False, n_synthetic=3, max_attempts=6, sample_max_new_tokens=8,
            teacher_max_new_tokens=6, eval_max_new_tokens=4, eval_limit=2, max_steps=2,
            max_length=128, quantization="none", distillation="logits",
        ),
        hooks=hooks,
    )  # fmt: skip
    manifest = json.loads((Path(report["adapter"]).parent / "manifest.json").read_text())
    assert manifest["distillation"] == "logits" and manifest["steps"] == 2
    assert manifest["teacher"]["model"] == "tiny-llama"
    assert report["config"]["distillation"] == "logits"
    assert set(report["accuracy"]) == {"source_adapter", "target_base", "transferred"}
    # Live progress: each phase announces itself at 0, then counts up to its total.
    phases = [e[0] for e in events]
    assert phases[0] == "generate" and events[0][1:3] == (0, 6)
    order = list(dict.fromkeys(phases))
    assert order == ["generate", "evaluate", "teacher", "train"]
    teacher = [e for e in events if e[0] == "teacher"]
    assert teacher[0][1] == 0 and teacher[-1][1] == teacher[-1][2] >= 1
    assert [e[1] for e in events if e[0] == "train"] == [1, 2]
    scored = {e[3]["model"] for e in events if e[0] == "evaluate" and e[1] == e[2]}
    assert scored == {"source_adapter", "target_base", "transferred"}


def test_stopped_sampling_continues_where_it_stopped(
    source_run: Path, discriminator_run: dict
) -> None:
    target = load_chat_model("tiny-llama-wide", quantization="none")
    seeds = [s.messages[0].content for s in load_seeds(source_run / "transfer")]
    calls = iter([False, True])  # one batch, then stop
    kw = {"max_attempts": 12, "batch_size": 4, "max_new_tokens": 8, "seed": 1}
    first = synthesize(target, seeds, 12, should_stop=lambda: next(calls), **kw)
    assert first.stopped and first.attempts == 4
    accepted = list(first.accepted)
    more = synthesize(target, seeds, 12, start=first, **kw)
    assert not more.stopped and more.attempts == 12  # the budget counts both attempts
    assert more.accepted[: len(accepted)] == accepted
    assert len(set(more.accepted)) == len(more.accepted)  # nothing sampled twice is kept
    assert more.attempts == len(more.accepted) + more.empty + more.duplicates + more.rejected


def _tiny_transfer(run: Path, out: Path, seed: int = 0) -> TransferConfig:
    return TransferConfig(
        run=str(run), target="tiny-llama-wide", output_dir=str(out), n_synthetic=4,
        max_attempts=8, sample_max_new_tokens=8, teacher_max_new_tokens=6,
        eval_max_new_tokens=6, eval_limit=4, max_steps=2, max_length=128,
        learning_rate=5e-3, quantization="none", seed=seed,
    )  # fmt: skip


def test_a_stopped_transfer_resumes_from_the_phases_it_finished(
    yes_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    trained: list[int] = []

    def progress(phase: str, current: int, total: int | None, info: dict) -> None:
        if phase == "train":
            trained.append(current)

    # Attempt 1 stops after the student's first step (a cancel).
    stop = Hooks(progress=progress, should_stop=lambda: 1 in trained)
    with pytest.raises(TransferStopped):
        transfer(_tiny_transfer(yes_run, out), hooks=stop)
    synthesis = json.loads((out / "synthesis.json").read_text())
    teacher = json.loads((out / "teacher.json").read_text())
    assert set(json.loads((out / "accuracy.json").read_text())) == {
        "target_base", "source_adapter",
    }  # fmt: skip
    assert synthesis["inputs"] and len(teacher["main"]) == len(synthesis["inputs"])

    # Attempt 2 samples, answers and scores nothing again; the student goes on from step 1.
    events: list[tuple[str, int]] = []
    hooks = Hooks(progress=lambda phase, cur, tot, info: events.append((phase, cur)))
    report = transfer(_tiny_transfer(yes_run, out), hooks=hooks, resume=True)
    assert report["attempts"] == 2
    assert report["reused"] == ["synthesis", "eval_target_base", "teacher", "eval_source_adapter"]
    assert [c for p, c in events if p == "generate"] == [synthesis["attempts"]]
    assert [c for p, c in events if p == "train"][0] == 1  # from the checkpoint, not step 0
    assert len(report["sample_pairs"]) >= 1
    answered = dict(zip(synthesis["inputs"], teacher["main"], strict=True))
    assert all(
        answered.get(p["input"], p["teacher"]) == p["teacher"] for p in report["sample_pairs"]
    )
    kept = sum(bool(a.strip()) for a in teacher["main"])
    assert report["distillation_pairs"] == kept + 5  # the earlier answers, and the 5 seeds
    assert set(report["accuracy"]) == {"source_adapter", "target_base", "transferred"}
    assert report["phase_seconds"]["train_transferred"] > 0

    # Another learning rate retrains the students only; the data and base scores stay.
    retrained = transfer(replace(_tiny_transfer(yes_run, out), learning_rate=1e-3), resume=True)
    assert retrained["reused"] == report["reused"] and retrained["attempts"] == 3
    assert retrained["config"]["learning_rate"] == 1e-3
    manifest = json.loads((out / "transferred" / "manifest.json").read_text())
    assert manifest["hyperparameters"]["learning_rate"] == 1e-3

    # Other settings make the folder's phases stale: nothing is reused, nothing is mixed.
    again = transfer(_tiny_transfer(yes_run, out, seed=1), resume=True)
    assert again["reused"] == [] and again["attempts"] == 1


def test_a_stopped_discriminator_goes_on_from_its_checkpoint(
    source_run: Path, discriminator_run: dict, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(source_run, run, ignore=shutil.ignore_patterns("discriminator"))
    cfg = DiscriminatorConfig(
        run=str(run), n_real=6, max_new_tokens=12, max_length=160, learning_rate=5e-3,
        quantization="none", train_overrides={"max_steps": 3, **FAST},
    )  # fmt: skip
    steps: list[int] = []

    def progress(phase: str, current: int, total: int | None, info: dict) -> None:
        if phase == "train":
            steps.append(current)

    with pytest.raises(TransferStopped):  # a cancel, or stepping aside, after step 1
        train_discriminator(cfg, Hooks(progress=progress, should_stop=lambda: 1 in steps))
    events: list[tuple[str, int]] = []
    hooks = Hooks(progress=lambda phase, cur, tot, info: events.append((phase, cur)))
    summary = train_discriminator(cfg, hooks, resume=True)
    assert [p for p, _ in events if p == "generate"] == []  # its rows were kept
    assert [c for p, c in events if p == "train"][0] == 1  # from the checkpoint
    assert summary["steps"] == 3 and summary["rows"] == summary["real"] + summary["synthetic"]
    assert json.loads((run / "discriminator" / "discriminator.json").read_text())["steps"] == 3
    # Training settings alone: the same rows, trained again from step 0.
    rows = (run / "transfer" / "discriminator_data.jsonl").read_text()
    events.clear()
    retrained = train_discriminator(replace(cfg, learning_rate=1e-3), hooks, resume=True)
    assert [p for p, _ in events if p == "generate"] == []
    assert [c for p, c in events if p == "train"][0] == 0 and retrained["steps"] == 3
    assert (run / "transfer" / "discriminator_data.jsonl").read_text() == rows
    # Settings that decide the rows: sampled again, from step 0.
    events.clear()
    train_discriminator(replace(cfg, n_real=5), hooks, resume=True)
    assert events[0][0] == "generate" and [c for p, c in events if p == "train"][0] == 0


def test_a_crash_mid_sampling_resumes_from_the_last_batch(yes_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cfg = replace(_tiny_transfer(yes_run, out), sample_batch=2)

    def crash(phase: str, current: int, total: int | None, info: dict) -> None:
        if phase == "generate" and current >= 2:
            raise RuntimeError("the worker died")

    with pytest.raises(RuntimeError):
        transfer(cfg, hooks=Hooks(progress=crash))
    kept = json.loads((out / "synthesis.json").read_text())
    assert kept["stopped"] and kept["attempts"] == 2  # written after the batch, before the crash
    events: list[tuple[str, int]] = []
    hooks = Hooks(progress=lambda phase, cur, tot, info: events.append((phase, cur)))
    report = transfer(cfg, hooks=hooks, resume=True)
    assert events[0] == ("generate", 2)  # counting on from the kept batch
    done = json.loads((out / "synthesis.json").read_text())
    assert not done["stopped"] and done["inputs"][: len(kept["inputs"])] == kept["inputs"]
    assert report["synthesis"]["attempts"] >= 2 and "synthesis" not in report["reused"]


def test_margins_read_each_rows_last_position(discriminator_run: dict) -> None:
    # Rows of different lengths in one batch: each margin equals that row scored alone
    # with the full logits (the batch asks the LM head for the last positions only).
    chat = load_chat_model("tiny-llama", quantization="none", compute_dtype=torch.float32)
    disc = Discriminator.from_chat(chat, TASK)
    texts = ["What is 1 plus 2?", "a much longer question about adding two numbers", "x"]
    batched = disc.margins(texts)
    tok, model = disc.chat.tokenizer, disc.chat.model
    for text, margin in zip(texts, batched, strict=True):
        ids = render_prompt(tok, [Message("user", question_prompt(text, TASK))])
        with torch.no_grad():
            last = model(input_ids=torch.tensor([ids])).logits[0, -1].float()
        alone = torch.logsumexp(last[disc.yes_ids], -1) - torch.logsumexp(last[disc.no_ids], -1)
        assert margin == pytest.approx(float(alone), abs=1e-5)
