"""What every benchmark shares: repeated timing, median / p99, and rows for one table.

A benchmark module `benchmarks/bench_<name>.py` defines `run(quick: bool) -> list[Row]`. Each row
is one measured figure; a row may name a baseline row (measured in the same run) so that the
table shows the ratio against it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
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
    """One figure: `median` and `p99` of the samples in `unit`; `baseline` names a row of the same
    benchmark whose median this one is compared with (ratio = this / baseline)."""

    benchmark: str
    case: str
    unit: str
    median: float
    p99: float
    runs: int
    baseline: str = ""
    higher_is_better: bool = False

    @classmethod
    def from_stats(cls, benchmark: str, case: str, unit: str, stats: Stats, scale: float = 1.0, **kw) -> Row:
        values = tuple(s * scale for s in stats.samples)
        return cls(benchmark, case, unit, statistics.median(values), percentile(values, 99), len(values), **kw)
