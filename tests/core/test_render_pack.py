"""Chat-template rendering, the loss mask token by token, and packing with isolated attention."""

from __future__ import annotations

import random

import pytest
import torch

from finetune_core.contracts.packing import first_fit, row_count
from finetune_core.data.pack import collate, pack
from finetune_core.data.render import IGNORE, Rendered, render_example, render_prompt
from finetune_core.data.types import Example, Message
from finetune_core.models import load_model, load_tokenizer

CONVERSATION = Example(
    messages=(
        Message("system", "You answer tersely."),
        Message("user", "Capital of France?"),
        Message("assistant", "Paris."),
        Message("user", "And of Italy?"),
        Message("assistant", "Milan, I think.", weight=0),  # a bad turn kept as context only
        Message("user", "Wrong, try again."),
        Message("assistant", "Rome."),
    ),
    line=3,
)


@pytest.fixture(scope="module")
def smol_tokenizer():
    return load_tokenizer("smollm2-135m-instruct")


def test_label_mask_token_by_token_on_real_tokenizer(smol_tokenizer) -> None:
    tok = smol_tokenizer
    rendered = render_example(tok, CONVERSATION)
    full = tok.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in CONVERSATION.messages], tokenize=False
    )
    enc = tok(full, add_special_tokens=False, return_offsets_mapping=True)
    # Rendering turn by turn yields exactly the tokens of the whole conversation.
    assert rendered.input_ids == enc["input_ids"]
    # Expected trained character spans: each weight-1 answer plus its <|im_end|>.
    spans = []
    for answer in ("Paris.<|im_end|>", "Rome.<|im_end|>"):
        start = full.index(answer)
        spans.append((start, start + len(answer)))
    for i, (token_id, (a, b)) in enumerate(
        zip(enc["input_ids"], enc["offset_mapping"], strict=True)
    ):
        inside = any(s <= a and b <= e for s, e in spans)
        expected = token_id if inside else IGNORE
        assert rendered.labels[i] == expected, f"token {i} {tok.decode([token_id])!r}"
    trained_text = tok.decode([t for t in rendered.labels if t != IGNORE])
    assert trained_text == "Paris.<|im_end|>Rome.<|im_end|>"
    assert "Milan" not in trained_text and "France" not in trained_text


def test_render_prompt_ends_with_generation_prompt(smol_tokenizer) -> None:
    ids = render_prompt(smol_tokenizer, [Message("user", "Hi")])
    assert smol_tokenizer.decode(ids).endswith("<|im_start|>assistant\n")


def test_gemma_default_template_marks_turns() -> None:
    from jinja2 import Template

    from finetune_core.models.registry import GEMMA_TEMPLATE

    text = Template(GEMMA_TEMPLATE).render(
        bos_token="<bos>",
        add_generation_prompt=True,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Bye"},
        ],
    )
    assert text == (
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello<end_of_turn>\n"
        "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
    )


def _rendered(n: int, length: int) -> Rendered:
    ids = [(n * 7 + i) % 250 + 1 for i in range(length)]
    return Rendered(input_ids=ids, labels=[IGNORE] * 3 + ids[3:], line=n)


def test_pack_first_fit_respects_max_length_and_keeps_every_example() -> None:
    examples = [_rendered(i, n) for i, n in enumerate([30, 50, 20, 90, 10, 60])]
    rows = pack(examples, max_length=100)
    assert all(len(r) <= 100 for r in rows)
    assert sorted(line for r in rows for line in r.lines) == list(range(6))
    assert len(rows) == 3  # 260 tokens fit in three rows of 100
    for r in rows:  # positions restart at every example
        assert r.position_ids.count(0) == len(r.lines)


def test_pack_truncates_and_drops_examples_with_nothing_to_learn() -> None:
    long = _rendered(0, 300)
    nothing = Rendered(input_ids=[5] * 10, labels=[IGNORE] * 10, line=9)
    rows = pack([long, nothing], max_length=64)
    assert [len(r) for r in rows] == [64] and rows[0].lines == [0]


def test_packed_attention_stays_inside_each_example() -> None:
    tok = load_tokenizer("tiny-llama")
    model = load_model("tiny-llama", quantization="none", compute_dtype=torch.float32)
    model.eval()
    examples = [
        render_example(tok, Example((Message("user", q), Message("assistant", a)), line=i))
        for i, (q, a) in enumerate(
            [("2+2?", "4"), ("Name a colour.", "Blue"), ("Hi", "Hello there")]
        )
    ]
    rows = pack(examples, max_length=512)
    assert len(rows) == 1 and len(rows[0].lines) == 3
    batch = collate(rows, tok.pad_token_id)
    with torch.no_grad():
        packed = model(
            input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False
        ).logits[0]
        # The same row with positions that never restart lets later examples see earlier ones.
        leaky = model(input_ids=batch["input_ids"], use_cache=False).logits[0]
        offset = 0
        order = rows[0].lines
        for line in order:
            ids = examples[line].input_ids
            alone = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0]
            torch.testing.assert_close(
                packed[offset : offset + len(ids)], alone, rtol=1e-4, atol=1e-4
            )
            offset += len(ids)
    first = len(examples[order[0]].input_ids)
    assert not torch.allclose(leaky[first:], packed[first:], atol=1e-3)


def test_collate_pads_as_its_own_ignored_segment() -> None:
    rows = pack([_rendered(0, 10), _rendered(1, 4)], max_length=10)
    batch = collate(rows, pad_id=0)
    assert batch["input_ids"].shape == (2, 10)
    assert batch["labels"][1, 4:].eq(IGNORE).all()
    assert batch["position_ids"][1].tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 4, 5]


def _naive_first_fit(lengths: list[int], max_length: int) -> list[list[int]]:
    """First fit as the packer first wrote it: scan every row for room (quadratic)."""
    rows: list[list[int]] = []
    used: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        for r, room in enumerate(used):
            if room + lengths[i] <= max_length:
                rows[r].append(i)
                used[r] += lengths[i]
                break
        else:
            rows.append([i])
            used.append(lengths[i])
    return rows


@pytest.mark.parametrize("seed", range(5))
def test_the_shared_first_fit_packs_as_the_scan_of_every_row(seed: int) -> None:
    """contracts.packing.first_fit (the packer's and the web estimate's) finds the first
    row with room by a tree: the same rows, in the same order, as scanning them all."""
    rng = random.Random(seed)
    lengths = [rng.choice([rng.randint(1, 20), rng.randint(20, 128)]) for _ in range(300)]
    assert first_fit(lengths, 128) == _naive_first_fit(lengths, 128)
    assert row_count(lengths, 128) == len(_naive_first_fit(lengths, 128))
    assert row_count(lengths, 128, packing=False) == 300 and first_fit([], 128) == []
