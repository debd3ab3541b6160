"""llama.cpp backend, through llama-cpp-python's bindings to the C API (CPU, CUDA, Metal).

The adapter drives llama.cpp the way its own tools do (llama-bench, llama-batched-bench), not
through the high-level ``Llama`` class, which cannot size a context for several sequences and
computes logits for every prompt token:

- one sequence (``stream``, batch 1): ``llama_batch_get_one`` for the prompt in ``n_batch`` chunks,
  then one ``llama_decode`` per token; logits of the last position only; greedy = argmax;
- several sequences (``generate_batch``): one context with ``n_seq_max`` = batch and a unified
  KV cache, every sequence's token in the same ``llama_decode``;
- ``loglikelihood``: requests sorted so shared prefixes are neighbours; the KV cache keeps the
  longest common prefix with the previous request and only the rest is decoded, with logits
  requested only where a continuation token is predicted.

Model files: a ``.gguf`` path, a folder holding GGUF files, a Hub repo of GGUF files (``--quant``
picks the file: ``Q4_K_M``, ``Q8_0``, ``F16``...), or the built-in model, exported on first use
(:mod:`smallbench.gguf_export`).
"""

from __future__ import annotations

import ctypes
import hashlib
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from smallbench import sizing
from smallbench.backends.base import (
    Backend,
    BackendInfo,
    Capabilities,
    LoadedModelInfo,
    LoadSpec,
    cut_at_stop,
    own_options,
)
from smallbench.errors import SmallbenchError
from smallbench.hardware import compute_threads
from smallbench.metrics import BatchTrace, GenerationTrace
from smallbench.tiny_model import builtin_weights_sha256

DEFAULT_QUANT_BUILTIN = "F32"  # exact parity with the float32 checkpoint
DEFAULT_QUANT_HUB = "Q4_K_M"  # what llama.cpp's own `-hf repo` picks when a repo has several
DEFAULT_MAX_CTX = 4096  # context allocated unless --ctx-size says otherwise (KV memory grows with it)
_DTYPE_AS_QUANT = {"float32": "F32", "fp32": "F32", "float16": "F16", "fp16": "F16", "bfloat16": "BF16",
                   "bf16": "BF16"}
_DECODE_ERRORS = {
    1: "no room left in the KV cache (the context is full)",
    2: "decoding was aborted",
    -1: "llama.cpp rejected the batch",
}


#: Where llama.cpp put the weights, from its load log: ``load_tensors: CPU_REPACK model buffer size = 1.2 MiB``.
_BUFFER = re.compile(r"(\S+) +(model|KV|compute) buffer size\s*=\s*([\d.]+) MiB")
EXTRA_BUFTS = ("auto", "on", "off")

# ggml_log_level (ggml.h): NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5 (continues the last line)
_WARN, _ERROR, _CONT = 3, 4, 5


# -- llama.cpp's log: keep the last error for our one-line messages -----------------------------
class _Log:
    """Replaces llama-cpp-python's log callback: warnings and errors go to stderr (the cell log),
    info only when verbose; the last error text is kept for error messages, and the size of every
    weights, KV and compute buffer llama.cpp allocates (by buffer type) for the record."""

    def __init__(self) -> None:
        import llama_cpp

        self.verbose = False
        self.errors: list[str] = []
        self.buffers: dict[str, dict[str, int]] = {}  # "model" | "KV" | "compute" -> buffer type -> bytes
        self._level = 0

        @llama_cpp.llama_log_callback
        def callback(level: int, text: bytes, user_data) -> None:
            level = self._level if level == _CONT else level
            self._level = level
            msg = text.decode("utf-8", errors="replace")
            if level == _ERROR:
                self.errors.append(msg.strip())
                del self.errors[:-20]
            elif m := _BUFFER.search(msg):
                kind = self.buffers.setdefault(m[2], {})
                kind[m[1]] = kind.get(m[1], 0) + round(float(m[3]) * 2**20)
            if level in (_WARN, _ERROR) or self.verbose:
                sys.stderr.write(msg)

        self._callback = callback  # keep a reference: llama.cpp holds the bare pointer
        llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))

    def first_error(self) -> str:
        """The first error since the last clear (the cause; later ones report the failure upwards),
        without llama.cpp's leading ``function_name:`` tags."""
        return next((re.sub(r"^(\w+: )+", "", e) for e in self.errors if e), "")


_log: _Log | None = None


def _llama():
    """Import llama_cpp, initialise its backend once, install the log hook."""
    global _log
    import llama_cpp

    if _log is None:
        _log = _Log()
        llama_cpp.llama_backend_init()
    return llama_cpp


# -- which GGUF file ------------------------------------------------------------------------------
_SPLIT = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$")


def _quant_in_name(name: str, quant: str) -> bool:
    return re.search(rf"(?<![A-Za-z0-9]){re.escape(quant)}(?![A-Za-z0-9_])", name, re.IGNORECASE) is not None


def select_gguf(files: list[str], quant: str | None, where: str) -> list[str]:
    """The file(s) of one model in a list of repo/folder paths: one file, or every part of a split
    file, first part first. ``quant`` picks among several; without it a single model is taken,
    else Q4_K_M if present (as llama.cpp's ``-hf`` does)."""
    ggufs = [f for f in files if f.endswith(".gguf") and "mmproj" not in Path(f).name.lower()]
    if not ggufs:
        raise SmallbenchError(
            f"no .gguf file in {where}: llama-cpp loads GGUF files (pass a .gguf file, a folder or Hub repo "
            "holding them, or convert with llama.cpp's convert_hf_to_gguf.py)"
        )
    models: dict[str, list[str]] = {}
    for f in sorted(ggufs):
        m = _SPLIT.search(f)
        models.setdefault(f[: m.start()] if m else f, []).append(f)
    names = list(models)
    if quant:
        chosen = [n for n in names if _quant_in_name(n, quant)]
    elif len(names) == 1:
        chosen = names
    else:
        chosen = [n for n in names if _quant_in_name(n, DEFAULT_QUANT_HUB)]
    if len(chosen) != 1:
        listing = ", ".join(Path(n).name.removesuffix(".gguf") for n in names)
        what = f"--quant {quant} matches {len(chosen)} of" if quant else "pick one with --quant among"
        raise SmallbenchError(f"{where}: {what} these GGUF models: {listing}")
    return models[chosen[0]]


def resolve_gguf(spec: LoadSpec, quant: str | None) -> Path:
    """Local path of the GGUF file to load: a .gguf file, one in a folder or Hub repo of them, or a Hugging Face
    checkpoint (local or Hub; random weights with ``--dummy``) converted once by llama.cpp's own converter."""
    from smallbench import dummy, llama_convert

    source = Path(spec.source).expanduser()
    if spec.dummy:
        folder = dummy.config_folder(spec.source, spec.revision)
        ck = dummy.checkpoint(folder, "float32" if quant == "F32" else "bfloat16")
        return llama_convert.ensure_gguf(ck, hashlib.sha256(ck.name.encode()).hexdigest(), quant or "BF16",
                                         spec.trust_remote_code)
    if source.is_file():
        if source.suffix != ".gguf":
            raise SmallbenchError(f"'{spec.source}' is not a .gguf file")
        return source
    if source.is_dir():
        if not any(source.rglob("*.gguf")) and (sha := builtin_weights_sha256(source)):
            from smallbench.gguf_export import ensure_gguf

            return ensure_gguf(source, sha, quant or DEFAULT_QUANT_BUILTIN)
        files = [str(p.relative_to(source)) for p in source.rglob("*.gguf")]
        if not files and (source / "config.json").is_file():
            return _converted(source, quant, spec.trust_remote_code)
        return source / select_gguf(files, quant, str(source))[0]
    from smallbench.models import entry

    known = entry(spec.model_id)
    if known is not None and (repo := known.gguf_repo(quant)) is not None:  # the catalogue's GGUF files
        return _hub_gguf(repo, None, quant)
    return _hub_gguf(spec.source, spec.revision, quant, spec.trust_remote_code)


def _hf_config(spec: LoadSpec) -> dict | None:
    """The Hugging Face config.json the GGUF was converted from, where it came from a local checkpoint (or a
    dummy's config); None for a GGUF file, whose metadata smallbench does not map back."""
    import json

    from smallbench import dummy

    folder = Path(spec.source).expanduser()
    if spec.dummy:
        folder = dummy.config_folder(spec.source, spec.revision)
    path = folder / "config.json"
    return json.loads(path.read_text()) if folder.is_dir() and path.is_file() else None


def _converted(folder: Path, quant: str | None, trust_remote_code: bool) -> Path:
    """A Hugging Face checkpoint folder as GGUF (its own precision unless ``quant`` says otherwise)."""
    from smallbench import llama_convert
    from smallbench.models import weights_digest

    digest = weights_digest(folder)
    if digest is None:
        raise SmallbenchError(f"'{folder}' has a config.json but no weights (.safetensors) to convert")
    return llama_convert.ensure_gguf(folder, digest, quant or llama_convert.checkpoint_type(folder), trust_remote_code)


def _hub_gguf(repo: str, revision: str | None, quant: str | None, trust_remote_code: bool = False) -> Path:
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download

    try:
        files = HfApi().list_repo_files(repo, revision=revision)
    except Exception:  # offline: whatever the cache holds
        try:
            snap = Path(snapshot_download(repo, revision=revision, local_files_only=True))
        except Exception as exc:
            raise SmallbenchError(f"cannot list the files of '{repo}' (offline and not cached)") from exc
        files = [str(p.relative_to(snap)) for p in snap.rglob("*")]
    if not any(f.endswith(".gguf") for f in files) and "config.json" in files:  # a Hugging Face checkpoint
        try:
            snap = Path(snapshot_download(repo, revision=revision, allow_patterns=["*.json", "*.safetensors",
                                                                                   "tokenizer*", "*.model"]))
        except Exception as exc:
            raise SmallbenchError(f"cannot fetch '{repo}' from the Hub (offline and not cached?)") from exc
        return _converted(snap, quant, trust_remote_code)
    parts = select_gguf(files, quant, repo)
    paths = [Path(hf_hub_download(repo, f, revision=revision)) for f in parts]
    return paths[0]  # llama.cpp finds the other parts of a split file beside the first


# -- the backend ----------------------------------------------------------------------------------
class LlamaCppBackend(Backend):
    name = "llama-cpp"
    requires_module = "llama_cpp"
    install_hint = "pip install 'smallbench[llama-cpp]' (builds llama.cpp; for CUDA/Metal see the README)"
    takes_quant = True
    quant_choices = "GGUF file types llama.cpp quantizes to: F32, F16, BF16, Q8_0, Q6_K, Q4_K_M, Q4_0, IQ4_XS..."
    config_flags = {"flash_attn": "auto", "extra_bufts_setting": "auto"}
    ALL_LAYERS = 999  # n_gpu_layers that offloads every layer there is

    @classmethod
    def partial_fit(cls, config: dict[str, Any], kind: str, device: str, memory: int, context: int,
                    overhead: int) -> str | None:
        """How many layers to offload to a GPU that cannot hold them all (``smallbench.sizing.offload_layers``)."""
        if device == "cpu":
            return None
        n = len(sizing.arch(config).layers)
        k = min(sizing.offload_layers(config, memory, kind, context, overhead), n)
        if k == 0:
            return "llama.cpp: not one layer fits on the GPU; it runs on the CPU (--n-gpu-layers 0)"
        return (f"llama.cpp: --n-gpu-layers {k} puts {k} of {n} layers on the GPU with their KV cache; the other "
                f"{n - k}, the input embedding and the output head run on the CPU")

    @classmethod
    def config_defaults(cls, device: str) -> dict[str, Any]:
        """Offload: every layer on a GPU, none on a CPU; a partial offload (``--n-gpu-layers 20``) is a config
        of its own."""
        return {**cls.config_flags, "n_gpu_layers": 0 if device == "cpu" else cls.ALL_LAYERS}

    capabilities = Capabilities(
        streaming=True,
        batching=True,
        logprobs=True,
        server_mode=False,
        dummy_weights=True,
        # common GGUF types; any type llama.cpp reads loads, and any it can quantize to exports
        quant_formats=["F32", "F16", "BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0", "IQ4_XS"],
        devices=["cpu", "cuda", "metal"],
    )

    @classmethod
    def check_quant(cls, quant: str) -> None:
        from smallbench.gguf_export import file_types

        if quant.upper() not in (types := file_types()):
            raise SmallbenchError(f"--quant '{quant}' is not a GGUF file type llama.cpp knows; choose from: "
                                  f"{', '.join(types)}")

    def __init__(self) -> None:
        self.model = None
        self.ctx = None
        self.vocab = None
        self.path: Path | None = None
        self.n_ctx = 0
        self.n_batch = 2048
        self.n_ubatch = 512
        self.threads = 0
        self.n_gpu_layers = 0
        self.device = "cpu"
        self.flash_attn: str = "auto"
        self.extra_bufts_setting = "auto"
        self.extra_bufts = True
        self.weight_buffers: dict[str, int] = {}
        self.kv_buffers: dict[str, int] = {}
        self.compute_buffers: dict[str, int] = {}
        self.file_type: str | None = None
        self._n_vocab = 0
        self._eog: list[int] = []
        self._special: set[int] | None = None
        self._multi: tuple[Any, int, int] | None = None  # (context, n_seq_max, n_ctx) for batches > 1
        self._ll = None  # the llama_cpp module, once imported
        self._prepared: tuple[LoadSpec, Path] | None = None  # what prepare() made ready, for that spec

    # -- lifecycle ---------------------------------------------------------------------------
    def import_library(self) -> None:
        self._ll = _llama()

    def prepare(self, spec: LoadSpec) -> None:
        self._prepared = (spec, resolve_gguf(spec, spec.quant or _DTYPE_AS_QUANT.get(spec.dtype)))

    def load(self, spec: LoadSpec) -> LoadedModelInfo:
        self._ll = ll = _llama()
        # --batch-size does not apply (scoring runs one sequence with prefix reuse), nor vLLM's knobs
        opts = own_options(spec.options, {"threads", "n_gpu_layers", "extra_bufts", "n_ctx"})
        if spec.dtype not in ("auto", *_DTYPE_AS_QUANT):
            raise SmallbenchError(f"unknown dtype '{spec.dtype}'; choose from: auto, float32, float16, bfloat16")
        quant = spec.quant or _DTYPE_AS_QUANT.get(spec.dtype)
        _log.verbose = bool(opts.pop("verbose", False))
        self.path = self._prepared[1] if self._prepared and self._prepared[0] is spec else resolve_gguf(spec, quant)
        self.threads = int(opts.pop("threads", 0) or compute_threads())
        self.n_gpu_layers = self._gpu_layers(spec.device, opts.pop("n_gpu_layers", None))
        self.extra_bufts_setting = str(opts.pop("extra_bufts", "auto"))
        self.extra_bufts = self._use_extra_bufts(self.extra_bufts_setting)
        mp = ll.llama_model_default_params()
        mp.n_gpu_layers = self.n_gpu_layers
        mp.use_extra_bufts = self.extra_bufts
        if spec.device.startswith("cuda:"):
            mp.split_mode = ll.LLAMA_SPLIT_MODE_NONE
            mp.main_gpu = int(spec.device.split(":", 1)[1])
        _log.errors.clear()
        _log.buffers.clear()
        self.model = ll.llama_model_load_from_file(str(self.path).encode(), mp)
        if not self.model:
            why = _log.first_error() or "unknown reason"
            raise SmallbenchError(f"llama.cpp could not load '{self.path.name}': {why}")
        self.weight_buffers = dict(_log.buffers.get("model", {}))
        self.vocab = ll.llama_model_get_vocab(self.model)
        self._n_vocab = ll.llama_vocab_n_tokens(self.vocab)
        self._eog = [t for t in range(self._n_vocab) if ll.llama_vocab_is_eog(self.vocab, t)]
        self._eog_set = set(self._eog)
        self._row_type = ctypes.c_float * self._n_vocab  # one row of logits, read in place
        n_train = ll.llama_model_n_ctx_train(self.model)
        self.n_ctx = int(opts.pop("n_ctx", 0) or min(n_train, DEFAULT_MAX_CTX))
        self.n_batch = min(int(opts.pop("n_batch", self.n_batch)), self.n_ctx)
        self.n_ubatch = min(int(opts.pop("n_ubatch", self.n_ubatch)), self.n_batch)
        self.flash_attn = str(opts.pop("flash_attn", "auto"))
        if opts:
            raise SmallbenchError(f"unknown llama-cpp option(s): {', '.join(opts)}")
        self.ctx = self._new_context(self.n_ctx, 1)
        self.kv_buffers = dict(_log.buffers.get("KV", {}))
        self.compute_buffers = dict(_log.buffers.get("compute", {}))
        if self.n_gpu_layers and ll.llama_supports_gpu_offload():
            system = ll.llama_print_system_info().decode(errors="replace")
            self.device = "cuda" if "CUDA" in system else "metal" if "Metal" in system or "MTL" in system else "gpu"
        self.file_type = _file_type_name(self._meta("general.file_type"))
        return LoadedModelInfo(
            params_total=ll.llama_model_n_params(self.model),
            params_active=None,
            dtype=self.file_type,
            quant=self.file_type,
            max_context=self.n_ctx,
            vocab_size=self._n_vocab,
            weights_bytes=ll.llama_model_size(self.model),
            kv_cache_tokens=self.n_ctx,  # allocated when the context is created
            config=_hf_config(spec),
        )

    def _gpu_layers(self, device: str, requested) -> int:
        ll = self._ll
        gpu = ll.llama_supports_gpu_offload()
        if device == "cpu":
            return 0
        layers = int(requested) if requested is not None else self.ALL_LAYERS if gpu else 0  # default: all
        layers = self.ALL_LAYERS if layers < 0 else layers  # llama.cpp's -1: all, recorded as the default is
        if device != "auto" and not gpu:
            raise SmallbenchError(
                f"device '{device}' requested but this llama-cpp-python build has no GPU offload; "
                "rebuild it with CMAKE_ARGS (see the README)"
            )
        return layers

    def _use_extra_bufts(self, setting: str) -> bool:
        """Whether llama.cpp may place weights in its CPU backend's extra buffer types: AMX tiles, and
        repacked layouts for Q4_0/Q4_K/IQ4_NL/Q8_0 (llama.cpp's ``--no-repack`` turns them off). ``auto``
        keeps them except where this build runs AMX kernels, whose matrix multiply segfaults
        (ggml-org/llama.cpp#20824); the README has the measurements behind that choice."""
        if setting not in EXTRA_BUFTS:
            raise SmallbenchError(f"llama-cpp option extra_bufts takes {', '.join(EXTRA_BUFTS)}, not '{setting}'")
        if setting != "auto":
            return setting == "on"
        return not amx_build(self._ll)

    @classmethod
    def crash_hint(cls, options: dict[str, Any]) -> str:
        if str(options.get("extra_bufts", "auto")) != "off":
            return ("try --extra-bufts off: llama.cpp's AMX/repacked weight buffers crash on some CPUs "
                    "(ggml-org/llama.cpp#20824); else another --quant")
        return "try another --quant; the cell's log has llama.cpp's last messages"

    def _new_context(self, n_ctx: int, n_seq: int):
        ll = self._ll
        cp = ll.llama_context_default_params()
        cp.n_ctx = n_ctx
        cp.n_batch = self.n_batch
        cp.n_ubatch = self.n_ubatch
        cp.n_seq_max = n_seq
        cp.kv_unified = True  # n_ctx is shared by all sequences, not split n_ctx / n_seq each
        cp.n_threads = cp.n_threads_batch = self.threads
        cp.flash_attn_type = {"auto": ll.LLAMA_FLASH_ATTN_TYPE_AUTO, "on": ll.LLAMA_FLASH_ATTN_TYPE_ENABLED,
                              "off": ll.LLAMA_FLASH_ATTN_TYPE_DISABLED}[self.flash_attn]
        _log.errors.clear()
        ctx = ll.llama_init_from_model(self.model, cp)
        if not ctx:
            raise SmallbenchError(f"llama.cpp could not create a context of {n_ctx} tokens: {_log.first_error()}")
        return ctx

    def close(self) -> None:
        ll = self._ll
        if ll is None:
            return
        for ctx in (self.ctx, self._multi[0] if self._multi else None):
            if ctx:
                ll.llama_free(ctx)
        self.ctx, self._multi = None, None
        if self.model:
            ll.llama_model_free(self.model)
            self.model = None

    # -- tokens ------------------------------------------------------------------------------
    def tokenize(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ll = self._ll
        data = text.encode("utf-8")
        size = len(data) + 8
        for _ in range(2):
            buf = (ll.llama_token * size)()
            n = ll.llama_tokenize(self.vocab, data, len(data), buf, size, add_special_tokens, True)
            if n >= 0:
                return list(buf[:n])
            size = -n
        raise SmallbenchError("llama.cpp could not tokenize the text")

    def detokenize(self, ids: list[int], skip_special: bool = False) -> str:
        ll = self._ll
        arr = (ll.llama_token * max(1, len(ids)))(*ids)
        size = 16 * len(ids) + 16
        for _ in range(2):
            buf = ctypes.create_string_buffer(size)
            n = ll.llama_detokenize(self.vocab, arr, len(ids), buf, size, False, not skip_special)
            if n >= 0:
                return buf.raw[:n].decode("utf-8", errors="replace")
            size = -n
        raise SmallbenchError("llama.cpp could not detokenize the ids")

    @property
    def special_token_ids(self) -> set[int]:
        if self._special is None:
            ll = self._ll
            plain = ll.LLAMA_TOKEN_ATTR_NORMAL | ll.LLAMA_TOKEN_ATTR_BYTE | ll.LLAMA_TOKEN_ATTR_USER_DEFINED
            self._special = {t for t in range(self._n_vocab) if not ll.llama_vocab_get_attr(self.vocab, t) & plain}
        return self._special

    @property
    def vocab_size(self) -> int:
        return self._n_vocab

    @property
    def bos_token_id(self) -> int | None:
        t = self._ll.llama_vocab_bos(self.vocab)
        return None if t < 0 else t

    @property
    def eos_token_id(self) -> int | None:
        t = self._ll.llama_vocab_eos(self.vocab)
        return None if t < 0 else t

    @property
    def max_context(self) -> int:
        return self.n_ctx

    # -- work --------------------------------------------------------------------------------
    def _check_fits(self, n_tokens: int, what: str) -> None:
        if n_tokens > self.n_ctx:
            raise SmallbenchError(
                f"{what} needs {n_tokens} tokens of context but the context holds {self.n_ctx} "
                f"(--ctx-size; the model was trained on {self._ll.llama_model_n_ctx_train(self.model)})"
            )

    def _decode(self, ctx, batch) -> None:
        _log.errors.clear()
        if rc := self._ll.llama_decode(ctx, batch):
            self._decode_failed(rc)

    def _decode_failed(self, rc: int):
        why = _DECODE_ERRORS.get(rc, f"error {rc}")
        detail = _log.first_error()
        raise SmallbenchError(f"llama.cpp decode failed: {why}" + (f" ({detail})" if detail else ""))

    def _greedy(self, ctx, ignore_eos: bool) -> int:
        """Argmax of the last position's logits, read in place. With ``ignore_eos`` no end-of-generation
        token may win (llama.cpp's own ignore_eos); checked after the argmax, which is rarely one."""
        ptr = self._ll.llama_get_logits_ith(ctx, -1)
        logits = np.frombuffer(self._row_type.from_address(ctypes.addressof(ptr.contents)), np.float32)
        tok = int(logits.argmax())
        if ignore_eos and tok in self._eog_set:
            logits = logits.copy()
            logits[self._eog] = -np.inf
            tok = int(logits.argmax())
        return tok

    def stream(
        self, prompt: list[int], max_new: int, ignore_eos: bool = True, stop: list[str] | None = None
    ) -> GenerationTrace:
        """Greedy decode of one sequence, a timestamp per token; ``stop`` strings end it early (generate_until)."""
        ll = self._ll
        self._check_fits(len(prompt) + max_new, f"a prompt of {len(prompt)} tokens + {max_new} new tokens")
        ctx = self.ctx
        ll.llama_memory_clear(ll.llama_get_memory(ctx), True)
        ids = np.asarray(prompt, dtype=np.int32)
        step = (ll.llama_token * 1)()
        step_batch = ll.llama_batch_get_one(step, 1)
        times: list[float] = []
        out: list[int] = []
        t_send = time.perf_counter()
        for a in range(0, len(ids), self.n_batch):
            chunk = ids[a : a + self.n_batch]
            self._decode(ctx, ll.llama_batch_get_one(chunk.ctypes.data_as(ctypes.POINTER(ll.llama_token)), len(chunk)))
        tok = self._greedy(ctx, ignore_eos)
        times.append(time.perf_counter())
        out.append(tok)
        # The decode loop, every lookup hoisted (on a tiny model one step is ~0.2 ms). The last row of
        # logits is read in place; the numpy view is rebuilt only when llama.cpp moves its buffer.
        decode, logits_at, row, f32 = self._ll.llama_decode, _logits_address(), self._row_type.from_address, np.float32
        frombuffer, clock, eog, stamp, push = np.frombuffer, time.perf_counter, self._eog_set, times.append, out.append
        where, view = 0, None
        for _ in range(max_new - 1):
            if not ignore_eos and tok in eog:
                break
            if stop and any(s in self.detokenize(out, skip_special=True) for s in stop):
                break
            step[0] = tok
            if rc := decode(ctx, step_batch):
                self._decode_failed(rc)
            if (at := logits_at(ctx, -1)) != where:
                where, view = at, frombuffer(row(at), f32)
            tok = int(view.argmax())
            if ignore_eos and tok in eog:
                tok = self._greedy(ctx, True)
            stamp(clock())
            push(tok)
        return GenerationTrace(t_send=t_send, n_prompt=len(prompt), chunks=[(t, 1) for t in times], token_ids=out)

    def generate_batch(
        self, prompts: list[list[int]], max_new_tokens: int, ignore_eos: bool = True
    ) -> BatchTrace:
        if len({len(p) for p in prompts}) != 1:
            raise ValueError("generate_batch needs equal-length prompts")
        if len(prompts) == 1:
            return BatchTrace.of([self.stream(prompts[0], max_new_tokens, ignore_eos)])
        return self._generate_many(prompts, max_new_tokens, ignore_eos)

    def _multi_context(self, n_seq: int, n_tokens: int):
        """A context for ``n_seq`` parallel sequences sharing ``n_tokens`` of KV cache (kept for reuse)."""
        if self._multi is None or self._multi[1] < n_seq or self._multi[2] < n_tokens:
            if self._multi is not None:
                self._ll.llama_free(self._multi[0])
                self._multi = None
            self._multi = (self._new_context(n_tokens, n_seq), n_seq, n_tokens)
        return self._multi[0]

    def _generate_many(self, prompts: list[list[int]], max_new: int, ignore_eos: bool) -> BatchTrace:
        ll = self._ll
        b, n_prompt = len(prompts), len(prompts[0])
        self._check_fits(n_prompt + max_new, f"a prompt of {n_prompt} tokens + {max_new} new tokens")
        ctx = self._multi_context(b, b * (n_prompt + max_new))
        ll.llama_memory_clear(ll.llama_get_memory(ctx), True)
        tokens = np.asarray(prompts, dtype=np.int32).reshape(-1)
        pos = np.tile(np.arange(n_prompt, dtype=np.int32), b)
        seq = np.repeat(np.arange(b, dtype=np.int32), n_prompt)
        want = np.zeros(b * n_prompt, dtype=bool)
        want[n_prompt - 1 :: n_prompt] = True
        t_send = time.perf_counter()
        last = self._decode_rows(ctx, tokens, pos, seq, want)
        out: list[list[int]] = [[] for _ in range(b)]
        active = np.arange(b)
        t_first = t_last = 0.0
        for step in range(max_new):
            if ignore_eos:
                last[:, self._eog] = -np.inf
            nxt = last.argmax(axis=1).astype(np.int32)
            t_last = time.perf_counter()
            t_first = t_first or t_last
            for s, t in zip(active.tolist(), nxt.tolist(), strict=True):
                out[s].append(t)
            if not ignore_eos:
                keep = ~np.isin(nxt, self._eog)
                active, nxt = active[keep], nxt[keep]
            if step + 1 == max_new or not len(active):
                break
            at = np.full(len(active), n_prompt + step, np.int32)  # each active sequence gets its new token
            last = self._decode_rows(ctx, nxt, at, active.astype(np.int32), np.ones(len(active), bool))
        return BatchTrace(t_send=t_send, t_first=t_first, t_last=t_last, batch=b, n_prompt=n_prompt,
                          n_out=[len(o) for o in out], token_ids=out)

    def _decode_rows(self, ctx, tokens, pos, seq, want) -> np.ndarray:
        """Decode explicit (token, position, sequence) triples in ``n_batch`` chunks; return a copy of
        the logits of the positions flagged in ``want``, in order."""
        ll = self._ll
        rows = []
        for a in range(0, len(tokens), self.n_batch):
            z = slice(a, a + self.n_batch)
            batch, keep = _make_batch(ll, tokens[z], pos[z], seq[z], want[z])
            self._decode(ctx, batch)
            n_out = int(want[z].sum())
            if n_out:
                ptr = ll.llama_get_logits(ctx)
                rows.append(np.ctypeslib.as_array(ptr, shape=(n_out, self._n_vocab)).copy())
            del keep
        return np.concatenate(rows) if rows else np.zeros((0, self._n_vocab), np.float32)

    def loglikelihood(self, requests: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """Requests sorted by their tokens so that shared prefixes (one question, several answers; one
        few-shot preamble) are neighbours; the KV cache keeps the common prefix with the previous
        request and only the rest is decoded. Cut from the left to the context as lm-eval does."""
        ll = self._ll
        for ctx_ids, cont in requests:
            if not ctx_ids or not cont:
                raise ValueError("loglikelihood needs a non-empty context (prepend BOS) and continuation")
            self._check_fits(len(cont), f"a continuation of {len(cont)} tokens")
        mem = ll.llama_get_memory(self.ctx)
        ll.llama_memory_clear(mem, True)
        cached: list[int] = []
        results: dict[int, tuple[float, bool]] = {}
        for i in sorted(range(len(requests)), key=lambda i: requests[i][0] + requests[i][1]):
            ctx_ids, cont = requests[i]
            inp = (ctx_ids + cont)[-(self.n_ctx + 1) :][:-1]
            first = len(inp) - len(cont)  # position whose logits predict cont[0]
            keep = min(_common_prefix(cached, inp), first)
            if not ll.llama_memory_seq_rm(mem, 0, keep, -1):  # e.g. recurrent models: start over
                ll.llama_memory_clear(mem, True)
                keep = 0
            n = len(inp) - keep
            logits = self._decode_rows(
                self.ctx, np.asarray(inp[keep:], np.int32), np.arange(keep, len(inp), dtype=np.int32),
                np.zeros(n, np.int32), np.arange(keep, len(inp)) >= first,
            )
            cached = inp
            results[i] = _score(logits, cont)
        return [results[i] for i in range(len(requests))]

    def generate_until(self, prompts: list[list[int]], max_new_tokens: int, stop: list[str]) -> list[str]:
        """Greedy text per prompt, stopping as soon as a stop string or an end-of-generation token appears."""
        stop = [s for s in stop if s]
        out = []
        for prompt in prompts:  # the caller has cut each prompt to leave room for max_new_tokens
            ids = self.stream(prompt, min(max_new_tokens, self.n_ctx - len(prompt)), False, stop).token_ids
            ids = [t for t in ids if t not in self._eog]
            out.append(cut_at_stop(self.detokenize(ids, skip_special=True), stop))
        return out

    # -- self-description --------------------------------------------------------------------
    def _meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(512)
        n = self._ll.llama_model_meta_val_str(self.model, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", errors="replace") if n >= 0 else None

    def memory_stats(self) -> dict[str, int]:
        """What llama.cpp reports allocating for the weights and the KV cache of the first context (its log's
        buffer sizes); the compute buffers are recorded in ``backend.flags``."""
        return {"engine_model_bytes": sum(self.weight_buffers.values()) + sum(self.kv_buffers.values())}

    def describe(self) -> BackendInfo:
        ll = self._ll
        system = ll.llama_print_system_info().decode(errors="replace")
        flags: dict[str, Any] = {
            "gguf_file": self.path.name if self.path else None,
            "n_ctx": self.n_ctx, "n_batch": self.n_batch, "n_ubatch": self.n_ubatch, "threads": self.threads,
            "n_gpu_layers": self.n_gpu_layers, "flash_attn": self.flash_attn,
            "extra_bufts": self.extra_bufts, "extra_bufts_setting": self.extra_bufts_setting,
            "weight_buffers": self.weight_buffers,
            "kv_buffers": self.kv_buffers,
            "compute_buffers": self.compute_buffers,
            "gpu_offload_build": bool(ll.llama_supports_gpu_offload()), "system_info": system.strip(),
        }
        if self.model:
            flags["architecture"] = self._meta("general.architecture")
            flags["weights_bytes"] = ll.llama_model_size(self.model)
            flags["n_ctx_train"] = ll.llama_model_n_ctx_train(self.model)
        return BackendInfo(name=self.name, version=ll.__version__, device=self.device, dtype=self.file_type,
                           flags=flags)


def amx_build(ll) -> bool:
    """Whether this llama.cpp build runs Intel AMX kernels on this CPU (its system info says AMX_INT8 = 1)."""
    return "AMX_INT8 = 1" in ll.llama_print_system_info().decode(errors="replace")


_LOGITS_ADDRESS = None


def _logits_address():
    """``llama_get_logits_ith`` returning the bare address (an int) rather than a ctypes pointer
    object: a separate handle on the same C function, so llama-cpp-python's own stays as it is."""
    global _LOGITS_ADDRESS
    if _LOGITS_ADDRESS is None:
        from llama_cpp import llama_cpp as raw

        fn = raw._lib["llama_get_logits_ith"]  # indexing gives a new handle; attribute access the shared one
        fn.argtypes, fn.restype = [ctypes.c_void_p, ctypes.c_int32], ctypes.c_void_p
        _LOGITS_ADDRESS = fn
    return _LOGITS_ADDRESS


def _make_batch(ll, tokens, pos, seq, want):
    """A ``llama_batch`` over numpy arrays (one sequence id per token), built without a Python loop.
    Returns the batch and the arrays it points into, which must stay alive until it is decoded."""
    n = len(tokens)
    tok = np.ascontiguousarray(tokens, np.int32)
    p = np.ascontiguousarray(pos, np.int32)
    s = np.ascontiguousarray(seq, np.int32)
    n_seq = np.ones(n, np.int32)
    out = np.ascontiguousarray(want, np.int8)
    seq_ptrs = (s.ctypes.data + 4 * np.arange(n, dtype=np.uintp)).astype(np.uintp)
    i32 = ctypes.POINTER(ctypes.c_int32)
    batch = ll.llama_batch(
        n_tokens=n, token=tok.ctypes.data_as(i32), embd=None, pos=p.ctypes.data_as(i32),
        n_seq_id=n_seq.ctypes.data_as(i32), seq_id=seq_ptrs.ctypes.data_as(ctypes.POINTER(i32)),
        logits=out.ctypes.data_as(ctypes.POINTER(ctypes.c_int8)),
    )
    return batch, (tok, p, s, n_seq, out, seq_ptrs)


def _score(logits: np.ndarray, cont: list[int]) -> tuple[float, bool]:
    """(Σ log p(cont), greedy?) from the rows of logits that predict ``cont``."""
    x = logits.astype(np.float64)
    x -= x.max(axis=1, keepdims=True)
    logp = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
    idx = np.arange(len(cont))
    return float(logp[idx, cont].sum()), bool((logits.argmax(axis=1) == np.asarray(cont)).all())


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _file_type_name(value: str | None) -> str | None:
    if value is None:
        return None
    from smallbench.gguf_export import file_types

    names = {v: k for k, v in file_types().items()}
    try:
        return names.get(int(value), value)
    except ValueError:
        return value
