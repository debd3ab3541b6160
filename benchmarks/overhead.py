"""How much does smallbench's Transformers adapter cost? Same model, same greedy decode, timed
through ``TransformersBackend.stream`` and through a plain ``model.generate`` call, alternated.

    python benchmarks/overhead.py [--model tiny-llama] [--prompt-tokens 128] [--gen-tokens 128] [--rounds 20]

Prints per-approach median wall time and tok/s, and ratio = smallbench tok/s ÷ plain tok/s
(1.0 = no overhead). The headline is the median over rounds of the paired ratio (both runs of
a round sit side by side in time, so slow drift of the machine cancels); the ratio of medians and
of the best rounds are printed too. Both approaches drive the very same model object and inputs; the only
difference is smallbench's timestamping streamer.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from smallbench import models
from smallbench.backends import LoadSpec, get_backend_class
from smallbench.hardware import hardware_info
from smallbench.suites.base import synthetic_prompt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny-llama")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()

    m = models.resolve(args.model)
    backend = get_backend_class("transformers")()
    backend.load(LoadSpec(model_id=args.model, source=m.source, device=args.device))
    model, n = backend.model, args.gen_tokens
    prompt = synthetic_prompt(backend, args.prompt_tokens, seed=0)
    ids = torch.tensor([prompt], device=backend.device)

    def plain() -> list[int]:
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                                 min_new_tokens=n, do_sample=False, num_beams=1)
        return out[0, len(prompt) :].tolist()

    def ours() -> list[int]:
        return backend.stream(prompt, n).token_ids

    assert plain() == ours(), "the two paths generated different tokens"
    timings: dict[str, list[float]] = {"plain": [], "smallbench": []}
    fns = {"plain": plain, "smallbench": ours}
    for r in range(args.warmup + args.rounds):
        order = ["plain", "smallbench"] if r % 2 == 0 else ["smallbench", "plain"]
        for name in order:
            if backend.device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fns[name]()
            dt = time.perf_counter() - t0
            if r >= args.warmup:
                timings[name].append(dt)

    med = {k: statistics.median(v) for k, v in timings.items()}
    hw = hardware_info()
    print(f"model={args.model} device={backend.device} dtype={backend.dtype} threads={torch.get_num_threads()} "
          f"prompt={args.prompt_tokens} gen={n} rounds={args.rounds} (alternated, {args.warmup} warm-up)")
    print(f"machine: {hw.accelerator}, {hw.cpu_threads} threads, {hw.ram_bytes / 2**30:.0f} GiB; "
          f"python {platform.python_version()}, torch {torch.__version__}")
    for k in ("plain", "smallbench"):
        v = timings[k]
        print(f"{k:>10}: median {med[k] * 1e3:8.2f} ms  ({n / med[k]:8.1f} tok/s)  "
              f"min {min(v) * 1e3:8.2f} ms  max {max(v) * 1e3:8.2f} ms")
    paired = statistics.median(p / s for p, s in zip(timings["plain"], timings["smallbench"], strict=True))
    print(f"ratio (smallbench tok/s / plain tok/s): paired-median {paired:.4f}, "
          f"of medians {med['plain'] / med['smallbench']:.4f}, "
          f"best-of-rounds {min(timings['plain']) / min(timings['smallbench']):.4f}")


if __name__ == "__main__":
    main()
