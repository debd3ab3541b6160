"""Models with random weights built from a config alone (``--dummy``): speed and memory of a real architecture
with nothing downloaded.

A dummy model folder holds the architecture's ``config.json`` and the built-in model's tokenizer (a byte-level
BPE of 2,048 tokens; the model's own vocabulary size is kept, so its embedding and output head have their real
size). Backends that can build random weights themselves (Transformers ``from_config``, vLLM
``load_format="dummy"``, MLX's model classes) load the folder as it is; llama.cpp needs a file, so
:func:`checkpoint` writes random safetensors once for llama.cpp's converter. Dummy records carry no accuracy.

:func:`scale_down` shrinks a config to a few layers of small width while keeping every kind of layer it has
(attention, sliding window, Mamba, MLP, experts): the tests run each sponsor architecture through every
backend that way, on the same code path as the full-size model.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from filelock import FileLock

from smallbench.errors import SmallbenchError
from smallbench.paths import cache_dir

#: The built-in tokenizer's files, copied into every dummy folder.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
MARKER = "smallbench-dummy.json"


def _tokenizer_dir() -> Path:
    from smallbench import tiny_model

    return tiny_model.model_dir()


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def model_folder(name: str, config: dict[str, Any]) -> Path:
    """The cached dummy folder of ``config`` (written on first use): config.json + the built-in tokenizer."""
    from smallbench import tiny_model

    config = {**config, "bos_token_id": tiny_model.MODEL_CONFIG["bos_token_id"],
              "eos_token_id": tiny_model.MODEL_CONFIG["eos_token_id"], "pad_token_id": None}
    vocab = config.get("vocab_size") or 0
    if vocab < tiny_model.VOCAB_SIZE:
        raise SmallbenchError(f"a dummy model needs a vocabulary of at least {tiny_model.VOCAB_SIZE} tokens "
                              f"(the built-in tokenizer's), '{name}' has {vocab}")
    folder = cache_dir() / "dummy" / f"{name}-{_digest(config)}"
    if (folder / MARKER).exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if not (folder / MARKER).exists():
            for f in TOKENIZER_FILES:
                shutil.copyfile(_tokenizer_dir() / f, folder / f)
            (folder / "config.json").write_text(json.dumps(config, indent=1, sort_keys=True) + "\n")
            (folder / MARKER).write_text(json.dumps({"name": name, "tokenizer": tiny_model.NAME}) + "\n")
    return folder


def is_dummy(folder: str | Path) -> bool:
    return (Path(folder) / MARKER).is_file()


def config_folder(source: str, revision: str | None = None) -> Path:
    """A local folder holding ``source``'s config.json and tokenizer: the folder itself, or those files of a Hub
    repo (downloaded, or from the cache offline), without its weights."""
    local = Path(source).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise SmallbenchError(f"--dummy needs a config.json in '{source}'")
        return local
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(source, revision=revision, allow_patterns=["*.json", "tokenizer*", "*.model"]))
    except Exception as exc:
        raise SmallbenchError(f"--dummy: cannot fetch the config of '{source}' (offline and not cached?): "
                              f"{type(exc).__name__}") from None


def checkpoint(folder: Path, dtype: str = "bfloat16", seed: int = 0) -> Path:
    """A copy of the dummy ``folder`` with random weights in safetensors (Transformers' own initialisation,
    seeded), written once into the cache, in a process of its own (smallbench.apart): what llama.cpp's converter
    reads."""
    from smallbench.apart import run_apart

    out = folder.with_name(f"{folder.name}-weights-{dtype}")
    if (out / "model.safetensors.index.json").exists() or (out / "model.safetensors").exists():
        return out
    with FileLock(str(out) + ".lock"):
        if (out / "model.safetensors.index.json").exists() or (out / "model.safetensors").exists():
            return out
        run_apart("smallbench.dummy:write_checkpoint", f"writing random {dtype} weights for {folder.name}",
                  folder=str(folder), out=str(out), dtype=dtype, seed=seed)
    return out


def write_checkpoint(folder: str, out: str, dtype: str, seed: int) -> None:
    """:func:`checkpoint`'s work: build the model from its config at random and save it."""
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM
    except ImportError:
        raise SmallbenchError("random weights for a converted checkpoint are written with transformers: "
                              "pip install 'smallbench[transformers]'") from None
    src, dst = Path(folder), Path(out)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    torch.manual_seed(seed)
    config = AutoConfig.from_pretrained(src)
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model.save_pretrained(tmp, max_shard_size="4GB")
    del model
    for f in (*TOKENIZER_FILES, "config.json", MARKER):
        shutil.copyfile(src / f, tmp / f)
    shutil.rmtree(dst, ignore_errors=True)
    os.replace(tmp, dst)


# -- scaled-down architectures ------------------------------------------------------------------------------

#: Widths of a scaled-down model: small enough for a test, wide enough for every engine's kernels (vLLM's CPU
#: attention needs a head dim of 32, 64, 80...).
SMALL = dict(hidden_size=128, num_attention_heads=4, num_key_value_heads=2, head_dim=32, intermediate_size=256,
             vocab_size=2048, max_position_embeddings=2048)
#: ... and of its Mamba-2 blocks (Nemotron-H)
SMALL_MAMBA = dict(mamba_num_heads=4, mamba_head_dim=32, n_groups=2, ssm_state_size=16, chunk_size=64)


def scale_down(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with small dimensions and few layers, keeping its model type, its kinds of layers (in their
    first order of appearance), GQA, sliding windows, Mamba blocks and experts."""
    c = copy.deepcopy({k: v for k, v in config.items() if k not in ("auto_map",)})  # never the catalogue's own
    for key, value in SMALL.items():
        if key in c or key in ("head_dim", "num_key_value_heads"):
            c[key] = value
    if not config.get("head_dim"):  # the architecture derives it from hidden / heads: keep it derived
        c.pop("head_dim")
        c["hidden_size"] = SMALL["head_dim"] * SMALL["num_attention_heads"]
    if config.get("num_key_value_heads") == 1:
        c["num_key_value_heads"] = 1  # multi-query stays multi-query
    if config.get("query_pre_attn_scalar") and config["query_pre_attn_scalar"] == config.get("head_dim"):
        c["query_pre_attn_scalar"] = c["head_dim"]  # Gemma: attention scaled by the head dim, scaled or not
    if "hybrid_override_pattern" in c:  # Nemotron-H: one block of each kind, Mamba first
        pattern = "".join(dict.fromkeys(config["hybrid_override_pattern"]))
        c.update(hybrid_override_pattern=pattern, num_hidden_layers=len(pattern), **SMALL_MAMBA)
    elif isinstance(config.get("layers_block_type"), list):  # the same, as transformers 5 writes it: block names
        names = list(dict.fromkeys(config["layers_block_type"]))
        c.update(layers_block_type=names, num_hidden_layers=len(names), **SMALL_MAMBA)
    elif "num_hidden_layers" in c:
        types = config.get("layer_types")
        # up to and including the first layer of the last kind to appear (e.g. 3 sliding + 1 full)
        n = max(types.index(t) for t in set(types)) + 1 if types else 2
        nope = config.get("no_rope_layers")  # SmolLM3: 0 marks a layer without RoPE
        if nope and 0 in nope:
            n = max(n, nope.index(0) + 1)
        c["num_hidden_layers"] = max(n, 2)
        for key in ("layer_types", "mlp_layer_types", "no_rope_layers"):
            if config.get(key):
                c[key] = config[key][: c["num_hidden_layers"]]
    if c.get("sliding_window") and c["sliding_window"] < config.get("max_position_embeddings", float("inf")):
        c["sliding_window"] = 64  # a window wider than the context (Phi-4-mini's) stays inert
    c.update(bos_token_id=0, eos_token_id=1, pad_token_id=None)  # the built-in tokenizer's, inside the vocabulary
    for key in ("num_local_experts", "num_experts", "n_routed_experts"):
        if c.get(key):
            c[key] = 8
    if c.get("num_experts_per_tok"):
        c["num_experts_per_tok"] = 2
    for key in ("moe_intermediate_size", "moe_shared_expert_intermediate_size", "shared_expert_intermediate_size"):
        if c.get(key):
            c[key] = 64
    _scale_rope_factors(c)
    return c


def _scale_rope_factors(c: dict[str, Any]) -> None:
    """LongRoPE's per-frequency factors (Phi) come one per rotary pair: resample them, evenly across the list,
    to the scaled head's number of pairs."""
    head_dim = c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]
    for key in ("rope_scaling", "rope_parameters"):
        rope = c.get(key)
        if not isinstance(rope, dict):
            continue
        rotary = rope.get("partial_rotary_factor", c.get("partial_rotary_factor", 1.0))
        pairs = int(head_dim * rotary) // 2
        for name in ("long_factor", "short_factor"):
            factors = rope.get(name)
            if isinstance(factors, list) and len(factors) > pairs > 1:
                step = (len(factors) - 1) / (pairs - 1)
                rope[name] = [factors[round(i * step)] for i in range(pairs)]
