"""Decoding steps at bucketed shapes, captured once per bucket as CUDA graphs and replayed.

On a GPU a decoding step of a small model is hundreds of tiny kernels, and launching them from Python costs more
than running them (measured on an H200: 41 tokens/s at batch 1 where the GPU could give ten times that). A CUDA
graph records the launches once and replays them in one call. A graph fixes every shape and address, so:

- the batch's rows are rounded up to a power of two and its columns to a multiple of ``COLUMN_BUCKET``; the
  padding rows decode garbage that nobody reads, and the padding columns are masked;
- the inputs (tokens, positions, the column written) are copied into buffers the graph was captured with, and
  the graph reads the KV cache's own additive mask where it lies (``serving.engine.kvcache``);
- the KV cache writes its column at a position held in a device tensor, so one graph serves every step of its
  bucket. Padding rows keep whatever valid tokens and positions they last had: their output is never read.

A bucket is captured the first time a step needs it: that step runs eagerly on a side stream (its result is used),
then the same step is recorded. When the KV cache is reallocated (it grew), the graphs are dropped and recaptured.
With ``capture=False`` the same bucketed path runs eagerly: how the tests check it on a CPU.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from serving.engine.kvcache import KVCache, Window

Forward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Window], torch.Tensor]  # the batch's forward pass

COLUMN_BUCKET = 128


def row_bucket(rows: int, capacity: int) -> int:
    """The power of two at or above ``rows``, within ``capacity``."""
    return min(1 << (rows - 1).bit_length(), capacity)


def column_bucket(columns: int, capacity: int) -> int:
    return min(-(-columns // COLUMN_BUCKET) * COLUMN_BUCKET, capacity)


class StepGraphs:
    def __init__(self, forward: Forward, cache: KVCache, pad_token_id: int, capture: bool) -> None:
        self.forward, self.cache, self.pad_token_id = forward, cache, pad_token_id
        self.capture = capture
        self.graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.generation = -1  # the KV cache allocation the buffers and graphs belong to
        self.pool = torch.cuda.graph_pool_handle() if capture else None

    def _allocate(self) -> None:
        rows = self.cache.capacity[0]
        device = self.cache.device
        self.tokens = torch.full((rows, 1), self.pad_token_id, dtype=torch.long, device=device)
        self.positions = torch.zeros((rows, 1), dtype=torch.long, device=device)
        self.write = torch.zeros(1, dtype=torch.long, device=device)
        self.graphs.clear()
        self.generation = self.cache.generation

    @property
    def captured(self) -> list[tuple[int, int]]:
        return sorted(self.graphs)

    def row_buckets(self) -> list[int]:
        """Every row bucket up to the batch's reserved rows: 1, 2, 4, ..."""
        rows = self.cache.capacity[0]
        return sorted({row_bucket(n, rows) for n in (1 << i for i in range(rows.bit_length() + 1))})

    def decode(self, tokens: torch.Tensor, positions: torch.Tensor, end: int) -> torch.Tensor:
        """The next-token logits of ``tokens`` (one per row, at ``positions``), written at column ``end``."""
        cache = self.cache
        if cache.generation != self.generation:
            self._allocate()
        rows = tokens.shape[0]
        bucket = (row_bucket(rows, cache.capacity[0]), column_bucket(end + 1, cache.capacity[1]))
        padded, columns = bucket
        self.tokens[:rows, 0] = tokens
        self.positions[:rows, 0] = positions
        self.write.fill_(end)
        args = (self.tokens[:padded], self.positions[:padded], cache.mask[:padded, None, None, :columns])
        window = Window(padded, self.write, 0, columns)
        if not self.capture:
            return self.forward(*args, window)[:rows]
        if bucket in self.graphs:
            graph, logits = self.graphs[bucket]
            graph.replay()
            return logits[:rows]
        return self._capture(bucket, args, window)[:rows]

    def _capture(self, bucket, args, window: Window) -> torch.Tensor:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            logits = self.forward(*args, window).clone()  # this step's real result
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            static = self.forward(*args, window)
        self.graphs[bucket] = (graph, static)
        return logits
