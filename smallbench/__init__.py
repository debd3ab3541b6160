"""smallbench: accuracy, latency, throughput and memory of small open LLMs across inference backends."""

__version__ = "0.1.0"

from smallbench.results import export, load_results  # noqa: E402

__all__ = ["__version__", "export", "load_results"]
