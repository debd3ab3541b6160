"""Latency of single streamed requests: TTFT, TPOT, ITL, E2E (definitions: smallbench.metrics)."""

from __future__ import annotations

from pydantic import Field

from smallbench import metrics as M
from smallbench.backends.base import Backend
from smallbench.suites.base import ShapedSettings, Suite, SuiteContext, SuiteResult, synthetic_prompt


class LatencySettings(ShapedSettings):
    warmup: int = Field(2, ge=0)
    repeats: int = Field(10, ge=1)


class LatencySuite(Suite):
    name = "latency"
    settings_model = LatencySettings
    uses_roofline = True

    def run(self, backend: Backend, settings: LatencySettings, ctx: SuiteContext) -> SuiteResult:
        s = settings
        traces, joules = [], []
        for i, measured in s.trials():
            prompt = synthetic_prompt(backend, s.prompt_tokens, s.seed + i)
            e0 = ctx.energy_now()
            trace = backend.stream(prompt, s.gen_tokens)
            if measured:
                traces.append(trace)
                joules.append(ctx.joules(e0))
        out = SuiteResult()
        out.add("ttft", [M.ttft(t) for t in traces], per_trial=True)
        out.add("tpot", [M.tpot(t) for t in traces], per_trial=True)
        out.add("itl", [g for t in traces for g in M.itl(t)])
        out.add("e2e_latency", [M.e2e_latency(t) for t in traces], per_trial=True)
        out.add("prefill_tok_s", [M.prefill_tps(t) for t in traces], per_trial=True)
        decode = [M.decode_tps(t) for t in traces]
        out.add("decode_tok_s", decode, per_trial=True)
        if ctx.roofline:
            ctx.roofline.add(out, decode, s.prompt_tokens + s.gen_tokens / 2)
        ctx.energy_per_token(out, joules, [t.n_out for t in traces])
        engine = [t.engine_ttft for t in traces if t.engine_ttft is not None]
        if len(engine) == len(traces):  # the engine's own TTFT, beside the client-side one
            out.add("engine_ttft", engine, per_trial=True)
        out.extra["output_tokens"] = [t.n_out for t in traces]
        return out
