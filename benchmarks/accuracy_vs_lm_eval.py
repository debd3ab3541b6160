"""Wall time of smallbench's accuracy suite vs. lm-eval's own CLI on the same model, tasks, data and batch size.

Both run as fresh processes, alternated (A B, then B A, ...) so drift hits both equally. Both read
the same local task files (the override YAMLs smallbench generates are handed to ``lm-eval
--include_path``), so the documents, prompts and scoring are identical; the script also prints
both tools' headline numbers so the comparison is of equal work.

    python benchmarks/accuracy_vs_lm_eval.py --tasks wikitext,blimp --data-dir ../shared/data --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="wikitext,blimp")
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()

    from smallbench import load_results, tiny_model
    from smallbench.tasks import resolve_tasks, task_manager

    model_path = tiny_model.model_dir()
    specs = resolve_tasks(args.tasks.split(","))
    work = Path(tempfile.mkdtemp(prefix="sb-bench-acc-"))
    task_manager(specs, args.data_dir.resolve(), None, work)  # writes the local-data task YAMLs under work/tasks
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    limit = ["--limit", str(args.limit)] if args.limit else []
    ours = [sys.executable, "-m", "smallbench.cli", "run", "--model", "tiny-llama", "--backend", "transformers",
            "--suite", "accuracy", "--tasks", args.tasks, "--data-dir", str(args.data_dir),
            "--batch-size", str(args.batch_size), "--force", "--output", str(work / "sb"), *limit]  # fmt: skip
    theirs = [sys.executable, "-m", "lm_eval", "run", "--model", "hf",
              "--model_args", f"pretrained={model_path},dtype=float32", "--device", "cpu",
              "--tasks", ",".join(s.lm_eval for s in specs), "--include_path", str(work / "tasks"),
              "--batch_size", str(args.batch_size), "--output_path", str(work / "lm"), *limit]  # fmt: skip

    rows = []
    for r in range(args.rounds):
        order = [("smallbench", ours), ("lm_eval", theirs)]
        if r % 2:
            order.reverse()
        walls = {name: timed(cmd, env) for name, cmd in order}
        rows.append(walls)
        print(f"round {r + 1}: smallbench {walls['smallbench']:.1f} s, lm_eval {walls['lm_eval']:.1f} s, "
              f"ratio {walls['smallbench'] / walls['lm_eval']:.3f}", flush=True)  # fmt: skip

    df = load_results(work / "sb")
    top = df[df.subtask.isna()]
    lm = json.loads(sorted((work / "lm").rglob("results_*.json"))[-1].read_text())
    scores = {**lm["results"], **lm.get("groups", {})}
    print("\nheadline numbers (smallbench | lm_eval hf):")
    for _, row in top.iterrows():
        ref = scores.get(row["task"], {}).get(f"{row['metric']},{row['filter']}")
        print(f"  {row['task']:<10} {row['metric']:<16} {row['value']:.6f} | {ref:.6f}")
    ratios = [w["smallbench"] / w["lm_eval"] for w in rows]
    print(f"\nmedian wall time: smallbench {statistics.median(w['smallbench'] for w in rows):.1f} s, "
          f"lm_eval {statistics.median(w['lm_eval'] for w in rows):.1f} s; "
          f"ratio smallbench/lm_eval: median {statistics.median(ratios):.3f} (rounds: "
          + ", ".join(f"{x:.3f}" for x in ratios) + ")")  # fmt: skip


if __name__ == "__main__":
    main()
