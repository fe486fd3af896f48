"""The key/value cache of a continuous batch: one buffer per layer for every decoding row.

Rows are right-aligned: at each decode step every row writes its new token's keys and
values into the same column, `width`, so a step is one write per layer and the attention
reads a view, never a concatenation (transformers' DynamicCache copies the whole cache at
every step: `torch.cat`). Row i's tokens fill the columns [start[i], width); the columns
before are masked for it. Columns before `base` are masked for every row and left out of
the view, so a long conversation that leaves costs its batch mates nothing afterwards.

A row joins with the keys and values of its prefill (copied once into a free slot) and
leaves by moving the last row into its slot, so the live rows stay 0..rows-1.

Measured against one cache per request padded into a batch at every step (RowsKV in
benchmarks/bench_serve_engine.py --compare-cache; what per-row DynamicCaches cost): a
decode step of 16 rows of SmolLM2-135M NF4 with 4 adapters, contexts of 60-180 tokens,
took 162 ms with BatchKV and 187 ms with per-row caches (1 thread, shared CPU). The gap
grows with the context, since per-row caches copy every row's whole history each step.
"""

from __future__ import annotations

import torch


class BatchKV:
    """Duck-types transformers' Cache for the decoding forward: `update` stores a step's
    keys and values (one column) and returns the layer's cache as a view."""

    def __init__(self, rows: int = 4, columns: int = 256) -> None:
        self.row_capacity, self.columns = rows, columns
        self.k: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []
        self.start: list[int] = []  # per live row: its first column
        self.width = 0  # the column the next step writes
        self.base = 0  # every column before it is dead for every row

    @property
    def rows(self) -> int:
        return len(self.start)

    # --- rows joining and leaving -------------------------------------------------------

    def add(self, kv: list[tuple[torch.Tensor, torch.Tensor]]) -> int:
        """A prefilled row: (keys, values) per layer, each [1, heads, tokens, dim].
        Returns its slot."""
        length = kv[0][0].shape[2]
        if not self.k:
            _, heads, _, dim = kv[0][0].shape
            shape = (self.row_capacity, heads, self.columns, dim)
            self.k = [torch.zeros(shape, dtype=k.dtype, device=k.device) for k, _ in kv]
            self.v = [torch.zeros(shape, dtype=v.dtype, device=v.device) for _, v in kv]
        rows = self.row_capacity * 2 if self.rows == self.row_capacity else self.row_capacity
        if rows != self.row_capacity or length > self.width or self.width + 1 > self.columns:
            # The live region moves so that it ends at least `length` columns in (a history
            # longer than anyone's shifts the others right), with room to grow.
            used = self.width - self.base
            base = max(0, length - used)
            self._relayout(rows, max(self.columns, _pow2(base + used + 64)), base)
        slot, start = self.rows, self.width - length
        for layer, (k, v) in enumerate(kv):
            self.k[layer][slot, :, start : self.width] = k[0]
            self.v[layer][slot, :, start : self.width] = v[0]
        self.start.append(start)
        self.base = min(self.base, start)
        return slot

    def remove(self, slot: int) -> None:
        """Drop a row; the last row moves into its slot (callers renumber it)."""
        last = self.rows - 1
        if slot != last:
            for buf in (*self.k, *self.v):
                buf[slot, :, self.base : self.width] = buf[last, :, self.base : self.width]
            self.start[slot] = self.start[last]
        self.start.pop()
        if self.start:
            self.base = min(self.start)
        else:
            self.width = self.base = 0

    # --- one decode step ----------------------------------------------------------------

    def prepare(self) -> None:
        """Room for this step's column (compacts or grows; rare)."""
        if self.width + 1 > self.columns:
            needed = self.width - self.base + 1
            columns = self.columns if needed * 2 <= self.columns else _pow2(needed * 2)
            self._relayout(self.row_capacity, columns, 0)

    def positions(self, device: torch.device) -> torch.Tensor:
        """[rows, 1]: each row's position for its new token (the tokens it holds)."""
        return torch.tensor([[self.width - s] for s in self.start], device=device)

    def mask(self, device: torch.device) -> torch.Tensor:
        """[rows, 1, 1, columns]: True where a row may attend (its own columns and the new)."""
        columns = torch.arange(self.base, self.width + 1, device=device)
        start = torch.tensor(self.start, device=device)
        return (columns[None, :] >= start[:, None])[:, None, None, :]

    def update(
        self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, **_: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        rows, width = self.rows, self.width
        self.k[layer_idx][:rows, :, width] = key[:, :, 0]
        self.v[layer_idx][:rows, :, width] = value[:, :, 0]
        return (
            self.k[layer_idx][:rows, :, self.base : width + 1],
            self.v[layer_idx][:rows, :, self.base : width + 1],
        )

    def advance(self) -> None:
        """After the forward: every layer holds this step's column."""
        self.width += 1

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.width - self.base

    # --- layout -------------------------------------------------------------------------

    def _relayout(self, rows: int, columns: int, base: int) -> None:
        """New buffers of rows x columns; the live region [self.base, width) moves to
        start at `base` (its row starts move with it)."""
        used = self.width - self.base
        offset = base - self.base
        for bufs in (self.k, self.v):
            for i, old in enumerate(bufs):
                new = old.new_zeros((rows, old.shape[1], columns, old.shape[3]))
                new[: self.rows, :, base : base + used] = old[
                    : self.rows, :, self.base : self.width
                ]
                bufs[i] = new
        self.start = [s + offset for s in self.start]
        self.width, self.base = base + used, base
        self.row_capacity, self.columns = rows, columns


def _pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()
