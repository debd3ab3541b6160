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
from pydantic import BaseModel, ConfigDict, Field

from smallbench.backends.base import Backend, LoadedModelInfo
from smallbench.results import LoadRecord, Metric
from smallbench.stats import drift, summarize


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


@dataclass
class SuiteContext:
    load: LoadRecord
    model_info: LoadedModelInfo


@dataclass
class SuiteResult:
    metrics: list[Metric] = field(default_factory=list)
    samples: dict[str, list[float]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def add(
        self, name: str, unit: str, samples: list[float], higher_is_better: bool, per_trial: bool = False,
        **labels: Any,
    ) -> Metric:  # fmt: skip
        """Record raw samples and a metric whose value is their median, with full statistics; with
        ``per_trial`` (one sample per trial, in the order they ran) also their drift across trials."""
        key = name + "".join(f"[{k}={v}]" for k, v in labels.items())
        self.samples[key] = [float(x) for x in samples]
        stats = summarize(self.samples[key])
        m = Metric(name=name, unit=unit, value=stats.p50, stats=stats, higher_is_better=higher_is_better,
                   samples_key=key, labels=labels,
                   drift=drift(self.samples[key], higher_is_better) if per_trial else None)  # fmt: skip
        self.metrics.append(m)
        return m

    def add_value(self, name: str, unit: str, value: float, higher_is_better: bool | None = None, **labels) -> None:
        """Record a single measured quantity (no repeats, so no statistics)."""
        self.metrics.append(Metric(name=name, unit=unit, value=float(value), higher_is_better=higher_is_better,
                                   labels=labels))  # fmt: skip


class Suite(ABC):
    name: ClassVar[str]
    settings_model: ClassVar[type[SuiteSettings]]

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
