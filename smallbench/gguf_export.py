"""The built-in ``tiny-llama`` as GGUF files, for llama.cpp, built offline.

Why not llama.cpp's ``convert_hf_to_gguf.py``: it recognises a BPE pre-tokenizer by hashing its
output on a fixed text and refuses any it does not know, which includes every locally trained
tokenizer. Our model is a plain Llama with a GPT-2-style byte-level BPE, so writing it directly
with the ``gguf`` package (llama.cpp's own writer library) takes one short function:

- F32: every tensor as stored, under the GGUF names ``gguf.get_tensor_name_map`` gives, with the
  Q and K projections row-permuted (Hugging Face rotates halves; GGUF llama rotates pairs);
- any other type (F16, Q8_0, Q4_K_M, ...): llama.cpp's own quantizer
  (``llama_model_quantize``) run on the F32 file, so quantization is exactly what users get from
  ``llama-quantize``.

This exporter handles the built-in model only: another folder's tokenizer may need a
pre-tokenizer other than GPT-2's, which is what the converter's hash check protects against.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock

from smallbench.apart import run_apart
from smallbench.errors import SmallbenchError
from smallbench.paths import cache_dir


def file_types() -> dict[str, int]:
    """GGUF file type name (``F32``, ``Q8_0``, ``Q4_K_M``, ...) → llama.cpp ``llama_ftype`` value."""
    import llama_cpp

    out = {}
    for attr, value in vars(llama_cpp).items():
        if attr.startswith(("LLAMA_FTYPE_MOSTLY_", "LLAMA_FTYPE_ALL_")) and isinstance(value, int):
            out[attr.split("_", 3)[3]] = value
    return out


def ensure_gguf(hf_dir: Path, weights_sha256: str, quant: str) -> Path:
    """The cached GGUF of the built-in model in ``quant``, written first if missing."""
    return cached_gguf(weights_sha256[:16], hf_dir.name, quant, "F32", lambda tmp: write_f32(hf_dir, tmp))


def cached_gguf(key: str, stem: str, quant: str, base_type: str, write_base: Callable[[Path], None]) -> Path:
    """``<cache>/gguf/<key>/<stem>-<QUANT>.gguf``, made once: ``write_base`` writes the ``base_type`` file
    (F32/F16/BF16), which llama.cpp's own quantizer turns into any other type. Safe across processes."""
    types = file_types()
    name = quant.upper()
    if name not in types:
        raise SmallbenchError(f"unknown GGUF type '{quant}'; choose from: {', '.join(types)}")
    folder = cache_dir() / "gguf" / key
    path = folder / f"{stem}-{name}.gguf"
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder / ".lock")):
        if path.exists():
            return path
        base = folder / f"{stem}-{base_type}.gguf"
        if not base.exists():
            _atomic(base, write_base)
        if name != base_type:
            _atomic(path, lambda tmp: run_apart("smallbench.gguf_export:quantize", f"quantizing {base.name} to {name}",
                                                src=str(base), dst=str(tmp), ftype=types[name]))
    return path


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _permute(w, n_head: int):
    """Hugging Face's half-split rotary layout → GGUF llama's interleaved one (llama.cpp's convert)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_f32(hf_dir: Path, out: Path) -> None:
    """Write a Llama Hugging Face folder with a byte-level BPE tokenizer as an F32 GGUF."""
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    cfg = json.loads((hf_dir / "config.json").read_text())
    if cfg.get("model_type") != "llama":
        raise SmallbenchError(f"the GGUF exporter handles Llama models only, not '{cfg.get('model_type')}'")
    n_layer, n_head = cfg["num_hidden_layers"], cfg["num_attention_heads"]
    n_kv = cfg.get("num_key_value_heads", n_head)
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // n_head
    tensors = load_file(str(hf_dir / "model.safetensors"))
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layer)

    w = gguf.GGUFWriter(str(out), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    w.add_name(hf_dir.name)
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(n_layer)
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(cfg.get("rope_theta", 10000.0))
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_vocab_size(cfg["vocab_size"])
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    _add_tokenizer(w, hf_dir, cfg["vocab_size"])
    for hf_name, value in tensors.items():
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise SmallbenchError(f"no GGUF name for tensor '{hf_name}'")
        value = value.astype(np.float32)
        if hf_name.endswith("q_proj.weight"):
            value = _permute(value, n_head)
        elif hf_name.endswith("k_proj.weight"):
            value = _permute(value, n_kv)
        w.add_tensor(gguf_name, value)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _add_tokenizer(w, hf_dir: Path, n_vocab: int) -> None:
    """GPT-2 style BPE: tokens by id, special ones marked CONTROL, merges and special ids from the
    folder's tokenizer files (read by ``gguf.SpecialVocab``, as llama.cpp's converter does)."""
    import gguf

    tok = json.loads((hf_dir / "tokenizer.json").read_text())
    model = tok["model"]
    if model.get("type") != "BPE" or tok.get("decoder", {}).get("type") != "ByteLevel":
        raise SmallbenchError("the GGUF exporter handles byte-level BPE tokenizers only")
    by_id = {i: t for t, i in model["vocab"].items()}
    special = set()
    for added in tok.get("added_tokens", []):
        by_id[added["id"]] = added["content"]
        if added.get("special"):
            special.add(added["id"])
    if sorted(by_id) != list(range(len(by_id))) or len(by_id) > n_vocab:
        raise SmallbenchError("tokenizer ids are not contiguous from 0 or exceed the model's vocabulary")
    tokens = [by_id.get(i, f"[PAD{i}]") for i in range(n_vocab)]
    types = [gguf.TokenType.CONTROL if i in special else gguf.TokenType.UNUSED if i not in by_id
             else gguf.TokenType.NORMAL for i in range(n_vocab)]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")  # the GPT-2 split regex, which ByteLevel(use_regex=True) uses
    w.add_token_list(tokens)
    w.add_token_types(types)
    vocab_log = logging.getLogger("gguf.vocab")  # warns about the BPE pair template, which GGUF does not use
    level, vocab_log.level = vocab_log.level, logging.ERROR
    try:
        gguf.SpecialVocab(hf_dir, load_merges=True, n_vocab=n_vocab).add_to_gguf(w, quiet=True)
    finally:
        vocab_log.setLevel(level)


def quantize(src: str | Path, dst: str | Path, ftype: int, threads: int = 0) -> None:
    """llama.cpp's own quantizer (what ``llama-quantize`` runs). A cell runs it apart (smallbench.apart)."""
    import llama_cpp

    src, dst = Path(src), Path(dst)

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads
    if llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params)) != 0:
        raise SmallbenchError(f"llama.cpp could not quantize {src.name} (see the log)")
