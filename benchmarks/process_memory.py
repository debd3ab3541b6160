"""A command's process tree, polled every 0.5 s: the peaks of summed RSS, PSS and USS, and each process at the
moment of the RSS peak. RSS counts a shared page once per process that maps it; PSS splits it among them; USS
counts only a process's own pages. The gap between RSS and PSS is what `peak_rss_bytes` (summed RSS, sampled
every 20 ms) overstates for a multi-process engine such as vLLM.

Run: python benchmarks/process_memory.py smallbench run -b vllm -m tiny-llama -s memory -o /tmp/out ...
"""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

GIB = 2**30
KINDS = ("rss", "pss", "uss")


def main(argv: list[str]) -> None:
    child = subprocess.Popen(argv)
    root = psutil.Process(child.pid)
    peaks = dict.fromkeys(KINDS, 0)
    at_peak: list[tuple[int, str, dict[str, int]]] = []
    while child.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            break
        rows = []
        for p in procs:
            try:
                info = p.memory_full_info()
                rows.append((p.pid, " ".join(p.cmdline())[:60], {k: getattr(info, k) for k in KINDS}))
            except psutil.Error:
                continue
        sums = {k: sum(r[2][k] for r in rows) for k in KINDS}
        if sums["rss"] >= peaks["rss"]:
            at_peak = rows
        peaks = {k: max(peaks[k], sums[k]) for k in KINDS}
        time.sleep(0.5)
    print("peaks (GiB): " + ", ".join(f"{k.upper()} {v / GIB:.3f}" for k, v in peaks.items()))
    for pid, cmd, m in at_peak:
        print(f"  {pid:>7} " + " ".join(f"{k.upper()} {v / GIB:6.3f}" for k, v in m.items()) + f"  {cmd}")
    sys.exit(child.returncode)


if __name__ == "__main__":
    main(sys.argv[1:])
