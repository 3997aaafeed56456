"""A preallocated, slot-based KV cache.

One slot per concurrent request: ``k[layer, slot, kv_head, position, head_dim]``. A request
keeps its slot from admission to finish, so there is no paging and no copying; the decode
batch is always slots ``0..B-1`` (free slots inside that range run as padding rows), which
makes the cache of a decode step a plain view, the shapes static, and CUDA graphs possible.
Free slots are handed out lowest first, which keeps the running batch compact.

Each slot has ``max_len + 1`` positions: the last one is a scratch position that padding
rows write to; no real request ever reads it.
"""

from __future__ import annotations

import heapq

import torch


class KVCache:
    def __init__(
        self,
        num_layers: int,
        num_slots: int,
        num_kv_heads: int,
        max_len: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        shape = (num_layers, num_slots, num_kv_heads, max_len + 1, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.num_slots, self.max_len = num_slots, max_len
        self.scratch_position = max_len
        self._free = list(range(num_slots))
        heapq.heapify(self._free)

    def allocate(self) -> int | None:
        return heapq.heappop(self._free) if self._free else None

    def release(self, slot: int) -> None:
        heapq.heappush(self._free, slot)

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def usage(self) -> float:
        """Fraction of slots in use (a request waits when this is 1.0)."""
        return 1.0 - len(self._free) / self.num_slots

    @property
    def nbytes(self) -> int:
        return self.k.numel() * self.k.element_size() * 2
