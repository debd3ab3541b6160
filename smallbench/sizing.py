"""Sizes from a model's ``config.json`` alone: parameters, weight bytes, KV-cache bytes, what fits, and the
decode roofline. Plain arithmetic: no backend, no torch, no download.

Conventions (docs/metrics.md, "Sizing"):
- parameters are counted from the architecture as its code builds it; a tied output head counts once; a
  mixture-of-experts model counts every expert in ``total`` and only the routed top-k (plus shared experts)
  in ``active``;
- the KV cache holds K and V for every attention layer; a sliding-window layer holds at most ``window``
  tokens; a Mamba (SSM) layer holds a fixed state per sequence, whatever its length.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from smallbench.errors import SmallbenchError

#: Bytes per element of the float types a backend computes or stores in.
DTYPE_BYTES = {"float32": 4.0, "float16": 2.0, "bfloat16": 2.0, "float8": 1.0, "fp8": 1.0}

#: Average bits per weight of quantized formats. GGUF block types are exact (llama.cpp's block layouts:
#: Q8_0 = 34 bytes per 32 weights...); the K-quant mixes (``_M``/``_S``) keep some tensors at a higher type,
#: so their figure is the average llama.cpp's quantizer reports on Llama-family models. MLX affine
#: quantization stores a 16-bit scale and bias per group of 64.
QUANT_BITS = {
    "F32": 32.0, "F16": 16.0, "BF16": 16.0, "Q8_0": 8.5, "Q6_K": 6.5625, "Q5_K_M": 5.69, "Q5_K_S": 5.54,
    "Q5_0": 5.5, "Q4_K_M": 4.89, "Q4_K_S": 4.58, "Q4_0": 4.5, "IQ4_NL": 4.5, "IQ4_XS": 4.25, "Q3_K_M": 3.91,
    "Q2_K": 2.96,
    "8bit": 8.5, "6bit": 6.5, "5bit": 5.5, "4bit": 4.5, "3bit": 3.5, "2bit": 2.5,
}


def bits_per_weight(kind: str) -> float:
    """Bits per parameter of a float dtype (``bfloat16``) or a quantized format (``Q4_K_M``, ``4bit``)."""
    if kind in DTYPE_BYTES:
        return DTYPE_BYTES[kind] * 8
    for table_key in (kind, kind.upper()):
        if table_key in QUANT_BITS:
            return QUANT_BITS[table_key]
    choices = ", ".join([*DTYPE_BYTES, *QUANT_BITS])
    raise SmallbenchError(f"unknown weights type '{kind}'; choose from: {choices}")


# -- the architecture, read from config.json ------------------------------------------------------

def text_config(config: dict[str, Any]) -> dict[str, Any]:
    """The language model's part of a config (multimodal configs nest it as ``text_config``)."""
    return config.get("text_config") or config


@dataclass(frozen=True)
class Layer:
    mixer: str  # "attention" | "sliding" | "mamba" | "none"
    ffn: str  # "dense" | "moe" | "none"


@dataclass(frozen=True)
class Arch:
    """What sizing needs of an architecture, from its config."""

    model_type: str
    vocab: int
    hidden: int
    layers: tuple[Layer, ...]
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    tied: bool
    window: int | None = None
    gated_mlp: bool = True  # SwiGLU-style gate + up + down; relu2 MLPs have up + down only
    experts: int = 0
    top_k: int = 0
    moe_intermediate: int = 0
    shared_experts: int = 0
    shared_intermediate: int = 0
    mamba_heads: int = 0
    mamba_head_dim: int = 0
    mamba_groups: int = 0
    mamba_state: int = 0
    mamba_conv: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_attention(self) -> int:
        return sum(layer.mixer == "attention" for layer in self.layers)

    @property
    def n_sliding(self) -> int:
        return sum(layer.mixer == "sliding" for layer in self.layers)

    @property
    def n_mamba(self) -> int:
        return sum(layer.mixer == "mamba" for layer in self.layers)


#: Block letters of Nemotron-H's ``hybrid_override_pattern``.
_NEMOTRON_BLOCKS = {"M": Layer("mamba", "none"), "*": Layer("attention", "none"), "-": Layer("none", "dense"),
                    "E": Layer("none", "moe")}
#: transformers 5's spelling of the same pattern (``layers_block_type``), name -> letter (llama_convert's too)
NEMOTRON_LETTERS = {"mamba": "M", "linear_attention": "M", "attention": "*", "full_attention": "*", "mlp": "-",
                   "moe": "E"}
#: ``layer_types`` spellings of a sliding-window attention layer.
_SLIDING = {"sliding_attention", "sliding", "local", "chunked_attention"}


def _whole(c: dict[str, Any], key: str, default: int | None = None, minimum: int = 0) -> int:
    """``c[key]`` as a whole number ≥ ``minimum``: required where ``default`` is None, else ``default`` when the
    key is absent, null or 0 (as the libraries read these configs)."""
    v = c[key] if default is None else (c.get(key) or default)
    if isinstance(v, bool) or not isinstance(v, int | float) or (isinstance(v, float) and not v.is_integer()):
        raise SmallbenchError(f"config of '{c.get('model_type') or 'unknown'}': {key} is {v!r}, not a whole number; "
                              "cannot size it")
    if v < minimum:
        raise SmallbenchError(f"config of '{c.get('model_type') or 'unknown'}': {key} is {v!r}, less than {minimum}; "
                              "cannot size it")
    return int(v)


def arch(config: dict[str, Any]) -> Arch:
    """The :class:`Arch` of a config.json dict. Raises :class:`SmallbenchError` naming what is missing or is not a
    dimension (a string, a fraction, a negative number)."""
    c = text_config(config)
    mt = c.get("model_type") or "unknown"

    def n(key: str, default: int | None = None, minimum: int = 0) -> int:
        return _whole(c, key, default, minimum)

    try:
        hidden, heads = n("hidden_size", minimum=1), n("num_attention_heads", minimum=1)
        common = dict(
            model_type=mt, vocab=n("vocab_size", minimum=1), hidden=hidden, heads=heads,
            kv_heads=n("num_key_value_heads", heads, 1), head_dim=n("head_dim", hidden // heads, 1),
            intermediate=n("intermediate_size", 0), tied=bool(c.get("tie_word_embeddings", False)),
        )
        if mt == "nemotron_h":
            pattern = c.get("hybrid_override_pattern") or "".join(NEMOTRON_LETTERS[t] for t in c["layers_block_type"])
            moe = "E" in pattern
            return Arch(
                layers=tuple(_NEMOTRON_BLOCKS[ch] for ch in pattern), gated_mlp=False,
                experts=n("n_routed_experts", 0) if moe else 0, top_k=n("num_experts_per_tok", 0),
                moe_intermediate=n("moe_intermediate_size", 0),
                shared_experts=n("n_shared_experts", 0) if moe else 0,
                shared_intermediate=n("moe_shared_expert_intermediate_size", 0),
                mamba_heads=n("mamba_num_heads", minimum=1), mamba_head_dim=n("mamba_head_dim", minimum=1),
                mamba_groups=n("n_groups", minimum=1), mamba_state=n("ssm_state_size", minimum=1),
                mamba_conv=n("conv_kernel", minimum=1),
                extra={"attention_bias": bool(c.get("attention_bias")), "mlp_bias": bool(c.get("mlp_bias")),
                       "conv_bias": bool(c.get("use_conv_bias", True)), "proj_bias": bool(c.get("mamba_proj_bias"))},
                **common,
            )
        layers = n("num_hidden_layers", minimum=1)
        experts = next((n(k) for k in ("num_local_experts", "num_experts", "n_routed_experts") if c.get(k)), 0)
        sparse = c.get("mlp_layer_types") or ["sparse" if experts else "dense"] * layers
        kinds = c.get("layer_types") or ["full_attention"] * layers
        window = n("sliding_window", 0)
        if window and not c.get("layer_types") and mt == "mistral":
            kinds = ["sliding_attention"] * layers  # every layer slides
        mixers = ["sliding" if window and k in _SLIDING else "attention" for k in kinds]
        return Arch(
            layers=tuple(Layer(m, "moe" if s == "sparse" else "dense") for m, s in zip(mixers, sparse, strict=True)),
            window=window if window and "sliding" in mixers else None,
            experts=experts, top_k=n("num_experts_per_tok", 0) or n("moe_top_k", 0),
            moe_intermediate=n("moe_intermediate_size", 0) or n("intermediate_size", 0),
            shared_experts=n("n_shared_experts", 0),
            shared_intermediate=n("shared_expert_intermediate_size", 0) or n("moe_intermediate_size", 0),
            extra={"attention_bias": bool(c.get("attention_bias")), "mlp_bias": bool(c.get("mlp_bias"))},
            **common,
        )
    except KeyError as exc:
        raise SmallbenchError(f"config of '{mt}' lacks {exc.args[0]}: cannot size it") from None
    except (TypeError, ValueError) as exc:  # a layer list that is not one, of the wrong length...
        raise SmallbenchError(f"config of '{mt}' has a layer layout that cannot be read ({exc}): cannot size it"
                              ) from None


# -- parameters ------------------------------------------------------------------------------------

#: Architectures whose arithmetic below is held equal to their Transformers implementation by the tests
#: (tests/test_sizing.py); others are counted by building them on the meta device (smallbench.models.param_count).
VERIFIED = {"llama", "qwen3", "cohere2", "mellum", "nemotron_h", "smollm3", "gemma3_text", "phi3", "minicpm"}
#: Normalisation weights per layer (× hidden) beyond the usual two (input and post-attention).
_NORMS_PER_LAYER = {"cohere2": 1, "cohere": 1, "gemma3_text": 4, "gemma2": 4}
#: Architectures with a per-head RMSNorm on queries and keys.
_QK_NORM = {"qwen3", "qwen3_moe", "gemma3_text", "olmo2", "mellum"}


@dataclass(frozen=True)
class ParamCount:
    total: int
    active: int
    embedding: int  # input embedding (+ the output head when untied)

    @property
    def is_moe(self) -> bool:
        return self.active < self.total


def _attention_params(a: Arch) -> int:
    q, kv = a.heads * a.head_dim, a.kv_heads * a.head_dim
    n = a.hidden * (q + 2 * kv) + q * a.hidden
    if a.extra.get("attention_bias"):
        n += q + 2 * kv + a.hidden
    if a.model_type in _QK_NORM:
        n += 2 * a.head_dim
    return n


def _mlp_params(a: Arch, inter: int) -> int:
    n = (3 if a.gated_mlp else 2) * a.hidden * inter
    if a.extra.get("mlp_bias"):
        n += (2 if a.gated_mlp else 1) * inter + a.hidden
    return n


def _mamba_params(a: Arch) -> int:
    inner = a.mamba_heads * a.mamba_head_dim
    conv_dim = inner + 2 * a.mamba_groups * a.mamba_state
    in_proj = a.hidden * (inner + conv_dim + a.mamba_heads) + (inner + conv_dim + a.mamba_heads) * a.extra["proj_bias"]
    conv = conv_dim * a.mamba_conv + conv_dim * a.extra["conv_bias"]
    return in_proj + conv + 3 * a.mamba_heads + inner + inner * a.hidden + a.hidden * a.extra["proj_bias"]


def _layer_params(a: Arch, layer: Layer) -> tuple[int, int]:
    """One layer's parameters: those every token uses, and its routed experts (0 for a dense layer)."""
    n = (_NORMS_PER_LAYER.get(a.model_type, 2) if a.model_type != "nemotron_h" else 1) * a.hidden
    n += {"attention": _attention_params, "sliding": _attention_params, "mamba": _mamba_params,
          "none": lambda _: 0}[layer.mixer](a)
    if layer.ffn == "dense":
        return n + _mlp_params(a, a.intermediate), 0
    if layer.ffn == "moe":  # router + shared experts; the routed ones apart
        shared = a.shared_experts * _mlp_params(a, a.shared_intermediate)
        return n + a.experts * a.hidden + shared, a.experts * _mlp_params(a, a.moe_intermediate)
    return n, 0


def layer_params(config: dict[str, Any]) -> list[int]:
    """Parameters of each layer (every expert counted), in order: what one layer costs where it is placed."""
    a = arch(config)
    return [sum(_layer_params(a, layer)) for layer in a.layers]


def count_params(config: dict[str, Any]) -> ParamCount:
    """Total and active parameters of the architecture a config.json describes."""
    a = arch(config)
    embedding = a.vocab * a.hidden * (1 if a.tied else 2)
    total = active = embedding + a.hidden  # + the final norm
    for layer in a.layers:
        n, routed = _layer_params(a, layer)
        total += n + routed
        active += n + (routed // a.experts * a.top_k if routed else 0)
    return ParamCount(total=total, active=active, embedding=embedding)


# -- memory ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class KVSize:
    """KV-cache bytes: ``per_token`` for full-attention layers (every token of the context), ``sliding_per_token``
    for sliding-window layers (at most ``window`` tokens), ``state_per_sequence`` for SSM layers."""

    per_token: int
    sliding_per_token: int
    window: int | None
    state_per_sequence: int

    def bytes(self, context: int, sequences: int = 1) -> int:
        held = self.per_token * context + self.sliding_per_token * min(context, self.window or context)
        return sequences * (held + self.state_per_sequence)


def _kv_per_layer(a: Arch, dtype: str, state_dtype: str) -> tuple[float, float]:
    """An attention layer's K and V bytes per token, and a Mamba layer's conv + SSM state bytes per sequence."""
    inner = a.mamba_heads * a.mamba_head_dim
    conv_state = (inner + 2 * a.mamba_groups * a.mamba_state) * (a.mamba_conv - 1) * DTYPE_BYTES[dtype]
    ssm_state = inner * a.mamba_state * DTYPE_BYTES[state_dtype]
    return 2 * a.kv_heads * a.head_dim * DTYPE_BYTES[dtype], conv_state + ssm_state


def kv_size(config: dict[str, Any], dtype: str = "bfloat16", state_dtype: str = "float32") -> KVSize:
    """The KV cache of one sequence (K and V in ``dtype``; Mamba conv + SSM state in ``state_dtype``)."""
    a = arch(config)
    per_layer, state = _kv_per_layer(a, dtype, state_dtype)
    return KVSize(per_token=int(a.n_attention * per_layer), sliding_per_token=int(a.n_sliding * per_layer),
                  window=a.window, state_per_sequence=int(a.n_mamba * state))


def offload_layers(config: dict[str, Any], memory: int, kind: str, context: int, overhead: int = 0,
                   kv_dtype: str = "float16") -> int:
    """llama.cpp's partial GPU offload: how many layers (its ``n_gpu_layers``) fit in ``memory`` with their KV cache
    for one sequence of ``context`` tokens, placed as llama.cpp places them: from the last layer down, the input
    embedding always on the CPU, the output head (norm + projection; a tied one is copied there) only once every
    layer is on the GPU, which counts as one layer more."""
    a = arch(config)
    per_layer, state = _kv_per_layer(a, kv_dtype, "float32")
    held = {"attention": context, "sliding": min(context, a.window or context)}
    free, placed = memory - overhead, 0
    for layer, params in zip(reversed(a.layers), reversed(layer_params(config)), strict=True):
        need = weights_bytes(params, kind) + (state if layer.mixer == "mamba" else per_layer * held.get(layer.mixer, 0))
        if need > free:
            return placed
        free, placed = free - need, placed + 1
    return placed + (weights_bytes(a.vocab * a.hidden + a.hidden, kind) <= free)


def weights_bytes(params: int, kind: str) -> int:
    """Bytes of ``params`` weights stored as ``kind`` (a float dtype or a quantized format)."""
    return math.ceil(params * bits_per_weight(kind) / 8)


@dataclass(frozen=True)
class Fit:
    memory: int
    weights: int
    kv: KVSize
    overhead: int
    context: int  # the context asked about
    max_context: int  # the model's own limit
    sequences_at_context: int  # concurrent sequences of ``context`` tokens that fit
    longest_context: int  # the longest single sequence that fits (≤ max_context)
    kv_dtype: str = "float16"

    @property
    def fits(self) -> bool:
        return self.sequences_at_context >= 1


def fit(config: dict[str, Any], memory: int, kind: str = "bfloat16", context: int | None = None,
        overhead: int = 0, kv_dtype: str | None = None, params: int | None = None) -> Fit:
    """What fits in ``memory`` bytes: weights in ``kind`` (``params`` of them, else counted from the config), a KV
    cache in ``kv_dtype`` (``kind`` if it is a float type, else float16, as llama.cpp and MLX keep it), and
    ``overhead`` bytes the runtime needs besides."""
    if context is not None and context < 1:
        raise SmallbenchError(f"context needs a positive number of tokens, got {context}")
    params = params or count_params(config).total
    weights = weights_bytes(params, kind)
    kv_dtype = kv_dtype or (kind if kind in DTYPE_BYTES else "float16")
    kv = kv_size(config, kv_dtype)
    max_ctx = int(text_config(config).get("max_position_embeddings") or 4096)
    ctx = min(context or max_ctx, max_ctx)
    free = memory - weights - overhead
    per_seq = kv.bytes(ctx)
    seqs = max(0, free // per_seq) if per_seq else (1 if free >= 0 else 0)
    longest = 0
    if free >= kv.bytes(1):  # binary search: KV bytes grow with the context (capped for sliding layers)
        lo, hi = 1, max_ctx
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if kv.bytes(mid) <= free else (lo, mid - 1)
        longest = lo
    return Fit(memory=memory, weights=weights, kv=kv, overhead=overhead, context=ctx, max_context=max_ctx,
               sequences_at_context=int(seqs), longest_context=longest, kv_dtype=kv_dtype)


def decode_bound(config: dict[str, Any], f: Fit, bandwidth: float, context: int) -> tuple[float, float]:
    """The fastest one sequence can decode at ``context`` tokens with ``f``'s weights and KV cache on a device of
    ``bandwidth`` bytes/s (tok/s), and the bytes each token reads: the roofline every decode record is a share of."""
    read = decode_bytes_per_token(config, f.weights, context, 1, f.kv_dtype)
    return bandwidth / read, read


def parse_bytes(text: str, option: str = "size", positive: bool = False) -> int:
    """``16GB``, ``24GiB``, ``512MB``, ``80G``, or a plain byte count. GB = 10⁹, GiB = 2³⁰ (as cards are sold
    in GB and the OS reports GiB, both are accepted). Never negative; zero only where ``positive`` is false."""
    units = {"": 1, "B": 1, "K": 10**3, "KB": 10**3, "KIB": 2**10, "M": 10**6, "MB": 10**6, "MIB": 2**20,
             "G": 10**9, "GB": 10**9, "GIB": 2**30, "T": 10**12, "TB": 10**12, "TIB": 2**40}
    s = text.strip().upper().replace(" ", "")
    num = s.rstrip("KMGTIB")
    try:
        size = int(float(num) * units[s[len(num):]])
    except (ValueError, KeyError, OverflowError):
        raise SmallbenchError(f"{option}: cannot read '{text}' as a size; write e.g. 16GB, 24GiB or 512MB") from None
    if size < 0 or (positive and size == 0):
        raise SmallbenchError(f"{option} needs a {'positive' if positive else 'non-negative'} size, got '{text}'")
    return size


# -- Build Small compliance ------------------------------------------------------------------------

#: The Build Small hackathon's limit: under 32B parameters in total, every expert of a MoE counted.
BUILD_SMALL_CAP = 32_000_000_000
#: How far a count from the architecture may be from the catalogue's published figure.
CATALOGUE_TOLERANCE = 0.005


@dataclass(frozen=True)
class Compliance:
    params: ParamCount
    published: int | None  # the catalogue's figure, where there is one

    @property
    def under_cap(self) -> bool:
        return self.params.total < BUILD_SMALL_CAP

    @property
    def deviation(self) -> float | None:
        return None if not self.published else (self.params.total - self.published) / self.published

    @property
    def matches_catalogue(self) -> bool:
        return self.deviation is None or abs(self.deviation) <= CATALOGUE_TOLERANCE

    @property
    def ok(self) -> bool:
        return self.under_cap and self.matches_catalogue


def compliance(config: dict[str, Any], published: int | None = None, params: ParamCount | None = None) -> Compliance:
    return Compliance(params or count_params(config), published)


# -- the decode roofline ---------------------------------------------------------------------------

#: Peak DRAM bandwidth (bytes/s) by device name, for devices that do not report it (NVML's own clock × bus
#: width comes first where present). Sources: NVIDIA data sheets and whitepapers, Apple's chip pages as
#: reported by MacRumors; see docs/metrics.md ("Roofline"). First match wins, so longer names come first.
DEVICE_BANDWIDTH: list[tuple[str, float]] = [
    ("H200", 4.8e12), ("H100 NVL", 3.9e12), ("H100 PCIe", 2.0e12), ("H100", 3.35e12),
    ("A100-SXM4-40GB", 1.555e12), ("A100-PCIE-40GB", 1.555e12), ("A100 80GB PCIe", 1.935e12), ("A100", 2.039e12),
    ("L40S", 864e9), ("L4", 300e9),
    ("RTX 3090", 936e9), ("RTX 4090", 1008e9), ("RTX 5080", 960e9), ("RTX 5090", 1792e9),
    ("M1 Ultra", 800e9), ("M1 Max", 400e9), ("M1 Pro", 200e9), ("M1", 68.25e9),
    ("M2 Ultra", 800e9), ("M2 Max", 400e9), ("M2 Pro", 200e9), ("M2", 100e9),
    ("M3 Ultra", 819e9), ("M3 Max", 400e9), ("M3 Pro", 150e9), ("M3", 100e9),
    ("M4 Max", 546e9), ("M4 Pro", 273e9), ("M4", 120e9),
]
#: Binned chips with a narrower memory bus: (name, GPU cores) → bandwidth.
_BINNED = {("M3 Max", 30): 300e9, ("M4 Max", 32): 410e9}


#: A word after a listed name that makes it another product, with another memory system (a laptop part, a Ti or
#: SUPER card): the listed figure is not its bandwidth.
_VARIANTS = {"laptop", "mobile", "max-q", "ti", "super"}


def table_bandwidth(device_name: str, gpu_cores: int | None = None) -> float | None:
    """Peak memory bandwidth of a named GPU or Apple chip from :data:`DEVICE_BANDWIDTH`; None if unlisted. A listed
    name matches as whole words ("NVIDIA L40" is not an L4, a GH200 not an H200), and not where a variant's word
    follows it (an "RTX 4090 Laptop GPU" has 576 GB/s, not the desktop card's 1,008)."""
    text = device_name.lower()
    for name, bw in DEVICE_BANDWIDTH:
        hit = re.search(rf"(?<!\w){re.escape(name.lower())}(?!\w)", text)
        if hit:
            following = text[hit.end():].split()
            return None if following and following[0] in _VARIANTS else _BINNED.get((name, gpu_cores), bw)
    return None


def bound_kind(source: str) -> str:
    """What a roofline's bandwidth is, from the source a record gives it, in a few words. Percentages of bounds of
    different kinds do not compare: a CPU's copy reads ~20 % below its read, one run's read below the machine's best
    (docs/metrics.md, "Roofline")."""
    if source.startswith("NVML"):
        return "NVML clock × bus"
    if source.startswith("table"):
        return "data sheet"
    if source.startswith("measured"):
        if "copy" in source:
            return "CPU copy, one run"
        return "CPU read, machine's best" if "on this machine" in source else "CPU read, one run"
    return source


def decode_bytes_per_token(config: dict[str, Any], weights_bytes: int, context: int, batch: int = 1,
                           kv_dtype: str = "float16") -> float:
    """Bytes a decode step reads from memory per generated token: the weights one token uses (every layer; a
    MoE's routed top-k experts only; the input embedding is one row, so it is left out unless tied to the output
    head), shared by the ``batch`` sequences of the step, plus each sequence's whole KV cache at ``context``."""
    n = count_params(config)
    a = arch(config)
    read = n.active - (0 if a.tied else a.vocab * a.hidden)
    return weights_bytes * read / n.total / batch + kv_size(config, kv_dtype).bytes(context)
