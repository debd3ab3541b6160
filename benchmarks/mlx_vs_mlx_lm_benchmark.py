"""smallbench's MLX prompt/generation tok/s vs. ``mlx_lm.benchmark`` on the same model and shapes.

The reference is ``mlx_lm.benchmark``'s own trial, called on the *same loaded model*: with batch 1
its ``single_bench`` (``stream_generate`` over a random prompt, the tokenizer's EOS ids emptied so
it never stops early; the numbers are the last response's ``prompt_tps`` and ``generation_tps``),
with a larger batch its ``batch_bench`` (``batch_generate(...).stats``). It averages its trials;
we take the median of each side's trials.

smallbench's side is its throughput suite (``generate_batch`` on the ``mlx`` backend), whose numbers
are the ones a user sees: prefill tok/s = batch × N_prompt / (first token − send), decode tok/s =
Σ (N_out − 1) / (last token − first token). Definitions differ from mlx_lm.benchmark's in one place
that matters: its ``generation_tps`` counts all G generated tokens but starts its clock at the first
one, so it divides G tokens by G − 1 intervals. The script reports the raw ratio and the ratio after
rescaling the reference by (G − 1) / G (same definition on both sides). Rounds alternate which side
runs first; each round runs one warm-up and ``--repeats`` measured trials per side. Headline: the
median over rounds of the per-round ratio smallbench / reference.

    python benchmarks/mlx_vs_mlx_lm_benchmark.py --rounds 10
    python benchmarks/mlx_vs_mlx_lm_benchmark.py --quant 4bit --rounds 10
    python benchmarks/mlx_vs_mlx_lm_benchmark.py --batch-size 4 --rounds 6
    python benchmarks/mlx_vs_mlx_lm_benchmark.py --model mlx-community/Qwen3-0.6B-4bit   # on a Mac
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics

METRICS = ("prefill_tok_s", "decode_tok_s")


def reference_trial(model, tokenizer, prompts: list[list[int]], gen_tokens: int) -> dict[str, float]:
    """One trial of mlx_lm.benchmark (single_bench or batch_bench), its own numbers."""
    from mlx_lm import batch_generate, stream_generate

    if len(prompts) == 1:
        for _response in stream_generate(model, tokenizer, prompts[0], max_tokens=gen_tokens, prefill_step_size=2048):
            pass
        return {"prefill_tok_s": _response.prompt_tps, "decode_tok_s": _response.generation_tps,
                "generated": _response.generation_tokens}
    stats = batch_generate(model, tokenizer, prompts, max_tokens=gen_tokens, prefill_step_size=2048).stats
    return {"prefill_tok_s": stats.prompt_tps, "decode_tok_s": stats.generation_tps,
            "generated": stats.generation_tokens}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny-llama", help="registered name, folder or Hub repo")
    ap.add_argument("--quant", default=None, help="float32 | float16 | 8bit | 4bit ... (mlx_lm.convert)")
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=None, help="write the raw numbers as JSON here")
    args = ap.parse_args()

    import mlx.core as mx

    from smallbench import models
    from smallbench.backends import LoadSpec, get_backend_class
    from smallbench.suites import get_suite
    from smallbench.suites.base import SuiteContext, synthetic_prompt

    resolved = models.resolve(args.model)
    backend = get_backend_class("mlx")()
    backend.import_library()
    info = backend.load(LoadSpec(model_id=args.model, source=resolved.source, quant=args.quant))
    tokenizer = backend.wrapper
    tokenizer._eos_token_ids = set()  # as mlx_lm.benchmark does: never stop early
    suite = get_suite("throughput")
    settings = suite.settings({"prompt_tokens": args.prompt_tokens, "gen_tokens": args.gen_tokens,
                               "batch_sizes": [args.batch_size], "warmup": 1, "repeats": args.repeats})
    desc = backend.describe()
    g = args.gen_tokens
    print(f"model {args.model} ({desc.flags['weights']}, {info.dtype}, {info.quant}), device {desc.device}, "
          f"mlx {desc.flags['mlx']}, mlx-lm {desc.version}, pp{args.prompt_tokens} tg{g} batch {args.batch_size}")

    rounds = []
    for r in range(args.rounds):
        got: dict[str, dict[str, float]] = {}
        for side in (("ours", "ref") if r % 2 == 0 else ("ref", "ours")):
            if side == "ours":
                res = suite.run(backend, settings, SuiteContext(load=None, model_info=info))
                got["ours"] = {m.name: m.value for m in res.metrics if m.name in METRICS}
            else:
                trials = []
                for i in range(1 + args.repeats):  # the first is warm-up, as in mlx_lm.benchmark
                    prompts = [synthetic_prompt(backend, args.prompt_tokens, 10_000 + 100 * r + 10 * i + j)
                               for j in range(args.batch_size)]
                    trial = reference_trial(backend.model, tokenizer, prompts, g)
                    if i:
                        trials.append(trial)
                assert all(t["generated"] == g * (1 if args.batch_size == 1 else args.batch_size) for t in trials)
                got["ref"] = {m: statistics.median(t[m] for t in trials) for m in METRICS}
        rounds.append(got)
        line = [f"round {r + 1:2d}:"]
        for m in METRICS:
            o, f = got["ours"][m], got["ref"][m]
            line.append(f"{m} ours {o:9.1f} ref {f:9.1f} ratio {o / f:.4f}")
        print("  ".join(line))

    # mlx_lm's generation_tps: G tokens over G − 1 intervals at batch 1 (batch: its own decode timer)
    rescale = {"prefill_tok_s": 1.0, "decode_tok_s": (g - 1) / g if args.batch_size == 1 else 1.0}
    summary = {}
    for m in METRICS:
        ours = [x["ours"][m] for x in rounds]
        ref = [x["ref"][m] for x in rounds]
        raw = [o / f for o, f in zip(ours, ref, strict=True)]
        same = [o / (f * rescale[m]) for o, f in zip(ours, ref, strict=True)]
        summary[m] = {"ours_median": statistics.median(ours), "ref_median": statistics.median(ref),
                      "raw_ratio": statistics.median(raw), "same_definition_ratio": statistics.median(same),
                      "same_definition_ratio_range": [min(same), max(same)]}
        s = summary[m]
        print(f"{m}: ours {s['ours_median']:.1f}  mlx_lm.benchmark {s['ref_median']:.1f}  raw ratio "
              f"{s['raw_ratio']:.4f}  same-definition ratio {s['same_definition_ratio']:.4f} "
              f"(rounds {min(same):.3f}–{max(same):.3f})")
    backend.close()
    mx.synchronize()
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "machine": platform.processor() or platform.machine(),
                       "backend": desc.model_dump(), "rounds": rounds, "summary": summary}, f, indent=2)


if __name__ == "__main__":
    main()
