"""smallbench's llama.cpp prefill/decode tok/s vs. a llama-bench-style loop on the same weights.

The reference is written directly on llama-cpp-python's low-level API the way llama-bench's
``test_prompt`` / ``test_gen`` are: clear the KV cache, decode the prompt in ``n_batch`` chunks
(pp), then decode one token per ``llama_decode`` + ``llama_synchronize`` (tg), feeding tokens
without reading or sampling logits. It runs on the *same loaded model* as smallbench, in its own
context with the same n_ctx / n_batch / n_ubatch / threads / flash-attention setting.

smallbench's side is its throughput suite at batch 1 (``generate_batch``), whose numbers are the ones
a user sees: prefill tok/s = N_prompt / (first token − send), decode tok/s = (N_out − 1) /
(last token − first token) with greedy argmax and a timestamp per token. The reference decodes
the same N_out − 1 tokens after the same prompt length, so both decode at the same KV depth.
Rounds alternate which side runs first; each round runs ``--repeats`` measured trials per side
after one warm-up. Headline: the median over rounds of the per-round ratio smallbench / reference.

    python benchmarks/llama_cpp_vs_llama_bench.py --rounds 10
    python benchmarks/llama_cpp_vs_llama_bench.py --random-llama 1024,12 --quant Q8_0 --rounds 6   # a 137M model
    python benchmarks/llama_cpp_vs_llama_bench.py --model path/to/model.gguf --prompt-tokens 512 --gen-tokens 128
"""

from __future__ import annotations

import argparse
import ctypes
import json
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def reference(ll, ctx, prompt: list[int], n_gen: int, n_batch: int) -> tuple[float, float]:
    """(pp tok/s, tg tok/s) measured llama-bench style."""
    ll.llama_memory_clear(ll.llama_get_memory(ctx), True)
    ids = np.asarray(prompt, dtype=np.int32)
    t0 = time.perf_counter()
    for a in range(0, len(ids), n_batch):
        chunk = ids[a : a + n_batch]
        if ll.llama_decode(ctx, ll.llama_batch_get_one(chunk.ctypes.data_as(ctypes.POINTER(ll.llama_token)),
                                                       len(chunk))):
            raise RuntimeError("prompt decode failed")
    ll.llama_synchronize(ctx)
    t1 = time.perf_counter()
    tok = (ll.llama_token * 1)(prompt[-1])
    batch = ll.llama_batch_get_one(tok, 1)
    rng = np.random.default_rng(0)
    feed = rng.integers(3, 2000, n_gen).tolist()
    t2 = time.perf_counter()
    for t in feed:
        tok[0] = t
        if ll.llama_decode(ctx, batch):
            raise RuntimeError("decode failed")
        ll.llama_synchronize(ctx)
    t3 = time.perf_counter()
    return len(prompt) / (t1 - t0), n_gen / (t3 - t2)


def random_llama(hidden: int, layers: int, quant: str, folder: Path) -> Path:
    """A random-weight Llama of the given width/depth with tiny-llama's tokenizer, as a GGUF file
    (written by smallbench's exporter, quantized by llama.cpp): per-token costs of a bigger model."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from smallbench import gguf_export, tiny_model

    tiny = tiny_model.model_dir()
    cfg = {**tiny_model.MODEL_CONFIG, "hidden_size": hidden, "num_hidden_layers": layers,
           "intermediate_size": hidden * 11 // 4, "num_attention_heads": hidden // 64,
           "num_key_value_heads": max(1, hidden // 256)}
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**cfg)).save_pretrained(folder)
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tiny / f).exists():
            shutil.copy(tiny / f, folder / f)
    f32 = folder / "random-F32.gguf"
    gguf_export.write_f32(folder, f32)
    if quant.upper() == "F32":
        return f32
    out = folder / f"random-{quant.upper()}.gguf"
    gguf_export.quantize(f32, out, gguf_export.file_types()[quant.upper()])
    f32.unlink()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny-llama", help="registered name, .gguf path, folder or Hub repo")
    ap.add_argument("--quant", default=None)
    ap.add_argument("--random-llama", default=None, metavar="HIDDEN,LAYERS",
                    help="benchmark a random-weight Llama of this size instead of --model")
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--gen-tokens", type=int, default=128, help="tokens per request (N_out); tg runs N_out − 1")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=None, help="write the raw numbers as JSON here")
    args = ap.parse_args()

    from smallbench import models
    from smallbench.backends import LoadSpec, get_backend_class
    from smallbench.suites import get_suite
    from smallbench.suites.base import SuiteContext, synthetic_prompt

    if args.random_llama:
        hidden, layers = (int(x) for x in args.random_llama.split(","))
        args.model = str(random_llama(hidden, layers, args.quant or "F32", Path(tempfile.mkdtemp(prefix="sb-llama-"))))
    resolved = models.resolve(args.model)
    backend = get_backend_class("llama-cpp")()
    backend.import_library()
    opts = {"threads": args.threads} if args.threads else {}
    info = backend.load(LoadSpec(model_id=args.model, source=resolved.source, quant=args.quant, options=opts))
    ll = backend._ll
    ref_ctx = backend._new_context(backend.n_ctx, 1)  # same parameters as the backend's own context
    suite = get_suite("throughput")
    settings = suite.settings({"prompt_tokens": args.prompt_tokens, "gen_tokens": args.gen_tokens,
                               "batch_sizes": [1], "warmup": 1, "repeats": args.repeats})
    desc = backend.describe()
    shape = f"pp{args.prompt_tokens} tg{args.gen_tokens - 1}"
    print(f"model {args.model} ({desc.flags['gguf_file']}, {info.dtype}), threads {backend.threads}, "
          f"n_ctx {backend.n_ctx}, n_batch {backend.n_batch}, {shape}")

    rounds = []
    for r in range(args.rounds):
        got: dict[str, dict[str, float]] = {}
        for side in (("ours", "ref") if r % 2 == 0 else ("ref", "ours")):
            if side == "ours":
                res = suite.run(backend, settings, SuiteContext(load=None, model_info=info))
                got["ours"] = {m.name: m.value for m in res.metrics}
            else:
                pp, tg = [], []
                for i in range(1 + args.repeats):
                    prompt = synthetic_prompt(backend, args.prompt_tokens, 10_000 + 100 * r + i)
                    p, t = reference(ll, ref_ctx, prompt, args.gen_tokens - 1, backend.n_batch)
                    if i:  # the first is warm-up
                        pp.append(p)
                        tg.append(t)
                got["ref"] = {"prefill_tok_s": statistics.median(pp), "decode_tok_s": statistics.median(tg)}
        rounds.append(got)
        line = [f"round {r + 1:2d}:"]
        for m in ("decode_tok_s", "prefill_tok_s"):
            o, f = got["ours"][m], got["ref"][m]
            line.append(f"{m} ours {o:9.1f} ref {f:9.1f} ratio {o / f:.4f}")
        print("  ".join(line))

    summary = {}
    for metric in ("decode_tok_s", "prefill_tok_s"):
        ours = [g["ours"][metric] for g in rounds]
        ref = [g["ref"][metric] for g in rounds]
        summary[metric] = {
            "ours_median": statistics.median(ours), "ref_median": statistics.median(ref),
            "paired_median_ratio": statistics.median(o / f for o, f in zip(ours, ref, strict=True)),
        }
        s = summary[metric]
        print(f"{metric}: ours {s['ours_median']:.1f}  ref {s['ref_median']:.1f}  "
              f"median per-round ratio {s['paired_median_ratio']:.4f}")
    ll.llama_free(ref_ctx)
    backend.close()
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "machine": platform.processor() or platform.machine(),
                       "backend": desc.model_dump(), "rounds": rounds, "summary": summary}, f, indent=2)


if __name__ == "__main__":
    main()
