"""Token statistics on a real tokenizer, and the deterministic train/val split."""

from __future__ import annotations

import json
import random
import statistics

import pytest

from finetune_core.data import (
    Example,
    Message,
    bigbench_task_path,
    count_tokens,
    dataset_stats,
    read_examples,
    train_val_split,
    validate_file,
)


def pair(question: str, answer: str) -> Example:
    return Example((Message("user", question), Message("assistant", answer)))


def chatml_tokens(example: Example) -> int:
    """Independent count for the tiny byte-level ChatML tokenizer: role, content, 4 markers."""
    return sum(len(m.role) + len(m.content.encode()) + 4 for m in example.messages)


def test_count_tokens_matches_the_rendered_template(tiny_tokenizer):
    example = pair("héllo", "wörld")
    text = tiny_tokenizer.apply_chat_template(
        [{"role": "user", "content": "héllo"}, {"role": "assistant", "content": "wörld"}],
        tokenize=False,
    )
    assert text == "<|im_start|>user\nhéllo<|im_end|>\n<|im_start|>assistant\nwörld<|im_end|>\n"
    assert count_tokens(example, tiny_tokenizer) == chatml_tokens(example) == 8 + 6 + 13 + 6


def test_dataset_stats_values(tiny_tokenizer):
    # Answers of 1..20 bytes: lengths 22 + k (user "q": 4+1+4, assistant: 9+k+4).
    examples = [pair("q", "a" * k) for k in range(1, 21)]
    lengths = [22 + k for k in range(1, 21)]
    assert [chatml_tokens(e) for e in examples] == lengths
    stats = dataset_stats(examples, tiny_tokenizer, max_length=35)
    split = stats.pop("split_lengths")
    # The lengths in the split's order: the validation share comes off the front.
    train, val = train_val_split(examples, val_fraction=0.1, seed=0)
    assert split["seed"] == 0 and split["stride"] == 1
    assert sorted(split["values"][:2]) == sorted(chatml_tokens(e) for e in val)
    assert sorted(split["values"][2:]) == sorted(chatml_tokens(e) for e in train)
    assert stats == {
        "rows": 20,
        "tokens": {"min": 23, "median": 32.5, "p95": 41, "max": 42, "total": sum(lengths)},
        "n_truncated": 7,  # 36..42
        "tokens_per_epoch": sum(min(n, 35) for n in lengths),
        "max_length": 35,
    }
    json.dumps(stats)


def test_dataset_stats_on_a_bundled_task(tiny_tokenizer):
    examples = list(read_examples(bigbench_task_path("sports_understanding")))
    lengths = sorted(chatml_tokens(e) for e in examples)
    stats = dataset_stats(iter(examples), tiny_tokenizer, max_length=150)
    assert stats["rows"] == 1000
    assert stats["tokens"]["min"] == lengths[0] and stats["tokens"]["max"] == lengths[-1]
    assert stats["tokens"]["median"] == statistics.median(lengths)
    assert stats["tokens"]["p95"] == lengths[949]  # nearest rank: ceil(0.95 * 1000)
    assert stats["n_truncated"] == sum(n > 150 for n in lengths)
    assert stats["tokens_per_epoch"] == sum(min(n, 150) for n in lengths)


def test_dataset_stats_empty(tiny_tokenizer):
    assert dataset_stats([], tiny_tokenizer, 64)["rows"] == 0


EXAMPLES = [pair(f"question {i}", f"answer {i}") for i in range(200)]


def test_split_is_deterministic_disjoint_and_complete():
    train, val = train_val_split(EXAMPLES, val_fraction=0.1, seed=7)
    assert (train, val) == train_val_split(EXAMPLES, val_fraction=0.1, seed=7)
    assert len(val) == 20 and len(train) == 180
    assert sorted(map(id, train + val)) == sorted(map(id, EXAMPLES))
    assert not {e.messages for e in train} & {e.messages for e in val}
    # Both sides keep the input order.
    assert train == [e for e in EXAMPLES if e in train] and val == [e for e in EXAMPLES if e in val]


def test_split_depends_on_seed_not_on_input_order():
    _, val = train_val_split(EXAMPLES, seed=1)
    shuffled = EXAMPLES.copy()
    random.Random(3).shuffle(shuffled)
    _, val_shuffled = train_val_split(shuffled, seed=1)
    assert {e.messages for e in val} == {e.messages for e in val_shuffled}
    assert val != train_val_split(EXAMPLES, seed=2)[1]


def test_split_keeps_old_rows_on_their_side_when_rows_are_added():
    _, val = train_val_split(EXAMPLES[:100], val_fraction=0.2, seed=0)
    _, val_more = train_val_split(EXAMPLES, val_fraction=0.1, seed=0)
    # Same hash order: the first 100's val rows rank the same among all 200.
    assert len(set(map(id, val)) & set(map(id, val_more))) >= 5


@pytest.mark.parametrize(
    ("n", "fraction", "n_val"),
    [(0, 0.1, 0), (1, 0.5, 0), (2, 0.01, 1), (5, 0.1, 1), (10, 0.25, 2), (10, 0.0, 0), (3, 0.9, 2)],
)
def test_split_sizes(n, fraction, n_val):
    train, val = train_val_split(EXAMPLES[:n], val_fraction=fraction)
    assert (len(train), len(val)) == (n - n_val, n_val)


def test_split_rejects_bad_fraction():
    with pytest.raises(ValueError, match="val_fraction"):
        train_val_split(EXAMPLES, val_fraction=1.0)


def test_too_long_in_a_bigbench_task_names_the_example(tiny_tokenizer):
    path = bigbench_task_path("object_counting")
    lengths = [chatml_tokens(e) for e in read_examples(path)]
    report = validate_file(path, tokenizer=tiny_tokenizer, max_length=100, max_errors=1000)
    assert [i.line for i in report.issues] == [n for n, k in enumerate(lengths, 1) if k > 100]
    assert str(report.issues[0]).startswith(f"example {report.issues[0].line}: the example is")
