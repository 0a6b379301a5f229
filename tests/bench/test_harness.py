"""The benchmark harness: rows carry their spread, ratios are taken per round, and a worker process
answers one request at a time (the baselines' own processes)."""

from __future__ import annotations

import math

import pytest

from benchmarks.harness import Row, ratio_row
from benchmarks.processes import Worker
from benchmarks.run import format_table


def test_a_row_from_samples_carries_median_and_spread() -> None:
    row = Row.from_samples("b", "case", "x/s", [3.0, 1.0, 2.0], higher_is_better=True)
    assert (row.median, row.low, row.high, row.runs) == (2.0, 1.0, 3.0, 3)
    assert row.spread == "1..3"


def test_a_computed_row_has_no_spread_of_its_own() -> None:
    row = Row("b", "added latency", "ms", 0.4, 0.4, 1)
    assert math.isnan(row.low)
    assert row.spread == ""


def test_ratios_are_taken_within_each_round() -> None:
    # The rounds drift (the machine's load) but within each one the numerator is half the denominator.
    row = ratio_row("b", "grpc / in-process", [50.0, 100.0, 200.0], [100.0, 200.0, 400.0])
    assert (row.case, row.median, row.low, row.high, row.unit) == ("grpc / in-process, per round", 0.5, 0.5, 0.5, "x")


def test_ratio_rows_refuse_unpaired_rounds() -> None:
    with pytest.raises(ValueError):
        ratio_row("b", "c", [1.0, 2.0], [1.0])


def test_the_table_shows_the_spread_and_the_ratio() -> None:
    base = Row.from_samples("b", "base", "x/s", [10.0, 12.0])
    other = Row.from_samples("b", "other", "x/s", [5.0, 6.0], baseline="base")
    table = format_table([base, other])
    assert "min..max" in table.splitlines()[0]
    assert "5..6" in table
    assert "0.50x base" in table


async def test_a_worker_answers_each_request_and_reports_failures() -> None:
    worker = await Worker.start("tests.bench.echo_worker")
    try:
        assert await worker.ask({"x": 21}) == {"double": 42}
        with pytest.raises(RuntimeError, match="asked to fail"):
            await worker.ask({"fail": True})
        assert await worker.ask({"x": 1}) == {"double": 2}  # a failure leaves the worker serving
    finally:
        await worker.stop()
    assert worker.process.returncode == 0  # the end of its input ends it
