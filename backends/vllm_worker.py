"""Runs inside vLLM's worker process (passed as ``worker_extension_cls`` by qualified name, so this module is first
imported there, by the worker, before it loads the model) and reports the worker's memory by name over
``collective_rpc``: no pickled code crosses the process boundary. The in-process engine calls it directly; vLLM's
server answers it on one fixed read-only route, ``GET /smallbench/memory`` (``MemoryRoute``, passed as
``--middleware``), so no development endpoint (vLLM's ``/collective_rpc`` runs any worker method) is opened.

Two figures the memory suite cannot see from outside:

- ``start_rss``: the worker's RSS when this module was imported, before the model loaded: its Python, torch and
  vLLM. Added to the pre-load baseline, it makes vLLM's measured footprint mean what an in-process engine's does.
- ``weight_copies``: bytes of weights the worker holds twice. On a CPU, vLLM hands each linear layer's weight to
  oneDNN (or its small-GEMM kernel), which keeps a packed copy; a linear layer then drops its own tensor, but an
  embedding keeps it for the token lookup, so every embedding module (the input embedding, and the output head
  where it is a module of its own, tied or not) is held twice.
"""

from __future__ import annotations

import os
from typing import Any

import psutil

_START = (os.getpid(), psutil.Process().memory_info().rss)


def _packs_a_copy(module: Any) -> bool:
    """Whether vLLM's CPU dispatch gave ``module`` a packed weight and kept the module's own tensor as well."""
    linear = getattr(module, "cpu_linear", None)
    weight = getattr(module, "weight", None)
    code = getattr(linear, "__code__", None)
    if code is None or weight is None or getattr(weight, "is_meta", False) or weight.numel() == 0:
        return False
    return bool({"handler", "packed_weight", "zen_weight"} & set(code.co_freevars))


class MemoryReport:
    """Mixed into vLLM's worker class; ``collective_rpc("smallbench_memory")`` calls it."""

    def smallbench_memory(self) -> dict[str, int | None]:
        pid, rss = _START
        model = self.model_runner.model  # type: ignore[attr-defined]
        copies = sum(m.weight.numel() * m.weight.element_size() for m in model.modules() if _packs_a_copy(m))
        return {"pid": os.getpid(), "start_rss": rss if pid == os.getpid() else None, "weight_copies": copies}


ROUTE = "/smallbench/memory"


class MemoryRoute:
    """ASGI middleware for vLLM's API server: ``GET /smallbench/memory`` answers the workers' ``smallbench_memory``
    reports as a JSON list; every other request passes straight through (one path comparison)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or scope.get("path") != ROUTE:
            await self.app(scope, receive, send)
            return
        from starlette.responses import JSONResponse

        reports = await scope["app"].state.engine_client.collective_rpc("smallbench_memory")
        await JSONResponse(list(reports))(scope, receive, send)
