"""smallbench: accuracy, latency, throughput and memory of small open LLMs across inference backends."""

__version__ = "0.1.0"

from smallbench.results import export, load_results  # noqa: E402

__all__ = ["__version__", "export", "load_results", "open_backend"]


def __getattr__(name: str):
    if name == "open_backend":  # a loaded backend for notebooks and benchmarks (imports the engines' glue lazily)
        from smallbench.cell import open_backend

        return open_backend
    raise AttributeError(f"module 'smallbench' has no attribute '{name}'")
