"""Every setting of a run checked in one pass, before any cell starts: one line naming the setting and what it
accepts (exit 2), instead of a library's error inside a cell after the model has loaded.

``smallbench run`` calls :func:`check_run`; what only the model can say (its context length) is checked against
its config where that is at hand (a catalogued name, a local folder, the Hub cache, or config.json fetched
alone).
"""

from __future__ import annotations

import contextlib
import re
import tempfile
from pathlib import Path
from typing import Any

from smallbench.errors import SmallbenchError

DEVICE = re.compile(r"auto|cpu|mps|metal|cuda(:\d+)?")
DTYPES = ("auto", "float32", "float16", "bfloat16")
#: config.json keys that give a model's context length, first found wins.
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "n_ctx")


def check_choice(option: str, value: str, allowed: re.Pattern[str] | tuple[str, ...]) -> None:
    ok = allowed.fullmatch(value) if isinstance(allowed, re.Pattern) else value in allowed
    if not ok:
        choices = "auto, cpu, cuda, cuda:N, mps" if isinstance(allowed, re.Pattern) else ", ".join(allowed)
        raise SmallbenchError(f"{option} '{value}' is not one of: {choices}")


def check_number(option: str, value: float | None, minimum: float, strict: bool = False) -> None:
    if value is None:
        return
    if value != value or (value <= minimum if strict else value < minimum):  # NaN fails both
        bound = f"more than {minimum:g}" if strict else f"{minimum:g} or more"
        raise SmallbenchError(f"{option} needs a number {bound}, got {value}")


def check_output(output: Path) -> None:
    """The results folder exists and is writable, or can be made: not a file, not under a read-only folder. Tried
    for real (a file written and removed, the folders made for it removed again), as permission bits do not tell
    root, a read-only mount or a kernel filesystem (``/proc``) apart."""
    if output.exists() and not output.is_dir():
        raise SmallbenchError(f"--output '{output}' is a file; give a folder for the result records")
    made, existing = [], output
    while not existing.exists():
        made.append(existing)
        existing = existing.parent
    if not existing.is_dir():
        raise SmallbenchError(f"--output '{output}' cannot be created: '{existing}' is a file")
    try:
        output.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=output).close()
    except OSError as exc:
        where = "is not writable" if not made else "cannot be created"
        raise SmallbenchError(f"--output '{output}' {where}: {exc.strerror or exc}") from None
    finally:
        for folder in made:  # deepest first; nothing is left behind by a check
            with contextlib.suppress(OSError):
                folder.rmdir()


def check_quants(backends: list[str], quants: list[str]) -> None:
    """Each ``--quant`` is a variant some chosen backend knows (a GGUF file type, an MLX quantization), and each
    chosen backend that takes ``--quant`` knows one of them: ``-b llama-cpp,mlx --quant Q8_0,4bit`` runs llama.cpp
    at Q8_0 and MLX at 4bit (smallbench.backends.known_quants)."""
    from smallbench.backends import get_backend_class, known_quants

    takers = [b for b in backends if get_backend_class(b).takes_quant]
    if quants and not takers:
        raise SmallbenchError(f"--quant applies to llama-cpp and mlx; none of {', '.join(backends)} takes it")
    if not quants:
        return
    if len(takers) == 1:  # its own line, with its choices
        for q in quants:
            get_backend_class(takers[0]).check_quant(q)
        return
    known = {b: known_quants(b, quants) for b in takers}
    for q in quants:
        if not any(q in k for k in known.values()):
            raise SmallbenchError(f"--quant '{q}' is a variant none of {', '.join(takers)} knows; "
                                  "`smallbench list backends` shows each one's")
    for b, k in known.items():
        if not k:
            raise SmallbenchError(f"{b} knows none of --quant {','.join(quants)}; add one of its own (`smallbench "
                                  "list backends`) or run it apart")


def offline_config(model_id: str, source: str, revision: str | None = None) -> dict[str, Any] | None:
    """The model's config.json before any cell starts (:func:`smallbench.models.model_config`: the catalogue's, the
    local folder's, or a Hub repo's from the cache, else fetched alone unless HF_HUB_OFFLINE is set). None when
    there is none to be had (the cell then meets the model's own error)."""
    from smallbench.models import entry, model_config

    known = entry(model_id)
    if known is not None:
        return known.config
    try:
        return model_config(source, revision)
    except SmallbenchError:
        return None


def check_backends(models: list[tuple[str, str, str | None]], backends: list[str], device: str) -> None:
    """Each backend can run each model as far as its config tells (Backend.check_model)."""
    from smallbench.backends import get_backend_class

    for model_id, source, revision in models:
        if (config := offline_config(model_id, source, revision)) is not None:
            for b in backends:
                get_backend_class(b).check_model(model_id, config, device)


def model_context(model_id: str, source: str, revision: str | None = None) -> int | None:
    """The model's context length from its config (:func:`offline_config`); None when that is not to be had."""
    config = offline_config(model_id, source, revision)
    cfg = (config or {}).get("text_config") or config or {}
    return next((int(cfg[k]) for k in CONTEXT_KEYS if isinstance(cfg.get(k), int)), None)


def check_context(models: list[tuple[str, str, str | None]], suite_settings: dict[str, Any],
                  ctx_size: int | None) -> None:
    """A suite's prompt + generated tokens fit each model's context (and ``--ctx-size`` where given)."""
    for name, s in suite_settings.items():
        need = (getattr(s, "prompt_tokens", None) or 0) + (getattr(s, "gen_tokens", None) or 0)
        if not need:
            continue
        if ctx_size is not None and need > ctx_size:
            raise SmallbenchError(f"suite '{name}': --prompt-tokens + --gen-tokens = {need} exceeds --ctx-size "
                                  f"{ctx_size}")
        for model_id, source, revision in models:
            limit = model_context(model_id, source, revision)
            if limit is not None and need > limit:
                raise SmallbenchError(f"suite '{name}': --prompt-tokens + --gen-tokens = {need} exceeds the "
                                      f"context of '{model_id}' ({limit} tokens)")
