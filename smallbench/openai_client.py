"""Client for an OpenAI-compatible ``/v1/completions`` server (vLLM's, and any other that speaks it).

Streaming requests are timed the way ``vllm bench serve`` times them: aiohttp, one session that
keeps its connections alive, ``t_send`` stamped just before the POST and each server-sent event
stamped as it is parsed. Prompts travel as token ids, so every backend sees the same input. Where
the server returns the ids of each chunk's tokens (vLLM: ``return_token_ids``), a chunk counts its
real number of tokens; otherwise each chunk counts as one.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import numpy as np

from smallbench.metrics import GenerationTrace


class RequestError(RuntimeError):
    """The server answered with an error, or the connection failed."""


class CompletionsClient:
    """A persistent event loop and aiohttp session for one server; call :meth:`close` when done."""

    def __init__(self, base_url: str, model: str, timeout_s: float = 3600.0) -> None:
        import aiohttp

        self.url = base_url.rstrip("/") + "/v1/completions"
        self.model = model
        self._loop = asyncio.new_event_loop()
        timeout = aiohttp.ClientTimeout(total=timeout_s)

        async def make_session():
            return aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60))

        self._session = self._loop.run_until_complete(make_session())

    def close(self) -> None:
        if not self._loop.is_closed():
            self._loop.run_until_complete(self._session.close())
            self._loop.close()

    # -- streaming ---------------------------------------------------------------------------
    def stream(self, prompts: list[list[int]], max_tokens: int, max_concurrency: int = 1,
               request_rate: float | None = None, seed: int = 0, **extra: Any) -> list[GenerationTrace]:
        """Greedy streamed completion of each prompt, at most ``max_concurrency`` in flight, sent as a
        Poisson process of ``request_rate``/s when given (else as soon as a slot frees). Traces in order."""
        delays = [0.0] * len(prompts)
        if request_rate:
            gaps = np.random.default_rng(seed).exponential(1.0 / request_rate, size=len(prompts))
            delays = np.concatenate([[0.0], np.cumsum(gaps[1:])]).tolist()
        return self._loop.run_until_complete(self._stream_all(prompts, max_tokens, max_concurrency, delays, extra))

    async def _stream_all(self, prompts, max_tokens, max_concurrency, delays, extra) -> list[GenerationTrace]:
        slots = asyncio.Semaphore(max_concurrency)
        start = time.perf_counter()

        async def one(prompt: list[int], delay: float) -> GenerationTrace:
            if delay:
                await asyncio.sleep(max(0.0, start + delay - time.perf_counter()))
            async with slots:
                return await self._stream_one(prompt, max_tokens, extra)

        return list(await asyncio.gather(*(one(p, d) for p, d in zip(prompts, delays, strict=True))))

    async def _stream_one(self, prompt: list[int], max_tokens: int, extra: dict) -> GenerationTrace:
        payload = {"model": self.model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0,
                   "stream": True, **extra}
        trace = GenerationTrace(t_send=time.perf_counter(), n_prompt=len(prompt))
        try:
            async with self._session.post(self.url, json=payload) as resp:
                if resp.status != 200:
                    raise RequestError(f"HTTP {resp.status}: {_error_text(await resp.text())}")
                async for raw in resp.content:
                    line = raw.strip()
                    if not line.startswith(b"data:"):
                        continue  # blank separators and SSE comments
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        break
                    now = time.perf_counter()
                    event = json.loads(data)
                    if err := event.get("error"):
                        raise RequestError(_error_text(json.dumps(err)))
                    choices = event.get("choices")
                    if not choices:
                        continue  # e.g. a usage-only event
                    ids = choices[0].get("token_ids")
                    n = len(ids) if ids is not None else 1
                    if n:
                        trace.chunks.append((now, n))
                        trace.token_ids.extend(ids or [])
        except RequestError:
            raise
        except Exception as exc:  # connection refused / reset: the caller checks whether the server died
            raise RequestError(f"{type(exc).__name__}: {exc}") from exc
        return trace

    # -- plain requests ----------------------------------------------------------------------
    def complete(self, payloads: list[dict[str, Any]], max_concurrency: int = 8) -> list[dict[str, Any]]:
        """POST each payload (non-streaming) and return the JSON answers in order."""

        async def run():
            slots = asyncio.Semaphore(max_concurrency)

            async def one(p):
                async with slots:
                    return await self._post({"model": self.model, **p})

            return list(await asyncio.gather(*(one(p) for p in payloads)))

        return self._loop.run_until_complete(run())

    async def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        try:
            async with self._session.post(self.url, json=payload) as resp:
                text = await resp.text()
                if resp.status != 200:
                    raise RequestError(f"HTTP {resp.status}: {_error_text(text)}")
                return json.loads(text)
        except RequestError:
            raise
        except Exception as exc:
            raise RequestError(f"{type(exc).__name__}: {exc}") from exc

    def get_text(self, path: str) -> str:
        """GET ``path`` on the same server (e.g. ``/metrics``)."""
        base = self.url.rsplit("/v1/", 1)[0]

        async def run():
            try:
                async with self._session.get(base + path) as resp:
                    return await resp.text()
            except Exception as exc:
                raise RequestError(f"{type(exc).__name__}: {exc}") from exc

        return self._loop.run_until_complete(run())


def _error_text(body: str) -> str:
    """The ``message`` of an OpenAI-style error body, else the body itself, on one line."""
    try:
        err = json.loads(body)
        err = err.get("error", err) if isinstance(err, dict) else err
        msg = err.get("message", body) if isinstance(err, dict) else body
    except (ValueError, AttributeError):
        msg = body
    return " ".join(str(msg).split())[:300]
