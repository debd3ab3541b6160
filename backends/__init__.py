"""Backend registry: name → adapter class, imported lazily so listing needs no backend library."""

from __future__ import annotations

import importlib
from functools import cache
from typing import Any

from smallbench.backends.base import Backend, BackendInfo, Capabilities, LoadedModelInfo, LoadSpec
from smallbench.errors import SmallbenchError
from smallbench.sizing import DTYPE_BYTES

_REGISTRY: dict[str, str] = {
    "transformers": "smallbench.backends.transformers:TransformersBackend",
    "llama-cpp": "smallbench.backends.llama_cpp:LlamaCppBackend",
    "vllm": "smallbench.backends.vllm:VLLMBackend",
    "vllm-server": "smallbench.backends.vllm:VLLMServerBackend",
    "mlx": "smallbench.backends.mlx:MLXBackend",
}


def backend_names() -> list[str]:
    return list(_REGISTRY)


def get_backend_class(name: str) -> type[Backend]:
    if name not in _REGISTRY:
        raise SmallbenchError(f"unknown backend '{name}'; choose from: {', '.join(_REGISTRY)}")
    module, _, attr = _REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def known_quants(name: str, quants: list[str]) -> list[str]:
    """The ``--quant`` values backend ``name`` makes or selects (:meth:`Backend.check_quant`), in their order; all of
    them for a backend that takes none (it runs once, whatever they are)."""
    cls = get_backend_class(name)
    if not cls.takes_quant:
        return list(quants)
    known = []
    for q in quants:
        try:
            cls.check_quant(q)
        except SmallbenchError:
            continue
        known.append(q)
    return known


def memory_allowances(name: str | None, config: dict[str, Any], kind: str, device: str, memory: int) -> dict[str, int]:
    """What backend ``name`` holds besides weights and KV cache when it runs a model of ``config`` as ``kind`` on
    ``device`` ("cpu" or an accelerator) in ``memory`` bytes (:meth:`Backend.memory_allowances`); {} for no
    backend. A quantization the backend does not take is refused in one line."""
    if not name:
        return {}
    cls = get_backend_class(name)
    if not cls.takes_quant and kind not in DTYPE_BYTES:
        raise SmallbenchError(f"backend '{name}' loads a checkpoint in its own float type, not as {kind}; give one "
                              f"of {', '.join(DTYPE_BYTES)}")
    return cls.memory_allowances(config, kind, device, memory)


@cache
def _config_defaults(name: str, device: str) -> dict[str, Any]:
    try:
        return get_backend_class(name).config_defaults(device)
    except (SmallbenchError, ImportError):  # a record of a backend this install lacks, or no backend at all
        return {}


def config_label(info: BackendInfo, cpu_cores: int | None = None) -> str:
    """How a record's engine was set up beyond its backend's defaults on its device
    (:meth:`Backend.config_defaults`), e.g. ``enforce_eager`` or ``threads=1``; "" for the defaults. On a CPU the
    thread count is a setting too, where it is not the machine's ``cpu_cores`` (physical; every backend's
    default)."""
    defaults = dict(_config_defaults(info.name, info.device))
    if info.device == "cpu" and cpu_cores:
        defaults["threads"] = cpu_cores
    changed = {k: info.flags[k] for k, v in defaults.items() if k in info.flags and info.flags[k] != v}
    return ", ".join(k if v is True else f"{k}={v}" for k, v in changed.items())  # a switched-on flag: its name


__all__ = [
    "Backend",
    "BackendInfo",
    "Capabilities",
    "LoadSpec",
    "LoadedModelInfo",
    "backend_names",
    "config_label",
    "get_backend_class",
    "known_quants",
    "memory_allowances",
]
