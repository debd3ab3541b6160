"""Offline throughput: prefill and decode tok/s over a list of batch sizes (llama-bench pp/tg)."""

from __future__ import annotations

from pydantic import Field, model_validator

from smallbench import metrics as M
from smallbench.backends.base import Backend
from smallbench.suites.base import ShapedSettings, Suite, SuiteContext, SuiteResult, synthetic_prompt


class ThroughputSettings(ShapedSettings):
    levels_field = "batch_sizes"
    preset: str | None = "pp512/tg128"  # kept in the records (it always was)
    batch_sizes: list[int] = Field(default_factory=lambda: [1])

    @model_validator(mode="after")
    def _two(self):
        if self.gen_tokens < 2:
            raise ValueError("gen_tokens must be at least 2 to measure decode")
        return self


class ThroughputSuite(Suite):
    name = "throughput"
    settings_model = ThroughputSettings
    uses_roofline = True

    def run(self, backend: Backend, settings: ThroughputSettings, ctx: SuiteContext) -> SuiteResult:
        s = settings
        out = SuiteResult()
        for b in s.batch_sizes:
            prefill, decode, output, joules, tokens = [], [], [], [], []
            for i, measured in s.trials():
                prompts = [synthetic_prompt(backend, s.prompt_tokens, s.seed + 1000 * i + j) for j in range(b)]
                e0 = ctx.energy_now()
                trace = backend.generate_batch(prompts, s.gen_tokens, ignore_eos=True)
                if measured:
                    joules.append(ctx.joules(e0))
                    tokens.append(sum(trace.n_out))
                    prefill.append(M.batch_prefill_tps(trace))
                    decode.append(M.batch_decode_tps(trace))
                    output.append(M.batch_output_tps(trace))
            out.add("prefill_tok_s", prefill, per_trial=True, batch_size=b)
            out.add("decode_tok_s", decode, per_trial=True, batch_size=b)
            out.add("output_tok_s", output, per_trial=True, batch_size=b)
            if ctx.roofline:
                ctx.roofline.add(out, decode, s.prompt_tokens + s.gen_tokens / 2, b)
            ctx.energy_per_token(out, joules, tokens, batch_size=b)
        return out
