"""A whole matrix's wall time with one load per suite (``--isolate suite``, one process each, as before groups) and
with one load per model × backend (``--isolate group``, the default), side by side in one run.

    python benchmarks/matrix_wall_time.py [--backends transformers,vllm,llama-cpp,mlx] [--rounds 1]

Each round runs the same matrix (tiny-llama × the backends × latency, throughput, memory, accuracy on a small
offline multiple-choice task) into fresh result folders, first one way then the other (the order swaps every
round, so a machine that drifts favours neither). Prints each run's wall time, the ratio suite ÷ group per round,
and each backend's share from its records' durations.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUITES = "latency,throughput,memory,accuracy"
ARGS = ["--prompt-tokens", "32", "--gen-tokens", "16", "--batch-sizes", "1,4", "--repeats", "3", "--warmup", "1",
        "--tasks", "arc_easy", "--limit", "20"]


def run(isolate: str, backends: str, data: Path, out: Path) -> tuple[float, dict[str, float]]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "smallbench.cli", "run", "-b", backends, "-s", SUITES, *ARGS,
                           "--data-dir", str(data), "--isolate", isolate, "-o", str(out)],
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{isolate} run failed:\n{proc.stderr[-2000:]}")
    per_backend: dict[str, float] = {}
    for f in out.glob("*.json"):
        rec = json.loads(f.read_text())
        per_backend[rec["backend"]["name"]] = per_backend.get(rec["backend"]["name"], 0.0) + rec["duration_s"]
    return wall, per_backend


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", default="transformers,vllm,llama-cpp,mlx")
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from smallbench.hardware import hardware_info
    from tests import task_data  # the tests' offline task files: no Hub

    hw = hardware_info()
    print(f"machine: {hw.cpu_model}, {hw.cpu_threads} CPU threads; python {platform.python_version()}")
    print(f"matrix: tiny-llama × {args.backends} × {SUITES}; {' '.join(ARGS)}")
    with tempfile.TemporaryDirectory() as tmp:
        data = task_data.build(Path(tmp) / "data")
        walls: dict[str, list[float]] = {"suite": [], "group": []}
        for r in range(args.rounds):
            order = ("suite", "group") if r % 2 == 0 else ("group", "suite")
            for isolate in order:
                wall, per = run(isolate, args.backends, data, Path(tmp) / f"{isolate}-{r}")
                walls[isolate].append(wall)
                shares = ", ".join(f"{b} {s:.0f} s" for b, s in sorted(per.items()))
                print(f"round {r}: --isolate {isolate:<5} wall {wall:7.1f} s  (records' durations: {shares})")
            print(f"round {r}: suite ÷ group = {walls['suite'][-1] / walls['group'][-1]:.2f}×")


if __name__ == "__main__":
    main()
