"""Memory: peak RSS of the process tree and, on GPU, NVML and torch CUDA peaks, sampled in the
background while a fixed generation workload runs; peaks are reset at the start of every trial."""

from __future__ import annotations

from smallbench.backends.base import Backend, LoadedModelInfo
from smallbench.errors import SmallbenchError
from smallbench.suites.base import ShapedSettings, Suite, SuiteContext, SuiteResult, synthetic_prompt
from smallbench.telemetry import MemorySampler


class MemorySettings(ShapedSettings):
    batch_size: int = 1
    interval_s: float = 0.01


def predict(info: LoadedModelInfo, s: MemorySettings) -> dict[str, int] | None:
    """What ``smallbench fit`` predicts this run holds beyond the process's baseline: the weights (parameters
    counted from the config × bits per weight of the loaded type) and the KV cache: the tokens the backend
    allocates up front (vLLM's blocks, llama.cpp's context), else the batch's prompt + generated tokens; plus the
    weights the engine says it holds twice (vLLM on CPU: each embedding's packed copy)."""
    from smallbench import sizing

    kind = info.quant or info.dtype
    if not info.config or not kind:
        return None
    try:
        weights = sizing.weights_bytes(sizing.count_params(info.config).total, kind)
        kv_dtype = info.dtype if info.dtype in sizing.DTYPE_BYTES else "float16"
        kv = sizing.kv_size(info.config, kv_dtype)
    except SmallbenchError:
        return None
    if info.kv_cache_tokens:
        kv_bytes = info.kv_cache_bytes or kv.bytes(info.kv_cache_tokens)
    else:
        kv_bytes = kv.bytes(s.prompt_tokens + s.gen_tokens, s.batch_size)
    copies = info.weight_copies_bytes or 0
    return {"weights": weights, "kv_cache": int(kv_bytes), "weight_copies": copies,
            "total": weights + int(kv_bytes) + copies}


def measured_footprint(
    trials: dict[str, list[float]], load, device: str, runtime: int | None = None
) -> tuple[float, str]:
    """The model's footprint while it works, and where it was read. On a GPU, the device memory: torch's peak
    allocation where the backend reports it (weights, KV cache, activations; no CUDA context), else NVML's peak
    for the process tree. On a CPU (also a CPU run on a GPU machine, whose CUDA context NVML would count), the
    trial peaks of RSS over the pre-load baseline (load transients, such as a conversion copy or a dummy head
    allocated before it is tied, stay in load_peak_rss_bytes); for a multi-process engine the baseline also holds
    ``runtime``, what the engine's own processes held before the model loaded."""
    gpu = (("torch_cuda_peak_allocated_bytes", "torch CUDA peak allocated"),
           ("nvml_process_peak_bytes", "NVML process-tree peak"))
    for key, source in gpu if device.lower() != "cpu" else ():
        if max(trials.get(key, [0.0])) > 0:
            return max(trials[key]), source
    rss = max(trials.get("peak_rss_bytes", [load.rss_after_bytes])) - load.rss_before_bytes
    if runtime:
        return rss - runtime, "process-tree RSS over the pre-load baseline and the engine processes' runtime"
    return rss, "process-tree RSS over the pre-load baseline"


class MemorySuite(Suite):
    name = "memory"
    settings_model = MemorySettings
    runs_first = True  # the peaks of a process that other suites' work has already grown would say little

    def run(self, backend: Backend, settings: MemorySettings, ctx: SuiteContext) -> SuiteResult:
        s = settings
        out = SuiteResult()
        trials: dict[str, list[float]] = {}
        timelines = []
        for i, measured in s.trials():
            prompts = [synthetic_prompt(backend, s.prompt_tokens, s.seed + 1000 * i + j) for j in range(s.batch_size)]
            backend.reset_peak_memory()
            with MemorySampler(interval=s.interval_s) as sampler:
                backend.generate_batch(prompts, s.gen_tokens, ignore_eos=True)
            if not measured:
                continue
            p = sampler.peaks
            got = {
                "peak_rss_bytes": p.rss_peak_bytes,
                "workload_rss_delta_bytes": p.rss_peak_bytes - p.rss_start_bytes,
                "nvml_process_peak_bytes": p.nvml_process_peak_bytes,
                "nvml_device_peak_bytes": p.nvml_device_peak_bytes,
                **backend.memory_stats(),
            }
            for k, v in got.items():
                if v is not None:
                    trials.setdefault(k, []).append(float(v))
            timelines.append(p.timeline)
        for k, v in trials.items():
            out.add(k, v)
        info = ctx.model_info  # what the backend set aside, where it says
        for name, value in (("weights_bytes", info.weights_bytes), ("kv_cache_reserved_bytes", info.kv_cache_bytes),
                            ("kv_cache_capacity_tokens", info.kv_cache_tokens),
                            ("weight_copies_bytes", info.weight_copies_bytes),
                            ("engine_runtime_bytes", info.engine_runtime_bytes)):
            if value is not None:
                out.add_value(name, value)
        load = ctx.load
        out.add_value("load_rss_delta_bytes", load.rss_after_bytes - load.rss_before_bytes)
        out.add_value("load_peak_rss_bytes", load.rss_peak_bytes)
        peak, source = measured_footprint(trials, load, ctx.device, info.engine_runtime_bytes)
        if (predicted := predict(info, s)) is not None and peak > 0:
            out.add_value("measured_model_bytes", peak)
            out.extra["measured_from"] = source
            out.add_value("predicted_model_bytes", predicted["total"])
            out.add_value("prediction_error_pct", 100 * (predicted["total"] - peak) / peak)
            out.extra["prediction"] = predicted
            if engine := trials.get("engine_model_bytes"):  # the engine's own accounting: no runtime noise
                measured = max(engine)
                out.add_value("engine_prediction_error_pct", 100 * (predicted["total"] - measured) / measured)
        out.extra["timeline_last_trial"] = timelines[-1] if timelines else []
        return out
