"""The backend contract: what every inference backend implements, and nothing more.

In the spirit of lm-eval's ``LM``: a backend loads a model, streams greedy generations while
stamping each token's arrival time, generates a batch, scores log-likelihoods, and describes
itself. Prompts travel as token ids, so every backend sees exactly the same input. Adapters stay
thin: the backend's own engine does the work, the adapter only records timestamps.

To add a backend: write one module in ``backends/`` with a :class:`Backend` subclass and add
its name to ``backends/__init__.py``'s registry. Import the backend's library inside methods, not
at module top, so listing backends never needs the library installed.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, Field

from smallbench.errors import SmallbenchError
from smallbench.metrics import BatchTrace, GenerationTrace


@dataclass
class LoadSpec:
    """What to load and how. ``source`` is a local path or a Hub repo id (already resolved)."""

    model_id: str
    source: str
    revision: str | None = None
    dtype: str = "auto"  # auto | float32 | float16 | bfloat16
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    dummy: bool = False  # random weights built from the real config (speed and memory only)
    trust_remote_code: bool = False  # only ever True on the user's explicit flag
    quant: str | None = None  # backend-specific quantization / file variant
    #: Knobs; the CLI's are :data:`CLI_OPTIONS`: a backend drops those that mean nothing to it
    #: (:func:`own_options`) and may accept more of its own.
    options: dict[str, Any] = field(default_factory=dict)


#: The backend knobs the CLI sets for every backend of a run (``--threads``, ``--batch-size``, ``--ctx-size``,
#: ``--n-gpu-layers``, ``--prefix-caching``, ``--extra-bufts``, ``--enforce-eager``); each means something to some
#: backends only.
CLI_OPTIONS = frozenset({"threads", "batch_size", "n_ctx", "n_gpu_layers", "prefix_caching", "extra_bufts",
                         "enforce_eager"})


def own_options(options: dict[str, Any], own: set[str]) -> dict[str, Any]:
    """``options`` less the CLI knobs that are not in ``own`` (another backend's); whatever else is left
    over and unknown to the backend stays, for it to reject."""
    return {k: v for k, v in options.items() if k in own or k not in CLI_OPTIONS}


class Capabilities(BaseModel):
    streaming: bool = True
    batching: bool = True
    logprobs: bool = True
    server_mode: bool = False
    dummy_weights: bool = False
    quant_formats: list[str] = Field(default_factory=list)
    devices: list[str] = Field(default_factory=lambda: ["cpu"])


class BackendInfo(BaseModel):
    name: str
    version: str | None = None
    device: str | None = None
    dtype: str | None = None
    flags: dict[str, Any] = Field(default_factory=dict)


class LoadedModelInfo(BaseModel):
    """What the backend knows about the weights it loaded."""

    params_total: int | None = None
    params_active: int | None = None
    dtype: str | None = None
    quant: str | None = None  # the weights' quantization as loaded (e.g. a GGUF file type)
    max_context: int | None = None
    vocab_size: int | None = None
    #: Memory the backend set aside, where it says (bytes; tokens for the KV capacity).
    weights_bytes: int | None = None
    kv_cache_bytes: int | None = None
    kv_cache_tokens: int | None = None
    #: Weights the engine holds a second time in another layout (vLLM on CPU: each embedding's packed copy).
    weight_copies_bytes: int | None = None
    #: RSS of the engine's own processes before the model loaded (a multi-process engine's Python, torch and
    #: engine): part of the baseline the memory suite measures the model's footprint over.
    engine_runtime_bytes: int | None = None
    #: The model's config.json where the backend has it (sizing and the decode roofline use it).
    config: dict[str, Any] | None = None


class Backend(ABC):
    name: ClassVar[str]
    #: Importable module whose presence means the backend can run.
    requires_module: ClassVar[str]
    #: What to tell a user who lacks it.
    install_hint: ClassVar[str]
    capabilities: ClassVar[Capabilities]
    #: Whether ``--quant`` selects something for this backend (a GGUF file type, an MLX quantization).
    takes_quant: ClassVar[bool] = False
    #: What ``--quant`` takes, in a few words (``smallbench list backends``); :meth:`check_quant` is the judge.
    quant_choices: ClassVar[str] = ""
    #: The :meth:`describe` flags that are engine settings a user can change, each with its value when left alone.
    #: A record whose flags differ is labelled with the difference (:func:`smallbench.backends.config_label`) and
    #: has a leaderboard row of its own: eager and compiled vLLM never share one.
    config_flags: ClassVar[dict[str, Any]] = {}

    @classmethod
    def config_defaults(cls, device: str) -> dict[str, Any]:
        """:attr:`config_flags` as they are by default on ``device`` (a record's ``backend.device``); a backend
        whose default depends on the device (llama.cpp's GPU offload) says so here."""
        return dict(cls.config_flags)

    @classmethod
    def crash_hint(cls, options: dict[str, Any]) -> str | None:
        """What to try when a cell of this backend dies by a signal in native code (a segfault in the
        engine), given its ``LoadSpec.options``; it ends the cell's one-line reason."""
        return None

    @classmethod  # noqa: B027 - optional hook
    def check_quant(cls, quant: str) -> None:
        """Raise SmallbenchError (one line, the choices) unless ``quant`` names a variant this backend makes or
        selects; checked before any cell starts. Only backends that take ``--quant`` are asked."""

    @classmethod  # noqa: B027 - optional hook
    def check_model(cls, model_id: str, config: dict[str, Any], device: str) -> None:
        """Raise SmallbenchError (one line, the cause) when this backend cannot run a model of this ``config``
        (its config.json) on ``device`` (as the user gave it: auto, cpu, cuda...); checked before any cell
        starts, so that a cause knowable from the config never costs an engine start."""

    @classmethod
    def memory_allowances(cls, config: dict[str, Any], kind: str, device: str, memory: int) -> dict[str, int]:
        """What this engine holds beyond the weights and KV cache that ``smallbench fit`` counts, by rule from the
        ``config`` alone: a short reason → bytes (vLLM on a CPU: its packed second copy of each embedding).
        ``kind``: the weights' dtype or quantization; ``device``: ``"cpu"`` or an accelerator's name; ``memory``:
        the budget being fitted into. The memory suite's records measure what the rule predicts."""
        return {}

    @classmethod
    def partial_fit(cls, config: dict[str, Any], kind: str, device: str, memory: int, context: int,
                    overhead: int) -> str | None:
        """For ``smallbench fit``, when the whole model does not fit in ``memory`` on ``device``: what this engine
        can still run there, in one line (llama.cpp: how many layers to offload); None where it has no such
        setting."""
        return None

    @classmethod
    def root_cause(cls, error: str, log: str) -> str | None:
        """A failed cell's one line when ``error`` only wraps the real cause (an engine process's error that the
        library re-raises as a generic one), found in the cell's ``log``; None to keep ``error``."""
        return None

    @classmethod
    def missing(cls) -> str | None:
        """None when the backend's library is importable, else a one-line install hint."""
        if importlib.util.find_spec(cls.requires_module) is None:
            return f"backend '{cls.name}' needs its library: {cls.install_hint}"
        return None

    # -- lifecycle ---------------------------------------------------------------------------
    def import_library(self) -> None:
        """Import the backend's heavy libraries, so that load time and load memory measure the
        model, not the import."""
        importlib.import_module(self.requires_module)

    def prepare(self, spec: LoadSpec) -> None:  # noqa: B027 - optional hook
        """Get the weights into the form :meth:`load` reads (download, convert to GGUF or MLX, quantize), so that
        load time and load memory measure loading, not a one-off conversion. Optional; ``load`` must work
        without it."""

    @abstractmethod
    def load(self, spec: LoadSpec) -> LoadedModelInfo: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the model and any engine processes."""

    # -- tokens ------------------------------------------------------------------------------
    @abstractmethod
    def tokenize(self, text: str, add_special_tokens: bool = True) -> list[int]: ...

    @abstractmethod
    def detokenize(self, ids: list[int]) -> str: ...

    @property
    @abstractmethod
    def special_token_ids(self) -> set[int]: ...

    @property
    @abstractmethod
    def vocab_size(self) -> int: ...

    @property
    @abstractmethod
    def bos_token_id(self) -> int | None: ...

    @property
    @abstractmethod
    def eos_token_id(self) -> int | None: ...

    @property
    @abstractmethod
    def max_context(self) -> int:
        """Longest token sequence the loaded model accepts."""

    # -- work --------------------------------------------------------------------------------
    @abstractmethod
    def stream(self, prompt_ids: list[int], max_new_tokens: int, ignore_eos: bool = True) -> GenerationTrace:
        """Greedy-generate for one prompt; stamp ``time.perf_counter()`` as each token becomes available.

        ``t_send`` is stamped immediately before the request is handed to the engine. With
        ``ignore_eos`` the engine produces exactly ``max_new_tokens`` tokens.
        """

    @abstractmethod
    def generate_batch(
        self, prompts: list[list[int]], max_new_tokens: int, ignore_eos: bool = True
    ) -> BatchTrace:
        """Greedy-generate for equal-length prompts together, the way the engine batches best."""

    @abstractmethod
    def loglikelihood(self, requests: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """For each (context ids, continuation ids): (Σ log p(continuation | context), is greedy).

        Context must hold at least one token (callers prepend BOS where a task has none). A
        sequence longer than :attr:`max_context` + 1 is cut from the left, as lm-eval does.
        Requests often share a context (one question, several answers): a backend that can reuse
        the context's computation should.
        """

    def generate_until(self, prompts: list[list[int]], max_new_tokens: int, stop: list[str]) -> list[str]:
        """Greedy continuation text for each prompt, cut before the first of ``stop`` (or EOS).

        This default streams one prompt at a time; backends that batch override it.
        """
        out = []
        for prompt in prompts:
            ids = self.stream(prompt, max_new_tokens, ignore_eos=False).token_ids
            if self.eos_token_id in ids:
                ids = ids[: ids.index(self.eos_token_id)]
            out.append(cut_at_stop(self.detokenize(ids), stop))
        return out

    def stream_concurrent(
        self, prompts: list[list[int]], max_new_tokens: int, max_concurrency: int,
        request_rate: float | None = None, seed: int = 0,
    ) -> list[GenerationTrace]:
        """Send each prompt as its own streamed request (greedy, ``ignore_eos``), at most
        ``max_concurrency`` in flight; with ``request_rate`` arrivals are a Poisson process of that
        many requests/s, otherwise each request goes as soon as a slot is free. One trace per prompt,
        in order. Backends with ``capabilities.server_mode`` implement it."""
        raise SmallbenchError(f"backend '{self.name}' has no server mode (no concurrent streaming)")

    # -- self-description --------------------------------------------------------------------
    @abstractmethod
    def describe(self) -> BackendInfo: ...

    def memory_stats(self) -> dict[str, int]:
        """Backend-side memory counters in bytes (e.g. torch CUDA peak allocated); {} if none. Where the engine
        accounts its own allocations, ``engine_model_bytes`` is what it holds for the model: weights and KV
        cache (and, for an allocator peak, activations)."""
        return {}

    def reset_peak_memory(self) -> None:  # noqa: B027 - optional hook
        """Reset the backend-side peak counters reported by :meth:`memory_stats`."""


class HFTokenizerMixin:
    """The token half of the contract for backends that tokenize with a Hugging Face tokenizer.
    Needs ``self.tokenizer``, ``self._vocab_size`` and ``self._max_context``, set at load."""

    tokenizer: Any
    _vocab_size: int
    _max_context: int

    def tokenize(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])

    def detokenize(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)

    @property
    def special_token_ids(self) -> set[int]:
        return set(self.tokenizer.all_special_ids)

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def bos_token_id(self) -> int | None:
        return self.tokenizer.bos_token_id

    @property
    def eos_token_id(self) -> int | None:
        return self.tokenizer.eos_token_id

    @property
    def max_context(self) -> int:
        return self._max_context


#: Config fields that state a model's context length, in lm-eval HFLM's order, then other spellings.
_CONTEXT_FIELDS = ("n_positions", "max_position_embeddings", "n_ctx", "max_sequence_length", "seq_length")


def config_max_context(config: Any) -> int | None:
    """The context length a model config states (a ``transformers`` config or a ``config.json`` dict),
    its text config first for multimodal models; None where it states none."""

    def get(obj: Any, key: str) -> Any:
        return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)

    for cfg in (get(config, "text_config"), config):
        for key in _CONTEXT_FIELDS:
            if cfg is not None and get(cfg, key):
                return int(get(cfg, key))
    return None


def cut_at_stop(text: str, stop: list[str]) -> str:
    """``text`` up to (not including) the earliest occurrence of any stop string."""
    for s in stop:
        if s:
            text = text.split(s, 1)[0]
    return text
