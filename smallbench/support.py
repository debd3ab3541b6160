"""Which architecture runs on which backend: what ``tests/test_architectures.py`` proves, kept as data so the
README's matrix and ``smallbench list models`` say the same thing. The test fails when a cell's outcome here
differs from what the installed backends actually do, so this table cannot drift from the code.

A cell is ``"ok"`` (loads, generates, and its log-likelihoods agree with Transformers'), ``"ok*: note"`` (runs,
with a difference the note names), or ``"no: reason"`` (the cell fails with that one-line reason).
"""

from __future__ import annotations

BACKENDS = ("transformers", "vllm", "llama-cpp", "mlx")

#: architecture (config.json's model_type) -> backend -> outcome; the catalogue model the tests scale down.
MATRIX: dict[str, dict[str, str]] = {}

#: the catalogue entry each architecture is tested through
TESTED_WITH: dict[str, str] = {}


def backends_for(architecture: str) -> list[str]:
    """Backends on which ``architecture`` is proven to run (all four for an architecture the tests do not cover,
    where nothing is known against it)."""
    row = MATRIX.get(architecture)
    if row is None:
        return ["untested"]
    return [b for b in BACKENDS if row.get(b, "").startswith("ok")]


def markdown(versions: dict[str, str] | None = None) -> str:
    """The matrix as a Markdown table (the README's)."""
    head = "| architecture (tested as) | " + " | ".join(BACKENDS) + " |"
    lines = [head, "|" + "---|" * (len(BACKENDS) + 1)]
    for arch, row in MATRIX.items():
        cells = [row[b].replace("|", "/") for b in BACKENDS]
        lines.append(f"| `{arch}` ({TESTED_WITH[arch]}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)
