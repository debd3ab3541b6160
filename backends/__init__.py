"""Backend registry: name → adapter class, imported lazily so listing needs no backend library."""

from __future__ import annotations

import importlib

from smallbench.backends.base import Backend, BackendInfo, Capabilities, LoadedModelInfo, LoadSpec
from smallbench.errors import SmallbenchError

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


__all__ = [
    "Backend",
    "BackendInfo",
    "Capabilities",
    "LoadSpec",
    "LoadedModelInfo",
    "backend_names",
    "get_backend_class",
]
