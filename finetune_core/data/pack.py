"""Pack short examples into one sequence, with attention kept inside each example.

A packed row restarts `position_ids` at 0 for every example. Given no 2-D
attention mask and no cache, transformers reads those restarts as sequence
boundaries and builds a block-diagonal causal mask, so no example sees another.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from finetune_core.contracts.packing import first_fit
from finetune_core.data.render import IGNORE, Rendered


@dataclass
class Row:
    input_ids: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    position_ids: list[int] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)

    def add(self, example: Rendered) -> None:
        self.input_ids += example.input_ids
        # The first token of an example is never predicted from the previous one.
        self.labels += [IGNORE] + example.labels[1:]
        self.position_ids += list(range(len(example.input_ids)))
        self.lines.append(example.line)

    def __len__(self) -> int:
        return len(self.input_ids)


def truncate(examples: list[Rendered], max_length: int) -> list[Rendered]:
    """Cut every example to max_length; drop those left with nothing to learn."""
    out = []
    for ex in examples:
        cut = Rendered(ex.input_ids[:max_length], ex.labels[:max_length], ex.line)
        if cut.n_trained > 0:
            out.append(cut)
    return out


def pack(examples: list[Rendered], max_length: int, *, packing: bool = True) -> list[Row]:
    """Rows of at most max_length tokens; one example per row when packing is off.

    First-fit over examples sorted longest first (finetune_core.contracts.packing, which
    the web app's estimate calls too): deterministic, and within a few percent of the
    optimal number of rows on real length distributions.
    """
    examples = truncate(examples, max_length)
    if packing:
        groups = first_fit([len(ex.input_ids) for ex in examples], max_length)
    else:
        groups = [[i] for i in range(len(examples))]
    rows = []
    for group in groups:
        row = Row()
        for i in group:
            row.add(examples[i])
        rows.append(row)
    return rows


def collate(rows: list[Row], pad_id: int) -> dict[str, torch.Tensor]:
    """Stack rows into tensors, padding to the longest row.

    Padding forms its own segment (positions restart at 0) with ignored labels,
    so it needs no attention mask either.
    """
    width = max(len(r) for r in rows)
    ids, labels, pos = [], [], []
    for r in rows:
        gap = width - len(r)
        ids.append(r.input_ids + [pad_id] * gap)
        labels.append(r.labels + [IGNORE] * gap)
        pos.append(r.position_ids + list(range(gap)))
    return {
        "input_ids": torch.tensor(ids, dtype=torch.long),
        "labels": torch.tensor(labels, dtype=torch.long),
        "position_ids": torch.tensor(pos, dtype=torch.long),
    }
