"""The decode step, run eagerly or replayed from CUDA graphs.

A decode step is one token for each of rows 0..B-1 (= cache slots). Shapes are made
static by rounding B up to a batch bucket and the attended cache length up to a length
bucket; each (B, length) pair is captured once into a CUDA graph that shares one memory
pool, then replayed with new tokens/positions copied into static input buffers. Python
then costs one copy and one replay per step instead of hundreds of kernel launches.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor

from serving.kv_cache import KVCache
from serving.model import Llama

log = logging.getLogger(__name__)

MIN_GRAPH_KV = 256
EAGER_KV_ROUND = 64


def batch_buckets(max_batch: int) -> list[int]:
    sizes = [1, 2, 4, 8, 16] + list(range(24, max_batch + 8, 8))
    return sorted({s for s in sizes if s < max_batch} | {max_batch})


class DecodeRunner:
    def __init__(self, model: Llama, cache: KVCache, use_graphs: bool) -> None:
        self.model, self.cache = model, cache
        device = cache.k.device
        self.use_graphs = use_graphs and device.type == "cuda"
        n = cache.num_slots
        self.tokens = torch.zeros(n, 1, dtype=torch.long, device=device)
        self.positions = torch.full((n, 1), cache.scratch_position, dtype=torch.long, device=device)
        self.buckets = batch_buckets(n)
        self.graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, Tensor]] = {}
        self._pool: Any = None

    def batch_bucket(self, rows: int) -> int:
        return next(b for b in self.buckets if b >= rows)

    def kv_bucket(self, need: int) -> int:
        if self.use_graphs:
            size = MIN_GRAPH_KV
            while size < need:
                size *= 2
        else:
            size = -(-need // EAGER_KV_ROUND) * EAGER_KV_ROUND
        return min(size, self.cache.max_len)

    def kv_buckets(self) -> list[int]:
        sizes, size = [], MIN_GRAPH_KV
        while size < self.cache.max_len:
            sizes.append(size)
            size *= 2
        return [*sizes, self.cache.max_len]

    def run(self, batch: int, tokens: list[int], positions: list[int], kv_need: int) -> Tensor:
        """Logits [batch, vocab] for one decode step; len(tokens) == batch (a bucket size)."""
        kv_len = self.kv_bucket(kv_need)
        self.tokens[:batch, 0].copy_(torch.tensor(tokens), non_blocking=True)
        self.positions[:batch, 0].copy_(torch.tensor(positions), non_blocking=True)
        if self.use_graphs:
            key = (batch, kv_len)
            if key not in self.graphs:
                self._capture(batch, kv_len)
            if key in self.graphs:
                graph, out = self.graphs[key]
                graph.replay()
                return out
        return self._forward(batch, kv_len)

    def _forward(self, batch: int, kv_len: int) -> Tensor:
        logits = self.model(self.tokens[:batch], self.positions[:batch], self.cache, 0, kv_len)
        return logits[:, 0]

    def _capture(self, batch: int, kv_len: int) -> None:
        try:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(2):  # warm up (allocator, cuBLAS handles, bnb buffers)
                    self._forward(batch, kv_len)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._pool):
                out = self._forward(batch, kv_len)
            self._pool = graph.pool()
            self.graphs[(batch, kv_len)] = (graph, out)
        except Exception:  # a kernel that cannot be captured: run eagerly from now on
            log.exception(
                "CUDA graph capture failed for batch %d, kv %d; running eagerly", batch, kv_len
            )
            self.use_graphs = False

    def capture_all(self) -> None:
        """Capture every (batch, length) bucket up front, so no request pays for it."""
        if not self.use_graphs:
            return
        self.positions.fill_(self.cache.scratch_position)
        self.tokens.zero_()
        for kv_len in self.kv_buckets():
            for batch in self.buckets:
                if self.use_graphs and (batch, kv_len) not in self.graphs:
                    self._capture(batch, kv_len)
        log.info("captured %d CUDA graphs", len(self.graphs))
