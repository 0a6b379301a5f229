"""Choosing the next token for each row of a batch, with each request's own sampling settings.

A step's logits go through three stages, each per row, so requests with different settings share
one forward: `adjust_logits` (repetition, presence and frequency penalties, logit_bias: what the
request's history makes more or less likely), then the grammar mask of constrained rows (in
`constraints.py`), then `choose_tokens` (greedy, or temperature with top_k, min_p and top_p).
Log probabilities are read between the mask and the choice: the distribution the token was really
drawn from, before temperature, as OpenAI reports them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from capmesh.services.llm.domain import ChatRequest


@dataclass
class SamplingParams:
    temperature: float  # 0: greedy
    top_p: float
    generator: torch.Generator | None  # seeded per request; None for greedy
    top_k: int = 0  # 0: every token
    min_p: float = 0.0  # 0: off
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0  # 1: off
    bias: torch.Tensor | None = None  # [vocab] float: logit_bias as a dense row
    # Per-request token statistics, kept only when a penalty needs them: how often each token was
    # generated (presence, frequency) and which tokens the prompt or the answer holds (repetition).
    counts: torch.Tensor | None = None  # [vocab] float
    seen: torch.Tensor | None = None  # [vocab] bool

    @classmethod
    def for_request(
        cls, request: ChatRequest, seed: int | None, prompt: Sequence[int], vocab_size: int, device: torch.device
    ) -> SamplingParams:
        """The request's sampling settings for one choice (`seed`: that choice's own); allocates only the
        token statistics its penalties need."""
        params = cls(
            request.temperature,
            request.top_p,
            None if request.temperature == 0 else _generator(seed, device),
            top_k=request.top_k,
            min_p=request.min_p,
            presence_penalty=request.presence_penalty,
            frequency_penalty=request.frequency_penalty,
            repetition_penalty=request.repetition_penalty,
        )
        if request.logit_bias:
            params.bias = torch.zeros(vocab_size, dtype=torch.float32, device=device)
            params.bias[torch.tensor(list(request.logit_bias), dtype=torch.long, device=device)] = torch.tensor(
                list(request.logit_bias.values()), dtype=torch.float32, device=device
            )
        if params.presence_penalty or params.frequency_penalty:
            params.counts = torch.zeros(vocab_size, dtype=torch.float32, device=device)
        if params.repetition_penalty != 1.0:
            params.seen = torch.zeros(vocab_size, dtype=torch.bool, device=device)
            if prompt:
                params.seen[torch.tensor(list(prompt), dtype=torch.long, device=device)] = True
        return params

    @property
    def adjusts_logits(self) -> bool:
        return self.counts is not None or self.seen is not None or self.bias is not None

    def observe(self, token: int) -> None:
        """Records a generated token for the penalties."""
        if self.counts is not None:
            self.counts[token] += 1
        if self.seen is not None:
            self.seen[token] = True


def _generator(seed: int | None, device: torch.device) -> torch.Generator:
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


def adjust_logits(logits: torch.Tensor, params: Sequence[SamplingParams]) -> None:
    """Applies each row's penalties and logit_bias to `logits` [rows, vocab] in place.

    Each kind is a few tensor ops over all the rows that use it (their statistics stacked), not a
    few per row: per-row ops cost the scheduler thread more than the arithmetic itself."""
    device = logits.device
    repeat = [(i, p.seen, p.repetition_penalty) for i, p in enumerate(params) if p.seen is not None]
    if repeat:
        # transformers' RepetitionPenaltyLogitsProcessor: a seen token's logit is divided by the
        # penalty when positive, multiplied when negative, so it always becomes less likely.
        index = torch.tensor([i for i, _, _ in repeat], device=device)
        seen = torch.stack([row for _, row, _ in repeat])
        penalty = torch.tensor([value for _, _, value in repeat], device=device).unsqueeze(1)
        rows = logits.index_select(0, index)
        penalised = torch.where(rows > 0, rows / penalty, rows * penalty)
        logits.index_copy_(0, index, torch.where(seen, penalised, rows))
    counted = [
        (i, p.counts, p.frequency_penalty, p.presence_penalty) for i, p in enumerate(params) if p.counts is not None
    ]
    if counted:
        # OpenAI's definition: mu[j] - c[j] * frequency_penalty - (c[j] > 0) * presence_penalty.
        index = torch.tensor([i for i, _, _, _ in counted], device=device)
        counts = torch.stack([row for _, row, _, _ in counted])
        frequency = torch.tensor([f for _, _, f, _ in counted], device=device).unsqueeze(1)
        presence = torch.tensor([p for _, _, _, p in counted], device=device).unsqueeze(1)
        logits.index_add_(0, index, -(counts * frequency + (counts > 0).float() * presence))
    biased = [(i, p.bias) for i, p in enumerate(params) if p.bias is not None]
    if biased:
        index = torch.tensor([i for i, _ in biased], device=device)
        logits.index_add_(0, index, torch.stack([row for _, row in biased]))


def choose_tokens(logits: torch.Tensor, params: Sequence[SamplingParams]) -> list[int]:
    """One token per row of `logits` [batch, vocab]; greedy rows share one argmax."""
    chosen = logits.argmax(dim=-1).tolist()
    for row, p in enumerate(params):
        if p.temperature > 0:
            chosen[row] = _sample(logits[row], p)
    return chosen


def _sample(logits: torch.Tensor, p: SamplingParams) -> int:
    scaled = logits.float() / p.temperature
    if p.top_k and p.top_k < scaled.shape[-1]:
        kth = torch.topk(scaled, p.top_k).values[-1]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    probs = torch.softmax(scaled, dim=-1)
    if p.min_p > 0:
        probs = probs.masked_fill(probs < p.min_p * probs.max(), 0.0)
        probs = probs / probs.sum()
    if p.top_p >= 1.0:
        return int(torch.multinomial(probs, 1, generator=p.generator).item())
    sorted_probs, order = probs.sort(descending=True)
    # Keep the smallest set of most likely tokens whose mass reaches top_p (at least one token).
    outside_nucleus = sorted_probs.cumsum(-1) - sorted_probs >= p.top_p
    sorted_probs = sorted_probs.masked_fill(outside_nucleus, 0.0)
    pick = torch.multinomial(sorted_probs, 1, generator=p.generator)
    return int(order[pick].item())


@dataclass(frozen=True)
class StepLogprobs:
    """A row's log probability of its chosen token and its top alternatives (ids, logprobs)."""

    chosen: float
    top_ids: list[int]
    top_logprobs: list[float]


def step_logprobs(logits: torch.Tensor, rows: Sequence[int], tokens: Sequence[int], top: int) -> list[StepLogprobs]:
    """Log probabilities for `rows` of this step's `logits`, from the same logits the tokens were
    chosen from (no second forward); `top` alternatives per row (the widest any row asked for)."""
    index = torch.tensor(list(rows), device=logits.device)
    logprobs = torch.log_softmax(logits.index_select(0, index).float(), dim=-1)
    chosen = logprobs.gather(1, torch.tensor([[tokens[r]] for r in rows], device=logits.device)).squeeze(1)
    chosen_list = chosen.tolist()
    if top:
        values, ids = torch.topk(logprobs, top, dim=-1)
        values_list, ids_list = values.tolist(), ids.tolist()
    else:
        values_list, ids_list = [[] for _ in rows], [[] for _ in rows]
    return [StepLogprobs(chosen_list[i], ids_list[i], values_list[i]) for i in range(len(rows))]
