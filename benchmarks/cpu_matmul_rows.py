"""Why batching barely pays for Transformers on some CPUs: torch's float32 linear layer timed for 1, 4, 16 and 64
rows against one weight of Tiny Aya's MLP shape (2048 → 11008), side by side in one run, as a ratio to one row.
A batch-B decode step multiplies B rows by every weight; if B rows cost B times one row, batching buys nothing.
Run each variant in a fresh process (MKL reads its variables at load):
    python benchmarks/cpu_matmul_rows.py
    MKL_DEBUG_CPU_TYPE=5 python benchmarks/cpu_matmul_rows.py
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    torch.manual_seed(0)
    weight = torch.randn(11008, 2048)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}")
    base = None
    for rows in (1, 4, 16, 64):
        x = torch.randn(rows, 2048)
        for _ in range(3):  # warm-up, discarded
            torch.nn.functional.linear(x, weight)
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            torch.nn.functional.linear(x, weight)
            times.append(time.perf_counter() - t)
        med = statistics.median(times)
        base = base or med
        print(f"{rows:3d} rows: median {med * 1e3:7.2f} ms (min {min(times) * 1e3:.2f}, max {max(times) * 1e3:.2f})"
              f"  {med / base:5.2f}× one row  {2 * rows * weight.numel() / med / 1e9:6.1f} GFLOP/s")


if __name__ == "__main__":
    main()
