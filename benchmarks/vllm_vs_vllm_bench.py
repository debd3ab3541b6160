"""smallbench's vLLM numbers vs. vLLM's own benchmark code, on the same engine / server and prompts.

1. Offline throughput. One ``vllm.LLM`` (smallbench's ``vllm`` backend, as loaded for a run) serves
   both sides. smallbench: the throughput suite's ``generate_batch`` (its own ``step()`` loop,
   a timestamp per token), output tok/s = Σ N_out / (last token − send). vLLM: ``vllm bench
   throughput``'s own ``_run_vllm_requests`` (``LLM.generate`` over the same token-id prompts,
   ``--disable-detokenize`` since smallbench does not detokenize either), output tok/s = Σ output
   tokens / elapsed. vLLM's benchmark samples at temperature 1.0, smallbench decodes greedily; with
   ``ignore_eos`` both produce exactly the same number of tokens.
2. Server latency. One API server (smallbench's ``vllm-server`` backend). smallbench: its client
   (``stream`` / ``stream_concurrent``). vLLM: ``vllm bench serve``'s request function
   ``async_request_openai_completions`` with its own aiohttp session, the same token-id prompts,
   ``ignore_eos`` and temperature 0. Compared: median TTFT and TPOT of sequential requests, and output
   tok/s with ``--concurrency`` requests in flight.

Rounds alternate which side goes first; each round has a warm-up. Headline: medians over rounds.

    python benchmarks/vllm_vs_vllm_bench.py --rounds 8
    python benchmarks/vllm_vs_vllm_bench.py --model Qwen/Qwen3-0.6B --dtype bfloat16 --batch 64   # on a GPU
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import time

import numpy as np


def their_offline(llm, prompts: list[list[int]], gen: int) -> float:
    from vllm.benchmarks.datasets import SampleRequest
    from vllm.benchmarks.throughput import _run_vllm_requests

    reqs = [SampleRequest(prompt={"prompt_token_ids": p}, prompt_len=len(p), expected_output_len=gen) for p in prompts]
    elapsed, outs = _run_vllm_requests(llm, reqs, n=1, disable_detokenize=True, do_profile=False,
                                       prequeue_requests=False, enable_lora=False)
    return sum(len(o.outputs[0].token_ids) for o in outs) / elapsed


def our_offline(backend, prompts: list[list[int]], gen: int) -> float:
    from smallbench import metrics as M

    return M.batch_output_tps(backend.generate_batch(prompts, gen, ignore_eos=True))


async def _their_requests(url: str, prompts: list[list[int]], gen: int, concurrency: int):
    import aiohttp
    from vllm.benchmarks.lib.endpoint_request_func import RequestFuncInput, async_request_openai_completions

    slots = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=6 * 3600)) as session:

        async def one(p):
            async with slots:
                inp = RequestFuncInput(prompt=p, api_url=url + "/v1/completions", prompt_len=len(p),
                                       output_len=gen, model="smallbench", ignore_eos=True,
                                       extra_body={"temperature": 0.0})
                return await async_request_openai_completions(inp, session)

        start = time.perf_counter()
        outs = await asyncio.gather(*(one(p) for p in prompts))
        elapsed = time.perf_counter() - start
    if not all(o.success for o in outs):
        raise RuntimeError(next(o.error for o in outs if not o.success))
    return outs, elapsed


def their_serving(url, prompts, gen, concurrency) -> dict[str, float]:
    """vLLM's own per-request numbers: ttft, and tpot = (latency − ttft) / (output_tokens − 1)."""
    seq, _ = asyncio.run(_their_requests(url, prompts, gen, 1))
    par, elapsed = asyncio.run(_their_requests(url, prompts, gen, concurrency))
    return {
        "ttft_ms": 1e3 * statistics.median(o.ttft for o in seq),
        "tpot_ms": 1e3 * statistics.median((o.latency - o.ttft) / (o.output_tokens - 1) for o in seq),
        "output_tok_s": sum(o.output_tokens for o in par) / elapsed,
    }


def our_serving(backend, prompts, gen, concurrency) -> dict[str, float]:
    from smallbench import metrics as M

    seq = [backend.client.stream([p], gen, 1, ignore_eos=True, return_token_ids=True)[0] for p in prompts]
    par = backend.stream_concurrent(prompts, gen, concurrency)
    return {
        "ttft_ms": 1e3 * statistics.median(M.ttft(t) for t in seq),
        "tpot_ms": 1e3 * statistics.median(M.tpot(t) for t in seq),
        "output_tok_s": M.output_throughput(par),
    }


def _alternate(rounds: int, ours, theirs, make_prompts):
    rows = []
    for r in range(rounds):
        prompts = make_prompts(r)
        order = [("ours", ours), ("theirs", theirs)]
        if r % 2:
            order.reverse()
        got = {}
        for name, fn in order:
            fn(make_prompts(10_000 + r))  # warm-up, excluded
            got[name] = fn(prompts)
        rows.append(got)
        print(json.dumps({"round": r, **got}), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny-llama")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--batch", type=int, default=16, help="offline: prompts per generate call")
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--gen-tokens", type=int, default=64)
    ap.add_argument("--requests", type=int, default=8, help="server: requests per side per round")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--skip", choices=["offline", "server"], default=None)
    ap.add_argument("--out", default=None, help="write the raw rounds and the summary as JSON")
    args = ap.parse_args()

    from smallbench import models
    from smallbench.backends import LoadSpec, get_backend_class

    m = models.resolve(args.model)
    spec = LoadSpec(model_id=m.id, source=m.source or m.id, revision=m.revision, dtype=args.dtype)
    report: dict = {"model": m.id, "machine": platform.processor() or platform.machine(), "args": vars(args)}

    def prompts_for(backend, n):
        special = backend.special_token_ids
        vocab = np.array([i for i in range(backend.vocab_size) if i not in special])
        return lambda seed: np.random.default_rng(seed).choice(vocab, (n, args.prompt_tokens)).tolist()

    if args.skip != "offline":
        b = get_backend_class("vllm")()
        b.import_library()
        b.load(spec)
        try:
            rows = _alternate(args.rounds, lambda p: our_offline(b, p, args.gen_tokens),
                              lambda p: their_offline(b.llm, p, args.gen_tokens),
                              prompts_for(b, args.batch))
            ratios = [r["ours"] / r["theirs"] for r in rows]
            report["offline"] = {"rounds": rows, "ours_median_tok_s": statistics.median(r["ours"] for r in rows),
                                 "theirs_median_tok_s": statistics.median(r["theirs"] for r in rows),
                                 "ratio_median": statistics.median(ratios), "ratio_min": min(ratios)}
            report["vllm"] = b.describe().model_dump()
        finally:
            b.close()

    if args.skip != "server":
        s = get_backend_class("vllm-server")()
        s.import_library()
        s.load(spec)
        try:
            rows = _alternate(args.rounds, lambda p: our_serving(s, p, args.gen_tokens, args.concurrency),
                              lambda p: their_serving(s.server.url, p, args.gen_tokens, args.concurrency),
                              prompts_for(s, args.requests))
            report["server"] = {
                "rounds": rows,
                "ttft_diff_ms_median": statistics.median(r["ours"]["ttft_ms"] - r["theirs"]["ttft_ms"] for r in rows),
                "tpot_ratio_median": statistics.median(r["ours"]["tpot_ms"] / r["theirs"]["tpot_ms"] for r in rows),
                "output_tok_s_ratio_median": statistics.median(
                    r["ours"]["output_tok_s"] / r["theirs"]["output_tok_s"] for r in rows),
                "ours_ttft_ms_median": statistics.median(r["ours"]["ttft_ms"] for r in rows),
                "theirs_ttft_ms_median": statistics.median(r["theirs"]["ttft_ms"] for r in rows),
            }
        finally:
            s.close()

    summary = {k: {kk: vv for kk, vv in v.items() if kk != "rounds"} for k, v in report.items()
               if k in ("offline", "server")}
    print(json.dumps(summary, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2, default=str)


if __name__ == "__main__":
    main()
