"""The suite contract: take a loaded backend and settings, return metrics and the raw samples.

A suite never imports a backend's library; it only calls the :class:`Backend` contract and turns
traces into numbers with :mod:`smallbench.metrics` and :mod:`smallbench.stats`.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from smallbench.backends.base import Backend, LoadedModelInfo
from smallbench.energy import EnergyMeter
from smallbench.metrics import info
from smallbench.results import LoadRecord, Metric
from smallbench.stats import drift, summarize

#: Standard shapes (llama-bench's pp512/tg128; one request of 256 in, 64 out; 1k in, 1k out at 1 and 10 in
#: parallel): name → (prompt tokens, generated tokens, batch sizes, or the serving suite's concurrency levels).
PRESETS: dict[str, tuple[int, int, list[int]]] = {
    "pp512/tg128": (512, 128, [1]),
    "b1/256in/64out": (256, 64, [1]),
    "b1,10/1024in/1024out": (1024, 1024, [1, 10]),
}


def preset_shape(name: str) -> tuple[int, int, list[int]]:
    if name not in PRESETS:
        raise ValueError(f"unknown preset '{name}'; choose from: {', '.join(PRESETS)}")
    pp, tg, levels = PRESETS[name]
    return pp, tg, list(levels)


class SuiteSettings(BaseModel):
    """Base for each suite's settings; keys meant for other suites are ignored."""

    model_config = ConfigDict(extra="ignore")
    seed: int = 0
    warmup: int = Field(1, ge=0)
    repeats: int = Field(3, ge=1)
    #: Seconds of idle between trials, to let a laptop's chip cool down (thermal throttling).
    cooldown_s: float = Field(0.0, ge=0)

    def trials(self) -> Iterator[tuple[int, bool]]:
        """(trial index, measured?) for the warm-up trials (not measured) then the measured ones,
        with ``cooldown_s`` of sleep before every trial after the first."""
        for i in range(self.warmup + self.repeats):
            if i and self.cooldown_s:
                time.sleep(self.cooldown_s)
            yield i, i >= self.warmup


class ShapedSettings(SuiteSettings):
    """Settings of a suite with a workload shape (the default: llama-bench's pp512/tg128, one shape for every suite
    of a default run, so that they share a leaderboard row). ``--preset`` (:data:`PRESETS`) gives the prompt and
    generated tokens, and its levels to :attr:`levels_field` where the suite has one (batch sizes, concurrency);
    settings given besides win. The preset's name is not part of the settings a record keeps (its shape is)."""

    levels_field: ClassVar[str | None] = None
    preset: str | None = Field(None, exclude=True)
    prompt_tokens: int = Field(512, ge=1)
    gen_tokens: int = Field(128, ge=1)

    @model_validator(mode="after")
    def _apply_preset(self):
        if self.preset is not None:
            given = self.model_fields_set
            pp, tg, levels = preset_shape(self.preset)
            self.prompt_tokens = self.prompt_tokens if "prompt_tokens" in given else pp
            self.gen_tokens = self.gen_tokens if "gen_tokens" in given else tg
            if self.levels_field and self.levels_field not in given:
                setattr(self, self.levels_field, levels)
        return self


@dataclass
class SuiteContext:
    load: LoadRecord
    model_info: LoadedModelInfo
    roofline: Roofline | None = None
    energy: EnergyMeter | None = None
    #: the device the backend runs on (BackendInfo.device): cpu, cuda, cuda:N, mps...
    device: str = "cpu"

    def energy_per_token(self, out: SuiteResult, joules: list[float | None], tokens: list[int], **labels) -> None:
        """``energy_per_token`` (J per generated token, per trial) where every trial read the counter; otherwise no
        metric at all (never a zero), and ``extra["energy"]`` says why."""
        if self.energy is None:
            out.extra["energy"] = "no energy counter for this device (NVML on NVIDIA GPUs, RAPL on Linux CPUs)"
            return
        out.extra["energy"] = self.energy.source
        if joules and all(j is not None for j in joules):
            out.add("energy_per_token", [j / n for j, n in zip(joules, tokens, strict=True)], per_trial=True,
                    **labels)

    def joules(self, since: float | None) -> float | None:
        """Energy used since the counter read ``since`` (None without a counter)."""
        now = self.energy.read() if self.energy and since is not None else None
        return None if now is None or since is None else now - since

    def energy_now(self) -> float | None:
        return self.energy.read() if self.energy else None


@dataclass
class Roofline:
    """The memory-bandwidth bound of decoding: a decode step has to read the weights a token uses and the KV cache,
    so tok/s × bytes per token cannot exceed the device's bandwidth (smallbench.sizing; docs/metrics.md). Suites
    :meth:`add` their decode samples; the cell calls :meth:`finish` once the bandwidth is settled (on a CPU, the
    better of two measurements, before the model loads and after it is closed)."""

    bandwidth_bytes_s: float
    source: str  # where the bandwidth comes from: NVML, the table, or a measurement
    config: dict[str, Any]
    weights_bytes: int
    kv_dtype: str
    pending: list[tuple[SuiteResult, list[float], float, int, dict[str, Any]]] = field(default_factory=list)

    def add(self, out: SuiteResult, decode_tok_s: list[float], context: float, batch: int = 1, **labels) -> None:
        """Queue ``decode_bandwidth_pct`` for these decode tok/s samples, at the mean KV depth ``context``."""
        self.pending.append((out, decode_tok_s, context, batch, labels))

    def finish(self, bandwidth_bytes_s: float | None = None) -> None:
        """``decode_bandwidth_pct`` per trial: decode tok/s × bytes read per token / bandwidth × 100."""
        from smallbench import sizing

        self.bandwidth_bytes_s = bandwidth_bytes_s or self.bandwidth_bytes_s
        for out, decode, context, batch, labels in self.pending:
            per_token = sizing.decode_bytes_per_token(self.config, self.weights_bytes, round(context), batch,
                                                      self.kv_dtype)
            pct = [100 * tps * per_token / self.bandwidth_bytes_s for tps in decode]
            out.add("decode_bandwidth_pct", pct, per_trial=True, batch_size=batch, **labels)
            roof = out.extra.setdefault("roofline", {"bytes_per_token": {}})
            roof.update(bandwidth_bytes_s=self.bandwidth_bytes_s, source=self.source)
            roof["bytes_per_token"][f"batch_size={batch}"] = per_token
        self.pending.clear()


@dataclass
class SuiteResult:
    metrics: list[Metric] = field(default_factory=list)
    samples: dict[str, list[float]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def add(self, name: str, samples: list[float], per_trial: bool = False, **labels: Any) -> Metric:
        """Record raw samples and a metric whose value is their median, with full statistics; with
        ``per_trial`` (one sample per trial, in the order they ran) also their drift across trials. Unit and
        direction come from the metric's declaration (smallbench.metrics.METRICS)."""
        spec = info(name)
        key = name + "".join(f"[{k}={v}]" for k, v in labels.items())
        self.samples[key] = [float(x) for x in samples]
        stats = summarize(self.samples[key])
        m = Metric(name=name, unit=spec.unit, value=stats.p50, stats=stats, higher_is_better=spec.higher_is_better,
                   samples_key=key, labels=labels,
                   drift=drift(self.samples[key], bool(spec.higher_is_better)) if per_trial else None)
        self.metrics.append(m)
        return m

    def add_value(self, name: str, value: float, **labels) -> None:
        """Record a single measured quantity (no repeats, so no statistics)."""
        spec = info(name)
        self.metrics.append(Metric(name=name, unit=spec.unit, value=float(value),
                                   higher_is_better=spec.higher_is_better, labels=labels))


class Suite(ABC):
    name: ClassVar[str]
    settings_model: ClassVar[type[SuiteSettings]]
    #: Whether the suite reports decode speed against the memory-bandwidth bound (needs a :class:`Roofline`).
    uses_roofline: ClassVar[bool] = False
    #: Whether the suite measures the process's own memory, so that it runs first when suites share one load.
    runs_first: ClassVar[bool] = False
    #: Whether the suite's figures mean nothing on random weights (``--dummy`` refuses it before any cell).
    needs_real_weights: ClassVar[bool] = False

    def settings(self, overrides: dict[str, Any]) -> SuiteSettings:
        return self.settings_model.model_validate(overrides)

    def preflight(self, settings: SuiteSettings) -> None:  # noqa: B027 - optional hook
        """Check what can be checked before any model loads (e.g. data files); raise SmallbenchError."""

    @abstractmethod
    def run(self, backend: Backend, settings: SuiteSettings, ctx: SuiteContext) -> SuiteResult: ...


def synthetic_prompt(backend: Backend, n_tokens: int, seed: int) -> list[int]:
    """``n_tokens`` random non-special token ids (like vLLM's random dataset): the same ids on every
    backend that shares the tokenizer, and a different prompt per seed so no prefix cache can help."""
    special = backend.special_token_ids
    vocab = np.array([i for i in range(backend.vocab_size) if i not in special])
    rng = np.random.default_rng(seed)
    return rng.choice(vocab, size=n_tokens).tolist()
