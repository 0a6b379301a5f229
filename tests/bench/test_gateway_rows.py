"""bench_gateway's added-latency row: a round where the gateway side came out faster counts as 0
(noise, not a negative cost), and the row says how many rounds did."""

from __future__ import annotations

from benchmarks.bench_gateway import _overhead_row


def test_the_overhead_row_never_claims_a_negative_cost() -> None:
    row = _overhead_row("unary p50 latency", [1.5, 0.9, 1.25], [1.0, 1.0, 1.0])
    assert (row.median, row.low, row.high) == (0.25, 0.0, 0.5)
    assert "1 of 3 rounds below 0 counted as 0" in row.case


def test_the_overhead_row_names_no_clamping_when_none_happened() -> None:
    row = _overhead_row("unary p50 latency", [1.5, 1.25], [1.0, 1.0])
    assert (row.low, row.high) == (0.25, 0.5)
    assert row.case == "gateway unary p50 latency overhead, per round (goal <= 0.4)"
