"""Where smallbench keeps things on disk."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from platformdirs import user_cache_dir


def cache_dir() -> Path:
    """``$SMALLBENCH_CACHE`` if set, else the platform's user cache directory (``~/.cache/smallbench``)."""
    env = os.environ.get("SMALLBENCH_CACHE")
    return Path(env).expanduser() if env else Path(user_cache_dir("smallbench"))


#: Set by the runner for each cell: a folder it removes when the cell ends, however the cell ends.
SCRATCH_ENV = "SMALLBENCH_CELL_TMP"


def scratch_dir() -> str | None:
    """Where a cell puts its temp files (task configs, server logs): the runner's per-cell folder, else the system's
    temp folder (None). Engines' own caches stay where they are (compiled kernels survive between cells)."""
    return os.environ.get(SCRATCH_ENV) or None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
