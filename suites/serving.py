"""Serving: a concurrency sweep of streamed requests against a server backend (``vllm bench serve``).

At each concurrency level ``c`` the suite sends ``requests_per_level`` prompts (default 4 × c) with at
most ``c`` in flight, optionally as a Poisson process of ``request_rate`` requests/s, and reports the
client-side TTFT / TPOT / ITL / E2E of every request, output tok/s, requests/s and goodput under the
given SLOs (definitions: smallbench.metrics). Warm-up rounds run at the same level and are excluded.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from smallbench import metrics as M
from smallbench.backends.base import Backend
from smallbench.errors import SmallbenchError
from smallbench.suites.base import ShapedSettings, Suite, SuiteContext, SuiteResult, synthetic_prompt


class ServingSettings(ShapedSettings):
    levels_field = "concurrency"
    concurrency: list[int] = Field(default_factory=lambda: [1, 2, 4, 8])
    requests_per_level: int | None = Field(None, ge=1)
    request_rate: float | None = Field(None, gt=0)
    prompt_tokens: int = Field(128, ge=1)
    gen_tokens: int = Field(64, ge=1)
    ttft_slo_ms: float | None = Field(None, gt=0)
    tpot_slo_ms: float | None = Field(None, gt=0)
    repeats: int = Field(1, ge=1)

    @field_validator("concurrency")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if not v or min(v) < 1:
            raise ValueError("concurrency levels must be positive integers")
        return v

    @field_validator("gen_tokens")
    @classmethod
    def _two(cls, v: int) -> int:
        if v < 2:
            raise ValueError("gen_tokens must be at least 2 to measure TPOT")
        return v


class ServingSuite(Suite):
    name = "serving"
    settings_model = ServingSettings

    def run(self, backend: Backend, settings: ServingSettings, ctx: SuiteContext) -> SuiteResult:
        s = settings
        if not backend.capabilities.server_mode:
            raise SmallbenchError(f"the serving suite needs a server backend; '{backend.name}' has no server mode")
        ttft_slo = s.ttft_slo_ms / 1e3 if s.ttft_slo_ms else None
        tpot_slo = s.tpot_slo_ms / 1e3 if s.tpot_slo_ms else None
        out = SuiteResult()
        for c in s.concurrency:
            n = s.requests_per_level or 4 * c
            traces, throughput, req_rate, good = [], [], [], []
            for i, measured in s.trials():
                seed = s.seed + 100_000 * c + 1000 * i
                prompts = [synthetic_prompt(backend, s.prompt_tokens, seed + j) for j in range(n)]
                got = backend.stream_concurrent(prompts, s.gen_tokens, c, s.request_rate, seed)
                if not measured:
                    continue
                traces += got
                throughput.append(M.output_throughput(got))
                req_rate.append(M.request_throughput(got))
                if ttft_slo or tpot_slo:
                    good.append(M.goodput(got, ttft_slo, tpot_slo))
            out.add("ttft", [M.ttft(t) for t in traces], concurrency=c)
            out.add("tpot", [M.tpot(t) for t in traces], concurrency=c)
            out.add("itl", [g for t in traces for g in M.itl(t)], concurrency=c)
            out.add("e2e_latency", [M.e2e_latency(t) for t in traces], concurrency=c)
            out.add("output_tok_s", throughput, concurrency=c)
            out.add("request_throughput", req_rate, concurrency=c)
            if good:
                out.add("goodput", good, concurrency=c)
        out.extra["request_rate"] = s.request_rate or "inf"
        out.extra["slo"] = {"ttft_ms": s.ttft_slo_ms, "tpot_ms": s.tpot_slo_ms}
        return out
