"""What every benchmark shares: repeated timing, median / p99, and rows for one table.

A benchmark module `benchmarks/bench_<name>.py` defines `run(quick: bool) -> list[Row]`. Each row
is one measured figure; a row may name a baseline row (measured in the same run) so that the
table shows the ratio against it.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Stats:
    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def p99(self) -> float:
        return percentile(self.samples, 99)


def percentile(samples, q: float) -> float:
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def repeat(fn: Callable[[], object], repeats: int, warmup: int = 1) -> Stats:
    """Times `fn` `repeats` times after `warmup` untimed calls; seconds per call."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return Stats(tuple(samples))


@dataclass(frozen=True)
class Row:
    """One figure: `median` and `p99` of the samples in `unit`, and their spread `low`..`high` (the
    smallest and largest sample; NaN where the row was computed from other rows, not sampled);
    `baseline` names a row of the same benchmark whose median this one is compared with (ratio =
    this / baseline).

    The spread is part of every figure: a median of a few rounds on a busy machine says little
    without it, and the p99 of a rate is its best round, not its worst."""

    benchmark: str
    case: str
    unit: str
    median: float
    p99: float
    runs: int
    baseline: str = ""
    higher_is_better: bool = False
    low: float = math.nan
    high: float = math.nan

    @classmethod
    def from_stats(cls, benchmark: str, case: str, unit: str, stats: Stats, scale: float = 1.0, **kw) -> Row:
        return cls.from_samples(benchmark, case, unit, [s * scale for s in stats.samples], **kw)

    @classmethod
    def from_samples(cls, benchmark: str, case: str, unit: str, samples: Sequence[float], **kw) -> Row:
        values = tuple(samples)
        return cls(
            benchmark,
            case,
            unit,
            statistics.median(values),
            percentile(values, 99),
            len(values),
            low=min(values),
            high=max(values),
            **kw,
        )

    @property
    def spread(self) -> str:
        """`low..high`, or "" where the row has no samples of its own."""
        return "" if math.isnan(self.low) else f"{self.low:.4g}..{self.high:.4g}"


def ratio_row(
    benchmark: str,
    case: str,
    numerators: Sequence[float],
    denominators: Sequence[float],
    higher_is_better: bool = True,
) -> Row:
    """The ratio of two figures measured in the same rounds, one ratio per round, then their median
    and spread: robust to the machine's load drifting between rounds, and never a difference that
    could read as a negative cost."""
    if len(numerators) != len(denominators):
        raise ValueError(f"{case}: {len(numerators)} numerators for {len(denominators)} denominators")
    ratios = [a / b for a, b in zip(numerators, denominators, strict=True)]
    return Row.from_samples(benchmark, f"{case}, per round", "x", ratios, higher_is_better=higher_is_better)
