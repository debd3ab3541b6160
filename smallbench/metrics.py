"""Every metric smallbench reports, defined once, computed from raw timestamps.

Backends only *record* timestamps (``time.perf_counter()`` seconds) into the traces below;
suites turn traces into numbers with the functions in this module and nothing else.
Every metric a record can carry is declared once in :data:`METRICS` (unit, direction, one-line
definition); suites, the CLI, the docs' reference table and the leaderboard read it from there.
The longer prose lives in ``docs/metrics.md``; each function's docstring is the formula.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class GenerationTrace:
    """One streamed request: when it was sent and when each chunk of output tokens arrived.

    ``chunks`` holds ``(arrival_time, n_tokens)``; a backend that emits one token per step records
    ``n_tokens == 1`` each time. ``token_ids`` are the generated ids (for parity checks).
    ``engine_ttft`` is the engine's own TTFT for this request where the engine reports one
    (vLLM's ``time_to_first_token``); it is shown beside, never mixed with, the client-side TTFT.
    """

    t_send: float
    n_prompt: int
    chunks: list[tuple[float, int]] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    engine_ttft: float | None = None

    @property
    def n_out(self) -> int:
        return sum(k for _, k in self.chunks)


@dataclass
class BatchTrace:
    """A batch of ``batch`` equal-length prompts generated together (offline throughput).

    ``t_first``: the first output token of every sequence exists (prefill finished).
    ``t_last``: the last output token of every sequence exists.
    """

    t_send: float
    t_first: float
    t_last: float
    batch: int
    n_prompt: int
    n_out: list[int]
    token_ids: list[list[int]] = field(default_factory=list)  # per sequence, where the backend returns them

    @classmethod
    def of(cls, traces: list[GenerationTrace], t_send: float | None = None) -> BatchTrace:
        """A batch's trace from its sequences' traces (sent at ``t_send``, else at the earliest send):
        prefill ends when the last sequence has its first token, decode when the last has its last."""
        if any(not t.chunks for t in traces):
            raise MetricError("a sequence of the batch produced no tokens")
        return cls(
            t_send=min(t.t_send for t in traces) if t_send is None else t_send,
            t_first=max(t.chunks[0][0] for t in traces), t_last=max(t.chunks[-1][0] for t in traces),
            batch=len(traces), n_prompt=traces[0].n_prompt, n_out=[t.n_out for t in traces],
            token_ids=[t.token_ids for t in traces],
        )


class MetricError(ValueError):
    """A trace that cannot yield the requested metric (e.g. no tokens)."""


def ttft(trace: GenerationTrace) -> float:
    """TTFT = time of the first chunk carrying a token − time the request was sent (s)."""
    if not trace.chunks:
        raise MetricError("no output tokens")
    return trace.chunks[0][0] - trace.t_send


def e2e_latency(trace: GenerationTrace) -> float:
    """E2E latency = time of the last token − time the request was sent (s)."""
    if not trace.chunks:
        raise MetricError("no output tokens")
    return trace.chunks[-1][0] - trace.t_send


def tpot(trace: GenerationTrace) -> float:
    """TPOT = (E2E − TTFT) / (N_out − 1), defined only for N_out > 1 (s/token)."""
    n = trace.n_out
    if n < 2:
        raise MetricError("TPOT needs at least 2 output tokens")
    return (e2e_latency(trace) - ttft(trace)) / (n - 1)


def itl(trace: GenerationTrace) -> list[float]:
    """Inter-token latencies: the gap between successive chunks, split evenly over the chunk's tokens.

    A chunk carrying k tokens after a gap g contributes k values of g/k. Extra tokens that arrive
    inside the *first* chunk have no measured gap and contribute nothing, so when every chunk holds
    one token ``len(itl) == N_out − 1`` and ``sum(itl) == E2E − TTFT``.
    """
    gaps: list[float] = []
    for (t_prev, _), (t, k) in zip(trace.chunks, trace.chunks[1:], strict=False):
        if k <= 0:
            continue
        gaps.extend([(t - t_prev) / k] * k)
    return gaps


def prefill_tps(trace: GenerationTrace) -> float:
    """Prefill tok/s of one request = N_prompt / TTFT (llama-bench ``pp`` on a single sequence)."""
    return trace.n_prompt / ttft(trace)


def decode_tps(trace: GenerationTrace) -> float:
    """Decode tok/s of one request = (N_out − 1) / (E2E − TTFT) = 1 / TPOT.

    The first output token comes out of the prefill pass; the remaining N_out − 1 each cost one
    decode step, so this is tokens produced by decode steps per second of decode time.
    """
    return 1.0 / tpot(trace)


def batch_prefill_tps(trace: BatchTrace) -> float:
    """Batch prefill tok/s = batch × N_prompt / (t_first − t_send)."""
    dt = trace.t_first - trace.t_send
    if dt <= 0:
        raise MetricError("non-positive prefill time")
    return trace.batch * trace.n_prompt / dt


def batch_decode_tps(trace: BatchTrace) -> float:
    """Batch decode tok/s = Σ (N_out,i − 1) / (t_last − t_first)."""
    dt = trace.t_last - trace.t_first
    produced = sum(n - 1 for n in trace.n_out)
    if dt <= 0 or produced <= 0:
        raise MetricError("decode needs at least 2 output tokens per sequence")
    return produced / dt


def batch_output_tps(trace: BatchTrace) -> float:
    """Batch output tok/s = Σ N_out,i / (t_last − t_send): prefill included, as ``vllm bench throughput``
    reports output tokens per second of the whole ``generate`` call."""
    dt = trace.t_last - trace.t_send
    if dt <= 0:
        raise MetricError("non-positive generation time")
    return sum(trace.n_out) / dt


def output_throughput(traces: list[GenerationTrace]) -> float:
    """Output tok/s of concurrent requests = Σ N_out / (first send → last completion)."""
    if not traces:
        raise MetricError("no requests")
    return sum(t.n_out for t in traces) / _window(traces)


def request_throughput(traces: list[GenerationTrace]) -> float:
    """Requests/s of concurrent requests = N_requests / (first send → last completion)."""
    if not traces:
        raise MetricError("no requests")
    return len(traces) / _window(traces)


def _window(traces: list[GenerationTrace]) -> float:
    start = min(t.t_send for t in traces)
    return max(e2e_latency(t) + t.t_send for t in traces) - start


def goodput(traces: list[GenerationTrace], ttft_slo: float | None, tpot_slo: float | None) -> float:
    """Goodput = requests meeting every given SLO (TTFT ≤ ttft_slo, TPOT ≤ tpot_slo) per second
    of the same window as :func:`output_throughput`. A request with N_out < 2 meets a TPOT SLO."""
    if not traces:
        raise MetricError("no requests")
    good = 0
    for t in traces:
        ok = ttft_slo is None or ttft(t) <= ttft_slo
        if ok and tpot_slo is not None and t.n_out > 1:
            ok = tpot(t) <= tpot_slo
        good += ok
    return good / _window(traces)


def roofline_fraction(decode_tok_s: float, bytes_per_token: float, peak_bandwidth_bytes_s: float) -> float:
    """Share of the memory-bandwidth limit reached: decode tok/s × bytes read per token ÷ peak bandwidth."""
    return decode_tok_s * bytes_per_token / peak_bandwidth_bytes_s


@dataclass(frozen=True)
class MetricInfo:
    """What one metric is: canonical unit (what records store), direction, one-line definition, and the range a
    real measurement can take (a value outside it marks the record as corrupt; see smallbench.leaderboard)."""

    unit: str
    higher_is_better: bool | None
    definition: str
    low: float = 0.0
    high: float = math.inf

    def plausible(self, value: float) -> bool:
        return math.isfinite(value) and self.low <= value <= self.high


_TIME = 86_400.0  # a day: no single request or load takes longer
_RATE = 1e8  # tok/s: far above any device
_BYTES = 2.0**50  # 1 PiB
_PCT = 1e4


def _m(unit: str, better: bool | None, definition: str, low: float = 0.0, high: float | None = None) -> MetricInfo:
    default = {"s": _TIME, "s/token": _TIME, "tok/s": _RATE, "req/s": _RATE, "bytes": _BYTES, "tokens": 1e12,
               "%": _PCT, "fraction": 1.0, "J/token": 1e6}.get(unit, math.inf)
    return MetricInfo(unit, better, definition, low, default if high is None else high)


#: Every metric smallbench records. A suite cannot record a name that is not here (SuiteResult.add).
METRICS: dict[str, MetricInfo] = {
    # per request: latency suite (and serving, per concurrency level)
    "ttft": _m("s", False, "time to first token: first chunk carrying a token − request sent"),
    "tpot": _m("s/token", False, "time per output token: (E2E − TTFT) / (N_out − 1)"),
    "itl": _m("s", False, "inter-token latency: gap between successive chunks, split over the chunk's tokens"),
    "e2e_latency": _m("s", False, "end-to-end latency: last token − request sent"),
    "prefill_tok_s": _m("tok/s", True, "prompt tokens per second of prefill: batch × N_prompt / TTFT"),
    "decode_tok_s": _m("tok/s", True, "tokens per second of decode steps: Σ (N_out − 1) / (last token − first token)"),
    "engine_ttft": _m("s", False, "the engine's own TTFT for the same requests (vLLM), beside the client's"),
    # batches and concurrency: throughput and serving suites
    "output_tok_s": _m("tok/s", True, "generated tokens per second of the whole run, prefill included"),
    "request_throughput": _m("req/s", True, "completed requests per second (first sent → last completed)"),
    "goodput": _m("req/s", True, "requests meeting every given SLO (TTFT, TPOT) per second"),
    # roofline and energy
    "decode_bandwidth_pct": _m("%", True, "decode tok/s × bytes read per token ÷ peak memory bandwidth × 100"),
    "energy_per_token": _m("J/token", False, "hardware energy counter (NVML, RAPL) over a trial ÷ tokens generated"),
    # memory suite
    "peak_rss_bytes": _m("bytes", False, "peak resident memory of the cell's process tree during a trial"),
    "workload_rss_delta_bytes": _m("bytes", False, "peak RSS − RSS at the start of the trial"),
    "load_rss_delta_bytes": _m("bytes", False, "RSS after load − RSS before it: weights + runtime state"),
    "load_peak_rss_bytes": _m("bytes", False, "peak RSS during load (conversion copies show here)"),
    "nvml_process_peak_bytes": _m("bytes", False, "peak GPU memory of the cell's processes (NVML)"),
    "nvml_device_peak_bytes": _m("bytes", False, "peak GPU memory used on the device, other processes included"),
    "torch_cuda_allocated_bytes": _m("bytes", False, "torch's allocated CUDA memory at the end of the trial"),
    "torch_cuda_peak_allocated_bytes": _m("bytes", False, "torch's peak allocated CUDA memory"),
    "torch_cuda_peak_reserved_bytes": _m("bytes", False, "torch's peak reserved CUDA memory"),
    "mlx_peak_bytes": _m("bytes", False, "MLX allocator peak during the trial"),
    "mlx_active_bytes": _m("bytes", False, "MLX memory in live arrays at the end of the trial"),
    "mlx_cache_bytes": _m("bytes", False, "freed buffers MLX keeps for reuse at the end of the trial"),
    "engine_model_bytes": _m("bytes", False, "the engine's own accounting of weights + KV (llama.cpp log, MLX peak)"),
    "weights_bytes": _m("bytes", False, "bytes of the loaded parameters, as the backend reports them"),
    "kv_cache_reserved_bytes": _m("bytes", False, "KV cache the engine set aside up front"),
    "kv_cache_capacity_tokens": _m("tokens", True, "tokens the allocated KV cache holds"),
    "weight_copies_bytes": _m("bytes", False, "weights the engine holds a second time in another layout, as its "
                                                "workers count them (vLLM on CPU: each embedding's packed copy)"),
    "engine_runtime_bytes": _m("bytes", False, "RSS of a multi-process engine's own processes before the model "
                                                 "loaded (each worker's at its start, the whole engine core's)"),
    "measured_model_bytes": _m("bytes", False, "what the model holds while it works: GPU peak allocation, or max "
                                                 "trial RSS − RSS before load − engine_runtime_bytes"),
    "predicted_model_bytes": _m("bytes", False, "smallbench fit's arithmetic for the same run, plus the engine's "
                                                  "weight copies"),
    "prediction_error_pct": _m("%", None, "(predicted − measured) / measured × 100", low=-_PCT),
    "engine_prediction_error_pct": _m("%", None, "(predicted − engine_model_bytes) / engine_model_bytes × 100",
                                      low=-_PCT),
    # parity suite (the per-request values are the record's raw samples; smallbench report --parity compares them)
    "parity_loglikelihood_sum": _m("nats", None, "sum of the probe set's continuation log-likelihoods (a checksum of "
                                   "the raw per-request values)", low=-math.inf, high=0.0),
    # accuracy suite (lm-eval's scoring; unknown lm-eval metrics keep lm-eval's own direction)
    "acc": _m("fraction", True, "accuracy: share of documents whose highest-likelihood choice is the gold one"),
    "acc_norm": _m("fraction", True, "accuracy with each choice's log-likelihood normalised by its byte length"),
    "exact_match": _m("fraction", True, "share of generations equal to the answer after the task's filter"),
    "word_perplexity": _m("perplexity", False, "exp(− Σ log-likelihood / words)", low=1.0),
    "byte_perplexity": _m("perplexity", False, "exp(− Σ log-likelihood / bytes)", low=1.0),
    "bits_per_byte": _m("bits/byte", False, "− Σ log-likelihood / (bytes × ln 2)"),
}


def info(name: str) -> MetricInfo:
    """The declaration of ``name``; a metric nobody declared is a bug of ours (MetricError)."""
    try:
        return METRICS[name]
    except KeyError:
        raise MetricError(f"metric '{name}' is not declared in smallbench.metrics.METRICS") from None


def reference_markdown() -> str:
    """The metric reference table of docs/metrics.md, generated from :data:`METRICS`."""
    rows = ["| metric | unit | better | definition |", "|---|---|---|---|"]
    for name, m in METRICS.items():
        better = {True: "higher", False: "lower", None: "—"}[m.higher_is_better]
        rows.append(f"| `{name}` | {m.unit} | {better} | {m.definition} |")
    return "\n".join(rows)
