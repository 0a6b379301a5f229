"""Choosing the next token for each row of a batch, with each request's own sampling settings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class SamplingParams:
    temperature: float  # 0: greedy
    top_p: float
    generator: torch.Generator | None  # seeded per request; None for greedy

    @classmethod
    def create(cls, temperature: float, top_p: float, seed: int | None, device: torch.device) -> SamplingParams:
        if temperature == 0:
            return cls(0.0, top_p, None)
        generator = torch.Generator(device=device)
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(seed)
        return cls(temperature, top_p, generator)


def choose_tokens(logits: torch.Tensor, params: Sequence[SamplingParams]) -> list[int]:
    """One token per row of `logits` [batch, vocab]; greedy rows share one argmax."""
    chosen = logits.argmax(dim=-1).tolist()
    for row, p in enumerate(params):
        if p.temperature > 0:
            chosen[row] = _sample(logits[row], p)
    return chosen


def _sample(logits: torch.Tensor, p: SamplingParams) -> int:
    probs = torch.softmax(logits.float() / p.temperature, dim=-1)
    if p.top_p >= 1.0:
        return int(torch.multinomial(probs, 1, generator=p.generator).item())
    sorted_probs, order = probs.sort(descending=True)
    # Keep the smallest set of most likely tokens whose mass reaches top_p (at least one token).
    outside_nucleus = sorted_probs.cumsum(-1) - sorted_probs >= p.top_p
    sorted_probs = sorted_probs.masked_fill(outside_nucleus, 0.0)
    pick = torch.multinomial(sorted_probs, 1, generator=p.generator)
    return int(order[pick].item())
