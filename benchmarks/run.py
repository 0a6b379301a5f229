"""Runs every benchmark (benchmarks/bench_*.py) and prints one table.

python -m benchmarks.run            # all, full size
python -m benchmarks.run --quick    # all, fewer repeats
python -m benchmarks.run llm tts    # only these
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import time
from pathlib import Path

from benchmarks.harness import Row
from capmesh.services.runtime.logging import configure_logging


def discover() -> list[str]:
    folder = Path(__file__).parent
    return sorted(
        m.name.removeprefix("bench_") for m in pkgutil.iter_modules([str(folder)]) if m.name.startswith("bench_")
    )


def format_table(rows: list[Row]) -> str:
    by_key = {(r.benchmark, r.case): r for r in rows}
    header = ("benchmark", "case", "median", "p99", "min..max", "unit", "runs", "vs baseline")
    lines = [header]
    for r in rows:
        ratio = ""
        base = by_key.get((r.benchmark, r.baseline)) if r.baseline else None
        if base is not None and base.median:
            ratio = f"{r.median / base.median:.2f}x {base.case}"
        lines.append((r.benchmark, r.case, f"{r.median:.4g}", f"{r.p99:.4g}", r.spread, r.unit, str(r.runs), ratio))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    rendered = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)) for line in lines]
    rendered.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(rendered)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default all: {', '.join(discover())})")
    parser.add_argument("--quick", action="store_true", help="fewer repeats, for a smoke run")
    options = parser.parse_args()
    configure_logging("warning", json=False)  # in-process servers log; keep the table readable
    rows: list[Row] = []
    for name in options.names or discover():
        started = time.perf_counter()
        module = importlib.import_module(f"benchmarks.bench_{name}")
        print(f"running {name} ...", file=sys.stderr, flush=True)
        rows.extend(module.run(quick=options.quick))
        print(f"  {name} took {time.perf_counter() - started:.1f}s", file=sys.stderr, flush=True)
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
