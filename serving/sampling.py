"""Token sampling: greedy, temperature, top-p, with a per-request seed.

Sampling uses the "exponential race": argmax(p / q) with q ~ Exp(1) draws from p, so a
whole batch is sampled with one argmax, and a seeded request draws its noise from its own
generator, which makes its output independent of what else runs in the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    ignore_eos: bool = False

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def make_generator(seed: int | None, device: torch.device) -> torch.Generator | None:
    if seed is None:
        return None
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


def sample(
    logits: Tensor,
    params: list[SamplingParams],
    generators: list[torch.Generator | None],
    default: torch.Generator,
) -> list[int]:
    """logits [N, vocab] float32 -> one token id per row."""
    greedy = logits.argmax(dim=-1)
    if all(p.greedy for p in params):
        return greedy.tolist()
    device = logits.device
    temps = torch.tensor(
        [p.temperature if not p.greedy else 1.0 for p in params], device=device
    ).unsqueeze(1)
    probs = torch.softmax(logits / temps, dim=-1)
    top_p = torch.tensor([p.top_p for p in params], device=device).unsqueeze(1)
    if bool((top_p < 1.0).any()):
        sorted_p, order = probs.sort(dim=-1, descending=True)
        # Keep the smallest set of tokens whose mass reaches top_p (always the first one).
        drop = (sorted_p.cumsum(dim=-1) - sorted_p) >= top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
    noise = torch.empty_like(probs)
    unseeded = [i for i, g in enumerate(generators) if g is None]
    if unseeded:
        noise[unseeded] = torch.empty(len(unseeded), probs.shape[1], device=device).exponential_(
            generator=default
        )
    for i, gen in enumerate(generators):
        if gen is not None:
            noise[i].exponential_(generator=gen)
    sampled = (probs / noise).argmax(dim=-1)
    is_greedy = torch.tensor([p.greedy for p in params], device=device)
    return torch.where(is_greedy, greedy, sampled).tolist()
