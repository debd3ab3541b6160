"""Suite registry: name → suite class."""

from __future__ import annotations

from smallbench.errors import SmallbenchError
from smallbench.suites.accuracy import AccuracySuite
from smallbench.suites.base import Suite, SuiteContext, SuiteResult, SuiteSettings
from smallbench.suites.latency import LatencySuite
from smallbench.suites.memory import MemorySuite
from smallbench.suites.parity import ParitySuite
from smallbench.suites.serving import ServingSuite
from smallbench.suites.throughput import ThroughputSuite

_REGISTRY: dict[str, type[Suite]] = {
    s.name: s for s in (AccuracySuite, LatencySuite, ThroughputSuite, MemorySuite, ServingSuite, ParitySuite)}


def suite_names() -> list[str]:
    return list(_REGISTRY)


def get_suite(name: str) -> Suite:
    if name not in _REGISTRY:
        raise SmallbenchError(f"unknown suite '{name}'; choose from: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]()


__all__ = ["Suite", "SuiteContext", "SuiteResult", "SuiteSettings", "get_suite", "suite_names"]
