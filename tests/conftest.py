from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

# No hub at test time: every model and data set is built locally.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def require(module: str, extra: str):
    """Import a backend's library. Missing in CI is a failure (every backend that runs on the CPU
    machine is tested for real there); missing on a developer's machine skips with the reason."""
    if os.environ.get("CI"):
        return importlib.import_module(module)
    return pytest.importorskip(module, reason=f"{module} not installed (pip install -e '.[{extra}]')")


@pytest.fixture(scope="session")
def tiny_path() -> Path:
    from smallbench import tiny_model

    return tiny_model.model_dir()


@pytest.fixture(scope="session")
def tf_backend(tiny_path):
    from smallbench.backends import LoadSpec, get_backend_class

    b = get_backend_class("transformers")()
    b.load(LoadSpec(model_id="tiny-llama", source=str(tiny_path), device="cpu"))
    yield b
    b.close()


def run_cli(*args: str, cwd: Path, timeout: float = 600, env: dict[str, str] | None = None):
    return subprocess.run(
        [sys.executable, "-m", "smallbench.cli", *args],
        cwd=cwd, capture_output=True, text=True, timeout=timeout, env={**os.environ, "COLUMNS": "200", **(env or {})},
    )  # fmt: skip
