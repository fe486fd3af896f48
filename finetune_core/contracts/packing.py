"""How training turns examples into rows and rows into optimizer steps, in plain Python.

The engine's split (`data/split.py`), packer (`data/pack.py`) and step count
(`train/recipe.py`) call these functions; the web app's pre-flight estimate calls the
same ones on the token lengths of the dataset report, so it counts the steps a run will
take. Packing whole examples leaves rows part empty: the demo's 45-token examples fill
two to a 128-token row, which an estimate assuming perfectly full rows put at 32 steps
for a run of 45 (issue 27).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

# The dataset report keeps at most this many example lengths (a sample beyond it), which
# bounds both the report's size and the estimate's packing work.
REPORT_LENGTHS_MAX = 20_000


def val_count(n: int, val_fraction: float) -> int:
    """Examples the split holds out of `n`: at least one when there are two or more and
    the fraction is above 0, and always at least one left to train on."""
    if val_fraction <= 0 or n < 2:
        return 0
    return min(max(round(n * val_fraction), 1), n - 1)


def first_fit(lengths: Sequence[int], max_length: int) -> list[list[int]]:
    """The indices of `lengths` each row holds: first fit over the examples sorted longest
    first (ties by index), every length at most max_length.

    A max segment tree over every possible row's free room finds the first row with
    room in O(log n): rows not yet opened have all of max_length free and come after the
    opened ones, so the first one with room is an opened row or the next new one."""
    size = 1
    while size < len(lengths):
        size *= 2
    room = [0] * size + [max_length] * len(lengths) + [0] * (size - len(lengths))
    for node in range(size - 1, 0, -1):
        room[node] = max(room[2 * node], room[2 * node + 1])
    rows: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        node = 1
        while node < size:
            node = 2 * node if room[2 * node] >= lengths[i] else 2 * node + 1
        if node - size == len(rows):
            rows.append([])
        rows[node - size].append(i)
        room[node] -= lengths[i]
        while node > 1:
            node //= 2
            room[node] = max(room[2 * node], room[2 * node + 1])
    return rows


def row_count(lengths: Sequence[int], max_length: int, *, packing: bool = True) -> int:
    """Rows training makes of examples this long (each cut to max_length)."""
    if not packing:
        return len(lengths)
    return len(first_fit([min(n, max_length) for n in lengths], max_length))


def optimizer_steps(
    rows: int, *, batch_size: int, grad_accum: int, epochs: int, max_steps: int | None
) -> int:
    """A run's optimizer steps: max_steps when set, else every micro-batch of every epoch
    in steps of grad_accum micro-batches (the last epoch's part step counts)."""
    if max_steps:
        return int(max_steps)
    return math.ceil(math.ceil(rows / batch_size) * epochs / grad_accum)


def report_sample(lengths: Sequence[int]) -> tuple[int, list[int]]:
    """(stride, every stride-th length): what the dataset report keeps of `lengths`."""
    stride = max(1, math.ceil(len(lengths) / REPORT_LENGTHS_MAX))
    return stride, list(lengths[::stride])
