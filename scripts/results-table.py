#!/usr/bin/env python
"""The CPU machines' table in results/README.md, from the records (never typed by hand).

Usage: python scripts/results-table.py [RESULTS]  → markdown on stdout: the leaderboard's rows
(smallbench.leaderboard) that ran on a CPU, a few columns, three significant digits."""

from __future__ import annotations

import math
import sys

from smallbench import leaderboard as L
from smallbench.results import scan_records

COLUMNS = ["model", "weights", "backend", "config", "quant", L.SHAPE, "machine", L.TTFT, L.TPOT, L.DECODE,
           L.THROUGHPUT, "best at", L.PEAK, L.ROOFLINE, L.BOUND, L.BOUND_KIND, L.BUSY, L.ACC_AVG]


def number(v: float | str) -> str:
    if isinstance(v, str):
        return v
    return "" if math.isnan(v) else f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}"


def main(folder: str = "results") -> None:
    records, _skipped = scan_records(folder)
    board = L.build(records)
    df = board.table
    cpu = df[df.device == "cpu"].copy()  # a GPU machine's rows say cuda (or "" for a load that failed)
    cpu["machine"] = cpu.hardware.map(lambda h: "AMD" if "AMD" in h else "Intel" if "Intel" in h else h)
    cols = [*COLUMNS, *L.accuracy_columns(cpu)]
    cpu = cpu.sort_values(["model", "machine", "backend", "config", "quant", L.SHAPE], kind="stable")
    out = cpu[cols].apply(lambda col: col.map(number)).fillna("")
    print(out.to_markdown(index=False, disable_numparse=True))
    print(f"\n{board.read} records (the GPU's included), {len(cpu)} rows from the CPU machines")


if __name__ == "__main__":
    main(*sys.argv[1:])
