"""Synthetic result records for the leaderboard's tests and benchmark: valid records of every suite, built through
the same code the suites use (SuiteResult), with made-up numbers. Never committed to results/."""

from __future__ import annotations

import json
import random
from pathlib import Path

from smallbench.backends.base import BackendInfo
from smallbench.hardware import GPUInfo, HardwareInfo
from smallbench.results import ModelRecord, ResultRecord, write_record
from smallbench.suites.base import SuiteResult

MODELS = [("minicpm5-1b", 1_080_632_832), ("tiny-aya-global", 3_349_227_520), ("qwen3-0.6b", 596_049_920),
          ("nemotron-3-nano-4b", 3_970_000_000), ("llama-3.2-1b", 1_235_814_400)]
BACKENDS = ["transformers", "vllm", "llama-cpp", "mlx"]
QUANTS = ["bfloat16", "Q8_0", "Q4_K_M", "4bit"]
HOSTILE = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=1</script>'


def hardware(kind: int) -> HardwareInfo:
    gpus = [GPUInfo(index=0, name=["NVIDIA H100 80GB HBM3", "NVIDIA GeForce RTX 4090"][kind - 1],
                    memory_total_bytes=[80, 24][kind - 1] * 2**30)] if kind else []
    return HardwareInfo(os="Linux", arch="x86_64", cpu_model="Test CPU @ 2.5GHz", cpu_cores_physical=2,
                        cpu_threads=2, ram_bytes=24 * 2**30, gpus=gpus)


def record(suite: str, model: str, backend: str, quant: str, hw: HardwareInfo, rng: random.Random,
           dummy: bool = False, params: int | None = None, prompt: int = 128) -> ResultRecord:
    speed = rng.uniform(5, 200)
    out = SuiteResult()
    if suite == "latency":
        out.add("ttft", [rng.uniform(0.02, 0.5) for _ in range(5)], per_trial=True)
        out.add("tpot", [1 / (speed * rng.uniform(0.95, 1.05)) for _ in range(5)], per_trial=True)
        out.add("itl", [1 / (speed * rng.uniform(0.8, 1.2)) for _ in range(40)])
        out.add("decode_tok_s", [speed * rng.uniform(0.95, 1.05) for _ in range(5)], per_trial=True)
        out.add("decode_bandwidth_pct", [rng.uniform(30, 90) for _ in range(5)], per_trial=True, batch_size=1)
        out.extra["roofline"] = ({"bandwidth_bytes_s": 3.35e12, "source": f"NVML: {hw.gpus[0].name} memory clock"}
                                 if hw.gpus else {"bandwidth_bytes_s": 48e9, "source": "measured: best multi-threaded "
                                                  "read of memory on this machine, 3 runs since 2026-12-01"})
    elif suite == "throughput":
        for b in (1, 4, 16):
            out.add("output_tok_s", [speed * b**0.7 * rng.uniform(0.95, 1.05) for _ in range(3)], per_trial=True,
                    batch_size=b)
    elif suite == "memory":
        out.add("peak_rss_bytes", [rng.uniform(0.5, 20) * 2**30 for _ in range(3)])
    elif suite == "accuracy":
        for task in ("arc_easy", "hellaswag"):
            out.metrics.append(_acc(task, rng.uniform(0.3, 0.8)))
    return ResultRecord(
        smallbench_version="0.1.0", cell_id=f"{model}-{backend}-{quant}-{suite}-{rng.random():.9f}", run_id="synthetic",
        status="ok", suite=suite, settings={} if suite == "accuracy" else {"prompt_tokens": prompt, "gen_tokens": 32},
        model=ModelRecord(id=model, dummy=dummy, params_total=params, quant=quant),
        backend=BackendInfo(name=backend, version="1.0", device="cpu"), hardware=hw, metrics=out.metrics,
        samples=out.samples, extra=out.extra,
    )


def _acc(task: str, value: float):
    from smallbench.results import Metric

    return Metric(name="acc", unit="fraction", value=value, stderr=0.01, higher_is_better=True,
                  labels={"task": task, "subtask": None, "n": 100, "filter": "none"})


def write_synthetic(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` records: the four suites of one (model, backend, quant, hardware) cell after another, cycling over
    models, then backends, quants and hardware (beyond 960 records the model names get a version suffix)."""
    rng = random.Random(seed)
    hws = [hardware(k) for k in range(3)]
    suites = ["latency", "throughput", "memory", "accuracy"]
    paths = []
    for i in range(n):
        combo = i // len(suites)
        model, params = MODELS[combo % len(MODELS)]
        name = model if combo < 240 else f"{model}-v{combo // 240}"
        rec = record(suites[i % len(suites)], name, BACKENDS[combo // 5 % 4], QUANTS[combo // 20 % 4],
                     hws[combo // 80 % 3], rng, params=params)
        paths.append(folder / f"{i:06d}.json")
        write_record(rec, paths[-1])
    return paths


def write_hostile(folder: Path) -> dict[str, str]:
    """Files that must not reach the table as records, and one record whose model name is markup. Returns the
    file name → what is wrong with it."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(1)
    hw = hardware(0)
    write_record(record("latency", HOSTILE, "llama-cpp", "Q4_K_M", hw, rng), folder / "hostile-name.json")
    good = json.loads(record("memory", "minicpm5-1b", "llama-cpp", "Q4_K_M", hw, rng).model_dump_json())
    bad = {
        "not-json.json": b"{ this is not json",
        "not-utf8.json": b'{"model": "\xff\xfe"}',
        "future-schema.json": json.dumps({**good, "schema_version": 99}).encode(),
        "wrong-schema.json": json.dumps({"hello": "world"}).encode(),
        "absurd.json": json.dumps({**good, "metrics": [{**good["metrics"][0], "value": -5.0}]}).encode(),
        "nan.json": json.dumps({**good, "metrics": [{**good["metrics"][0], "value": float("nan")}]}).encode(),
    }
    for name, data in bad.items():
        (folder / name).write_bytes(data)
    return {name: name.removesuffix(".json") for name in bad}
