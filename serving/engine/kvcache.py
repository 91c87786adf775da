"""The batch's KV cache: keys and values of every row in buffers allocated ahead, plus which columns hold a token.

Layout: one buffer per layer, [rows, kv heads, columns, head dim]. Every row ends at the same column (the batch
writes one column per decoding step for all rows), and a row's earlier columns may be holes (left padding, or the
gap between a shared prompt prefix and the row's own tokens). ``mask[row, column]`` is 0 where a column holds a real
token and the dtype's minimum where it is a hole: the additive mask attention adds to its scores, kept up to date in
place (a step sets one column), so no step builds a mask and a CUDA graph reads it where it lies.

The model sees this object as its ``Cache``: before each forward pass the batch sets ``window`` (which rows, where
the new tokens are written, which columns are read), and every attention layer's ``update`` writes its new keys and
values there and returns the window's views. No per-step ``torch.cat``: a step writes one column in place. The write
position may be a device tensor instead of an int, so that a CUDA graph captured once replays at any position.

Capacity grows by reallocation when a request needs more rows or columns than reserved (rare: capacity doubles).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.cache_utils import Cache, DynamicLayer


@dataclass
class Window:
    rows: int  # rows [0, rows) or, for a prefill, [first_row, rows)
    write: int | torch.Tensor  # first column written (int), or the columns written (a device tensor)
    start: int  # columns [start, end) are read
    end: int
    first_row: int = 0


def additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean mask (True: attend) as the additive mask attention adds to its scores: 0 or the dtype's minimum
    (finite, so a row that sees nothing gets uniform weights, never NaN)."""
    zero = torch.zeros((), dtype=dtype, device=mask.device)
    return torch.where(mask, zero, torch.finfo(dtype).min)


class KVCache(Cache):
    def __init__(self, layers: int, device: torch.device, dtype: torch.dtype, rows: int = 1, columns: int = 64):
        super().__init__(layers=[DynamicLayer() for _ in range(layers)])
        self.device = device
        self.capacity = (rows, columns)
        self.keys: list[torch.Tensor | None] = [None] * layers
        self.values: list[torch.Tensor | None] = [None] * layers
        self.hole = torch.finfo(dtype).min  # the mask's value for a column a row does not attend to
        self.mask = torch.full((rows, columns), self.hole, dtype=dtype, device=device)
        self.window = Window(rows=0, write=0, start=0, end=0)
        self.generation = 0  # bumped when the buffers are reallocated (captured CUDA graphs then go stale)

    # ---- the model's side (transformers' Cache interface) ----

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        if self.keys[layer_idx] is None:
            self.keys[layer_idx] = self._buffer(key_states)
            self.values[layer_idx] = self._buffer(value_states)
        w = self.window
        keys = self.keys[layer_idx][w.first_row : w.rows]
        values = self.values[layer_idx][w.first_row : w.rows]
        if isinstance(w.write, int):
            keys[:, :, w.write : w.write + key_states.shape[2]] = key_states
            values[:, :, w.write : w.write + value_states.shape[2]] = value_states
        else:
            keys.index_copy_(2, w.write, key_states)
            values.index_copy_(2, w.write, value_states)
        return keys[:, :, w.start : w.end], values[:, :, w.start : w.end]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.window.end

    def get_max_cache_shape(self, layer_idx: int = 0) -> int:
        return self.capacity[1]

    # ---- the batch's side ----

    def _buffer(self, states: torch.Tensor) -> torch.Tensor:
        rows, columns = self.capacity
        return states.new_zeros((rows, states.shape[1], columns, states.shape[3]))

    def reserve(self, rows: int, columns: int, used: tuple[int, int]) -> None:
        """Room for ``rows`` x ``columns``, keeping the ``used`` (rows, columns) corner: capacity at least doubles
        in the dimension that grows, so a growing batch reallocates rarely."""
        have_rows, have_columns = self.capacity
        if rows <= have_rows and columns <= have_columns:
            return
        new = (
            max(rows, have_rows * 2) if rows > have_rows else have_rows,
            max(columns, have_columns * 2) if columns > have_columns else have_columns,
        )
        used_rows, used_columns = used
        self.capacity = new
        for buffers in (self.keys, self.values):
            for i, old in enumerate(buffers):
                if old is not None:
                    buffers[i] = old.new_zeros((new[0], old.shape[1], new[1], old.shape[3]))
                    buffers[i][:used_rows, :, :used_columns] = old[:used_rows, :, :used_columns]
        mask = torch.full(new, self.hole, dtype=self.mask.dtype, device=self.device)
        mask[:used_rows, :used_columns] = self.mask[:used_rows, :used_columns]
        self.mask = mask
        self.generation += 1

    def move_rows(self, sources: list[int], targets: list[int]) -> None:
        """Copy whole rows ``sources`` onto ``targets`` (disjoint): how a finished row's slot is refilled."""
        if not sources:
            return
        src = torch.tensor(sources, device=self.device)
        dst = torch.tensor(targets, device=self.device)
        for buffer in (*self.keys, *self.values):
            if buffer is not None:
                buffer[dst] = buffer[src]
        self.mask[dst] = self.mask[src]

    def shift_columns(self, rows: int, start: int, end: int, by: int) -> None:
        """Move columns [start, end) of rows [0, rows) by ``by`` columns (left when negative); the columns left
        behind become holes."""
        if by == 0 or rows == 0:
            return
        for buffer in (*self.keys, *self.values):
            if buffer is not None:
                buffer[:rows, :, start + by : end + by] = buffer[:rows, :, start:end].clone()
        moved = self.mask[:rows, start:end].clone()
        self.mask[:rows, start:end] = self.hole
        self.mask[:rows, start + by : end + by] = moved

    def real(self, rows: slice, columns: slice) -> torch.Tensor:
        """Where the mask says real token, as booleans."""
        return self.mask[rows, columns] == 0

    def store_prefix(self, first_row: int, rows: int, column: int, prefix: list[tuple[torch.Tensor, torch.Tensor]]):
        """Copy a computed prompt prefix (per layer: keys, values of one row) into rows [first_row, rows) at
        ``column``."""
        for i, (keys, values) in enumerate(prefix):
            if self.keys[i] is None:
                self.keys[i], self.values[i] = self._buffer(keys), self._buffer(values)
            length = keys.shape[2]
            self.keys[i][first_row:rows, :, column : column + length] = keys
            self.values[i][first_row:rows, :, column : column + length] = values

    def row_keys(self, row: int, *spans: tuple[int, int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Keys and values of one row's columns in ``spans`` ([start, end) each, joined in order), per layer
        (copies): a prompt's cached start, then its own tokens after the padding."""

        def columns(buffer: torch.Tensor) -> torch.Tensor:
            parts = [buffer[row : row + 1, :, start:end] for start, end in spans if end > start]
            return torch.cat(parts, dim=2) if len(parts) > 1 else parts[0].clone()

        return [(columns(k), columns(v)) for k, v in zip(self.keys, self.values, strict=True)]
