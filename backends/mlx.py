"""MLX backend, through mlx-lm (Apple Silicon GPU via Metal; CPU anywhere with ``mlx[cpu]``).

The adapter uses mlx-lm's own engine and stamps tokens as they reach the host:

- ``stream``: ``mlx_lm.generate.generate_step`` (what ``stream_generate`` and ``mlx_lm.benchmark``
  run, without the detokenizer), greedy; one timestamp per yielded token;
- ``generate_batch``: mlx-lm's ``BatchGenerator`` (continuous batching), every sequence in one batch;
- ``loglikelihood``: the model's logits; requests that share a context run it once into a KV cache and
  each continuation is scored from a copy of it, the rest run as right-padded batches. The scoring
  context is the whole request, cut from the left only at the model's own context length (as lm-eval
  does; mlx-lm's evaluate drops the context beyond a fixed token budget).

Models: an MLX repo on the Hub (``mlx-community/...``), any local or Hub Hugging Face checkpoint of
an architecture mlx-lm knows, or the built-in model. ``--quant`` (``float32``, ``float16``,
``bfloat16``, ``8bit``, ``6bit``, ``5bit``, ``4bit``, ``3bit``, ``2bit``) converts the checkpoint
once with mlx-lm's own converter (``mlx_lm.convert``, affine quantization, group size 64) into
smallbench's cache; the built-in model is always converted, to float32 unless ``--quant`` says
otherwise.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

from smallbench.apart import run_apart
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
from smallbench.errors import SmallbenchError
from smallbench.metrics import BatchTrace, GenerationTrace
from smallbench.paths import cache_dir
from smallbench.tiny_model import builtin_weights_sha256

#: --quant values: float dtypes convert without quantizing; N-bit is mlx-lm's affine quantization.
FLOAT_QUANTS = {"float32": "float32", "f32": "float32", "fp32": "float32", "float16": "float16", "f16": "float16",
                "fp16": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16"}
BIT_QUANTS = {f"{b}bit": b for b in (8, 6, 5, 4, 3, 2)}
GROUP_SIZE = 64  # mlx_lm.convert's default
PREFILL_STEP = 2048  # mlx-lm's default prompt chunk
SCORE_BATCH = 16  # sequences per forward pass when scoring requests that share no context


def normalize_quant(quant: str) -> str:
    q = quant.lower().replace("-", "").replace("_", "")
    q = {"q8": "8bit", "q6": "6bit", "q5": "5bit", "q4": "4bit", "q3": "3bit", "q2": "2bit"}.get(q, q)
    if q in FLOAT_QUANTS:
        return FLOAT_QUANTS[q]
    if q in BIT_QUANTS:
        return q
    names = ", ".join(["float32", "float16", "bfloat16", *BIT_QUANTS])
    raise SmallbenchError(f"unknown MLX quantization '{quant}'; choose from: {names}")


# -- which weights ---------------------------------------------------------------------------------
def resolve_weights(spec: LoadSpec) -> tuple[str, str | None]:
    """(what mlx_lm.load gets: a folder or a Hub repo id, the --quant it was converted to or None)."""
    quant = normalize_quant(spec.quant) if spec.quant else None
    source = Path(spec.source).expanduser()
    if source.is_dir() and (sha := builtin_weights_sha256(source)):
        quant = quant or "float32"  # the built-in model is float32: exact parity with the other backends
        return str(ensure_converted(source, quant, sha[:16], source.name)), quant
    if quant is None:
        return spec.source, None
    from smallbench.models import entry

    known = entry(spec.model_id)
    if known is not None and (repo := known.mlx_repo(quant)) is not None:  # converted already, on the Hub
        return repo, quant
    local = Path(_local_copy(spec.source, spec.revision))
    if "quantization" in _read_config(local):
        raise SmallbenchError(f"'{spec.source}' is already quantized; --quant converts unquantized checkpoints only")
    # keyed by the exact files: a Hub snapshot's path names its commit; a local folder's weights and config (an
    # edited config.json converts anew) by size and time
    files = [*sorted(local.glob("*.safetensors")), local / "config.json"]
    stamp = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file()]
    key = hashlib.sha256(f"{local.resolve()}|{stamp}".encode()).hexdigest()[:16]
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", spec.source.strip("/").split("/")[-1])
    return str(ensure_converted(local, quant, key, name, spec.trust_remote_code)), quant


def _local_copy(source: str, revision: str | None) -> str:
    """A local folder for ``source``: itself, or the Hub repo's snapshot (downloaded, or from the cache
    offline) holding the files mlx-lm loads. (Given a repo id, mlx_lm.convert would also fetch the
    repo's model card from the Hub.)"""
    if Path(source).expanduser().exists():
        return str(Path(source).expanduser())
    from huggingface_hub import snapshot_download
    from mlx_lm.utils import DEFAULT_ALLOW_PATTERNS

    try:
        return snapshot_download(source, revision=revision, allow_patterns=DEFAULT_ALLOW_PATTERNS)
    except Exception as exc:
        raise SmallbenchError(f"cannot fetch '{source}' from the Hub (offline and not cached?): {exc}") from exc


def _read_config(folder: Path) -> dict:
    try:
        return json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return {}


def ensure_converted(source: Path, quant: str, key: str, name: str, trust_remote_code: bool = False) -> Path:
    """The cached MLX conversion of the local checkpoint ``source`` in ``quant``, made first with
    ``mlx_lm.convert`` if missing."""
    folder = cache_dir() / "mlx" / key / f"{name}-{quant}"
    if (folder / "config.json").exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if (folder / "config.json").exists():
            return folder
        tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            run_apart("smallbench.backends.mlx:convert_into", f"mlx_lm.convert of '{source}' to {quant}",
                      source=str(source), out=str(tmp), quant=quant, trust_remote_code=trust_remote_code)
        except SmallbenchError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        tmp.rename(folder)
    return folder


def convert_into(source: str, out: str, quant: str, trust_remote_code: bool) -> None:
    """:func:`ensure_converted`'s work, in a process of its own (smallbench.apart): ``mlx_lm.convert``."""
    from mlx_lm import convert

    args: dict[str, Any] = {"dtype": FLOAT_QUANTS.get(quant)}
    if quant in BIT_QUANTS:
        args.update(quantize=True, q_bits=BIT_QUANTS[quant], q_group_size=GROUP_SIZE)
    try:
        convert(source, out, trust_remote_code=trust_remote_code, **args)
    except Exception as exc:
        raise SmallbenchError(f"mlx_lm.convert could not convert '{source}' to {quant}: {exc}") from exc


def _device(requested: str):
    """The MLX device for --device (auto: MLX's default, the GPU where there is one)."""
    import mlx.core as mx

    kind = requested.split(":")[0]
    if kind == "auto":
        return mx.default_device()
    if kind == "cpu":
        return mx.Device(mx.cpu)
    if kind in ("mps", "metal", "gpu") and mx.metal.is_available():
        return mx.Device(mx.gpu)
    if kind == "cuda" and hasattr(mx, "cuda") and mx.cuda.is_available():
        return mx.Device(mx.gpu, int(requested.split(":")[1]) if ":" in requested else 0)
    raise SmallbenchError(f"device '{requested}' requested but this MLX build has no such device "
                          "(Metal needs Apple Silicon; CUDA needs the mlx[cuda] build)")


def _device_name(device) -> str:
    import mlx.core as mx

    if device.type == mx.cpu:
        return "cpu"
    return "metal" if mx.metal.is_available() else "cuda"


# -- the backend ------------------------------------------------------------------------------------
class MLXBackend(HFTokenizerMixin, Backend):
    name = "mlx"
    requires_module = "mlx_lm"
    install_hint = "pip install 'smallbench[mlx]' (Apple Silicon: Metal; Linux: the CPU build mlx[cpu])"
    takes_quant = True
    quant_choices = "float32, float16, bfloat16, 8bit, 6bit, 5bit, 4bit, 3bit, 2bit (mlx_lm.convert)"
    config_flags = {"prefill_step_size": PREFILL_STEP}

    capabilities = Capabilities(
        streaming=True,
        batching=True,
        logprobs=True,
        server_mode=False,
        dummy_weights=True,
        quant_formats=["float32", "float16", "bfloat16", *BIT_QUANTS],
        devices=["cpu", "metal", "cuda"],
    )

    @classmethod
    def check_quant(cls, quant: str) -> None:
        normalize_quant(quant)

    def __init__(self) -> None:
        self.model = None
        self.tokenizer = None
        self.wrapper = None  # mlx-lm's TokenizerWrapper
        self.config: dict[str, Any] = {}
        self.device = None
        self.mx_stream = None
        self.weights: str | None = None
        self.quant: str | None = None
        self.dtype: str | None = None
        self.prefill_step = PREFILL_STEP
        self.score_batch = SCORE_BATCH
        self._eos: set[int] = set()
        self._vocab_size = 0
        self._model_vocab = 0
        self._max_context = 2048
        self._mx = None
        self._prepared: tuple[LoadSpec, tuple[str, str | None]] | None = None  # prepare()'s, for that spec

    # -- lifecycle ---------------------------------------------------------------------------
    def import_library(self) -> None:
        import mlx.core as mx
        import mlx_lm.generate  # noqa: F401

        self._mx = mx

    def prepare(self, spec: LoadSpec) -> None:
        if not spec.dummy:
            self._prepared = (spec, resolve_weights(spec))

    def load(self, spec: LoadSpec) -> LoadedModelInfo:
        self.import_library()
        mx = self._mx
        from mlx.utils import tree_flatten
        from mlx_lm import load
        from mlx_lm.utils import get_total_parameters

        opts = own_options(spec.options, {"prefill_step_size", "score_batch"})
        self.prefill_step = int(opts.pop("prefill_step_size", PREFILL_STEP))
        self.score_batch = int(opts.pop("score_batch", SCORE_BATCH))
        if opts:
            raise SmallbenchError(f"unknown mlx option(s): {', '.join(opts)}")
        if spec.dtype != "auto" and spec.dtype not in FLOAT_QUANTS:
            raise SmallbenchError(f"unknown dtype '{spec.dtype}'; choose from: auto, float32, float16, bfloat16")
        self.device = _device(spec.device)
        mx.set_default_device(self.device)
        self.mx_stream = mx.new_stream(self.device)
        try:
            if spec.dummy:  # the architecture's own MLX classes, initialised at random; no weights read
                from mlx_lm.utils import load_model, load_tokenizer

                from smallbench.dummy import config_folder

                if spec.quant:
                    raise SmallbenchError("mlx: --dummy builds unquantized weights; --quant does not apply")
                folder = config_folder(spec.source, spec.revision)
                self.weights, self.quant = str(folder), None
                model, config = load_model(folder, strict=False, trust_remote_code=spec.trust_remote_code)
                wrapper = load_tokenizer(folder, {"trust_remote_code": spec.trust_remote_code},
                                         eos_token_ids=config.get("eos_token_id"))
            else:
                ready = self._prepared[1] if self._prepared and self._prepared[0] is spec else None
                self.weights, self.quant = ready or resolve_weights(spec)
                model, wrapper, config = load(
                    self.weights, revision=None if self.quant else spec.revision, return_config=True,
                    tokenizer_config={"trust_remote_code": spec.trust_remote_code},
                    trust_remote_code=spec.trust_remote_code,
                )
        except SmallbenchError:
            raise
        except Exception as exc:
            raise SmallbenchError(f"mlx-lm could not load '{spec.source}': {exc}") from exc
        if spec.dtype != "auto":  # casts the float parameters (quantized weights stay packed)
            model.set_dtype(getattr(mx, FLOAT_QUANTS[spec.dtype]))
        self.model, self.wrapper, self.config = model, wrapper, config
        self.tokenizer = wrapper._tokenizer
        self._eos = set(wrapper.eos_token_ids)
        if self.tokenizer.eos_token_id is not None:
            self._eos.add(self.tokenizer.eos_token_id)
        text = config.get("text_config") or config
        self._model_vocab = int(text.get("vocab_size") or len(self.tokenizer))  # rows of the logits
        self._vocab_size = min(len(self.tokenizer), self._model_vocab)
        self._max_context = config_max_context(config) or 2048
        params = [v for _, v in tree_flatten(model.parameters())]
        floats = [str(v.dtype).removeprefix("mlx.core.") for v in params if mx.issubdtype(v.dtype, mx.floating)]
        self.dtype = max(set(floats), key=floats.count) if floats else None
        q = config.get("quantization")
        if self.quant is None and isinstance(q, dict) and "bits" in q:  # an MLX repo quantized already
            self.quant = f"{q['bits']}bit"
        return LoadedModelInfo(
            params_total=get_total_parameters(model),
            params_active=None,
            dtype=self.dtype,
            quant=self.quant,
            max_context=self._max_context,
            vocab_size=text.get("vocab_size"),
            weights_bytes=sum(v.nbytes for v in params),
            config=config,
        )

    def close(self) -> None:
        self.model = None
        if self._mx is not None:
            self._mx.synchronize()
            self._mx.clear_cache()

    # -- generation --------------------------------------------------------------------------
    def _sampler(self, ignore_eos: bool):
        """Greedy; with ``ignore_eos`` no end-of-sequence token can win (llama.cpp's and Transformers'
        ``min_new_tokens`` semantics), so exactly the requested number of tokens comes out."""
        mx = self._mx
        if not ignore_eos or not self._eos:
            from mlx_lm.sample_utils import greedy_sampler

            return greedy_sampler
        mask = np.zeros(self._model_vocab, np.float32)
        mask[[t for t in self._eos if t < self._model_vocab]] = -np.inf
        bias = mx.array(mask)
        return lambda logprobs: mx.argmax(logprobs + bias, axis=-1)

    def stream(
        self, prompt: list[int], max_new: int, ignore_eos: bool = True, stop: list[str] | None = None
    ) -> GenerationTrace:
        """Greedy decode of one sequence with mlx-lm's generate_step, a timestamp per token; ``stop``
        strings end it early (generate_until)."""
        mx = self._mx
        from mlx_lm.generate import generate_step, wired_limit

        if len(prompt) + max_new > self._max_context:
            raise SmallbenchError(f"a prompt of {len(prompt)} tokens + {max_new} new tokens exceeds the model's "
                                  f"context ({self._max_context})")
        sampler = self._sampler(ignore_eos)
        times: list[float] = []
        out: list[int] = []
        clock, stamp, push, eos = time.perf_counter, times.append, out.append, self._eos
        with wired_limit(self.model, [self.mx_stream]):
            t_send = clock()
            steps = generate_step(mx.array(prompt), self.model, self.mx_stream, max_tokens=max_new, sampler=sampler,
                                  prefill_step_size=self.prefill_step)
            for tok, _ in steps:
                stamp(clock())
                push(tok)
                if not ignore_eos and tok in eos:
                    break
                if stop and any(s in self.tokenizer.decode(out) for s in stop):
                    break
            steps.close()
            mx.synchronize(self.mx_stream)  # generate_step computes one step ahead; let it finish off the clock
        return GenerationTrace(t_send=t_send, n_prompt=len(prompt), chunks=[(t, 1) for t in times], token_ids=out)

    def generate_batch(
        self, prompts: list[list[int]], max_new_tokens: int, ignore_eos: bool = True
    ) -> BatchTrace:
        if len({len(p) for p in prompts}) != 1:
            raise ValueError("generate_batch needs equal-length prompts")
        if len(prompts) == 1:
            return BatchTrace.of([self.stream(prompts[0], max_new_tokens, ignore_eos)])
        n_prompt, b = len(prompts[0]), len(prompts)
        from mlx_lm.generate import BatchGenerator

        if n_prompt + max_new_tokens > self._max_context:
            raise SmallbenchError(f"a prompt of {n_prompt} tokens + {max_new_tokens} new tokens exceeds the "
                                  f"model's context ({self._max_context})")
        stop = None if ignore_eos else [[t] for t in sorted(self._eos)]
        gen = BatchGenerator(self.model, max_tokens=max_new_tokens, stop_tokens=stop,
                             sampler=self._sampler(ignore_eos), completion_batch_size=b, prefill_batch_size=b,
                             prefill_step_size=self.prefill_step, stream=self.mx_stream)
        out: list[list[int]] = [[] for _ in range(b)]
        clock = time.perf_counter
        try:
            t_send = clock()
            row = {uid: i for i, uid in enumerate(gen.insert(prompts, [max_new_tokens] * b))}
            t_first = t_last = 0.0
            while responses := gen.next_generated():
                t_last = clock()
                t_first = t_first or t_last
                for r in responses:
                    out[row[r.uid]].append(r.token)
        finally:
            gen.close()
            self._mx.synchronize(self.mx_stream)
        return BatchTrace(t_send=t_send, t_first=t_first, t_last=t_last, batch=b, n_prompt=n_prompt,
                          n_out=[len(o) for o in out], token_ids=out)

    def generate_until(self, prompts: list[list[int]], max_new_tokens: int, stop: list[str]) -> list[str]:
        """Greedy text per prompt, stopping as soon as a stop string or an end-of-sequence token appears."""
        stop = [s for s in stop if s]
        out = []
        for prompt in prompts:  # the caller has cut each prompt to leave room for max_new_tokens
            n = min(max_new_tokens, self._max_context - len(prompt))
            ids = self.stream(prompt, n, False, stop).token_ids if n > 0 else []
            ids = [t for t in ids if t not in self._eos]
            out.append(cut_at_stop(self.tokenizer.decode(ids, skip_special_tokens=True), stop))
        return out

    # -- scoring -----------------------------------------------------------------------------
    def _forward(self, tokens: list[int], cache, last: int):
        """Run ``tokens`` through the model into ``cache`` in prefill-sized chunks; return the
        log-probabilities (float32) of the last ``last`` positions."""
        mx = self._mx
        rows = []
        n = len(tokens)
        with mx.stream(self.mx_stream):
            for a in range(0, n, self.prefill_step):
                chunk = tokens[a : a + self.prefill_step]
                logits = self.model(mx.array(chunk)[None], cache=cache)[0]
                keep = max(0, n - last - a)  # first row of this chunk among the last `last` positions
                if keep < len(chunk):
                    x = logits[keep:].astype(mx.float32)
                    rows.append(x - mx.logsumexp(x, axis=-1, keepdims=True))
                mx.eval(rows, [c.state for c in cache])
        return mx.concatenate(rows) if len(rows) > 1 else rows[0]

    def loglikelihood(self, requests: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """Requests that share a context of more than one token run it once into a KV cache and score
        each continuation from a copy of it; the rest run as length-sorted, right-padded batches of
        ``(context + continuation)[:-1]`` (lm-eval's layout; a causal model's logits before the padding
        do not see it). Each request is cut from the left to the model's context length + 1, nowhere else."""
        from mlx_lm.models.cache import make_prompt_cache

        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (ctx, cont) in enumerate(requests):
            if not ctx or not cont:
                raise ValueError("loglikelihood needs a non-empty context (prepend BOS) and continuation")
            if len(cont) > self._max_context:
                raise SmallbenchError(f"a continuation of {len(cont)} tokens exceeds the model's context "
                                      f"({self._max_context})")
            whole = (ctx + cont)[-(self._max_context + 1) :]
            groups.setdefault(tuple(whole[: len(whole) - len(cont)]), []).append(i)
        results: dict[int, tuple[float, bool]] = {}
        plain: list[int] = []
        for ctx_t, idx in groups.items():
            if len(idx) == 1 or len(ctx_t) == 1:  # nothing shared, or a lone BOS: not worth a cache
                plain.extend(idx)
                continue
            cache = make_prompt_cache(self.model)
            first = self._forward(list(ctx_t), cache, 1)
            for k, i in enumerate(idx):
                cont = requests[i][1]
                rows = first
                if len(cont) > 1:
                    own = cache if k == len(idx) - 1 else copy.deepcopy(cache)
                    rows = self._mx.concatenate([first, self._forward(cont[:-1], own, len(cont) - 1)])
                results[i] = _score(rows, cont)
        self._score_plain(requests, plain, results)
        return [results[i] for i in range(len(requests))]

    def _score_plain(self, requests, indices: list[int], results: dict) -> None:
        """Batches of up to ``score_batch`` right-padded sequences; one longer than a prefill chunk runs alone,
        chunked into its own KV cache."""
        mx = self._mx
        from mlx_lm.models.cache import make_prompt_cache

        prepared = []
        for i in indices:
            ctx, cont = requests[i]
            whole = (ctx + cont)[-(self._max_context + 1) :]
            prepared.append((i, whole[:-1], cont))
        prepared.sort(key=lambda r: -len(r[1]))
        long = [r for r in prepared if len(r[1]) > self.prefill_step]
        for i, inp, cont in long:
            results[i] = _score(self._forward(inp, make_prompt_cache(self.model), len(cont)), cont)
        short = prepared[len(long) :]
        for b in range(0, len(short), self.score_batch):
            chunk = short[b : b + self.score_batch]
            width = len(chunk[0][1])
            with mx.stream(self.mx_stream):
                logits = self.model(mx.array([inp + [0] * (width - len(inp)) for _, inp, _ in chunk]))
                rows = []
                for r, (_, inp, cont) in enumerate(chunk):
                    x = logits[r, len(inp) - len(cont) : len(inp)].astype(mx.float32)
                    rows.append(x - mx.logsumexp(x, axis=-1, keepdims=True))
                mx.eval(rows)
            for (i, _, cont), lp in zip(chunk, rows, strict=True):
                results[i] = _score(lp, cont)

    # -- self-description --------------------------------------------------------------------
    def describe(self) -> BackendInfo:
        import mlx.core as mx
        import mlx_lm

        flags: dict[str, Any] = {"mlx": mx.__version__, "prefill_step_size": self.prefill_step,
                                 "score_batch": self.score_batch, "metal": mx.metal.is_available()}
        with contextlib.suppress(Exception):
            flags["device_info"] = {k: v for k, v in mx.device_info().items() if isinstance(v, str | int | float)}
        if self.weights:
            flags["weights"] = Path(self.weights).name if Path(self.weights).exists() else self.weights
            flags["model_type"] = self.config.get("model_type")
        if q := self.config.get("quantization"):
            flags["quantization"] = q
        if self.model is not None:
            from mlx_lm.utils import compute_bits_per_weight

            flags["bits_per_weight"] = round(float(compute_bits_per_weight(self.model)), 3)
        device = _device_name(self.device) if self.device is not None else None
        return BackendInfo(name=self.name, version=mlx_lm.__version__, device=device, dtype=self.dtype, flags=flags)

    def memory_stats(self) -> dict[str, int]:
        """MLX's allocator: peak since the last reset, memory in use, and freed buffers it keeps cached."""
        mx = self._mx
        peak = mx.get_peak_memory()
        return {"mlx_peak_bytes": peak, "mlx_active_bytes": mx.get_active_memory(),
                "mlx_cache_bytes": mx.get_cache_memory(), "engine_model_bytes": peak}

    def reset_peak_memory(self) -> None:
        self._mx.synchronize()
        self._mx.reset_peak_memory()


def _score(logp, cont: list[int]) -> tuple[float, bool]:
    """(Σ log p(cont), greedy?) from the log-probability rows that predict ``cont``."""
    x = np.asarray(logp, dtype=np.float64)
    idx = np.arange(len(cont))
    return float(x[idx, cont].sum()), bool((x.argmax(axis=1) == np.asarray(cont)).all())
