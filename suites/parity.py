"""Parity: the same fixed probe set on every backend, kept raw, so that backends and quantizations of the same
weights can be compared request by request (``smallbench report --parity``).

Per request: the log-likelihood of a fixed continuation (and whether it is the greedy one); per prompt: its token
ids and the first ``gen_tokens`` greedy tokens (ignoring end-of-sequence). The probe set ships with smallbench
(``smallbench/probes/parity.json``); its hash is in the record, so only records of the same probes are compared.
"""

from __future__ import annotations

from pydantic import Field

from smallbench.backends.base import Backend
from smallbench.suites.base import Suite, SuiteContext, SuiteResult, SuiteSettings


class ParitySettings(SuiteSettings):
    gen_tokens: int = Field(32, ge=1)
    warmup: int = 0  # deterministic: nothing to warm up or repeat
    repeats: int = 1


class ParitySuite(Suite):
    name = "parity"
    settings_model = ParitySettings
    needs_real_weights = True

    def run(self, backend: Backend, settings: ParitySettings, ctx: SuiteContext) -> SuiteResult:
        from smallbench import parity

        probe = parity.run_probes(backend, settings.gen_tokens)
        out = SuiteResult()
        out.samples["loglikelihood"] = probe.loglikelihoods
        out.samples["is_greedy"] = [float(g) for g in probe.is_greedy]
        out.add_value("parity_loglikelihood_sum", sum(probe.loglikelihoods))
        out.extra["parity"] = probe.extra()
        return out
