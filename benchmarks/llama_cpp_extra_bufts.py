"""llama.cpp with and without its extra weight buffer types (``--extra-bufts on`` vs ``off``), side by side.

llama.cpp's CPU backend can place weights in "extra" buffer types: AMX tiles on Intel CPUs that have
AMX, and repacked (interleaved) layouts for Q4_0 / IQ4_NL / Q4_K / Q8_0 where it has kernels for them
(llama.cpp's ``--no-repack`` turns them off). smallbench's ``auto`` keeps them except on AMX builds,
whose AMX matrix multiply segfaults (ggml-org/llama.cpp#20824). This script measures what the
setting is worth where it works: the same GGUF file loaded twice in one process, once each way,
the throughput suite at batch 1 (prefill and decode tok/s as smallbench defines them) run on each,
alternating which goes first per round. Headline: the median over rounds of the per-round ratio on / off.

The model is a random-weight Llama (default 1024 wide, 8 layers: ~100M parameters) with tiny-llama's
tokenizer, written by smallbench's exporter and quantized by llama.cpp, so the matrices are big enough
for the kernels to matter.

    python benchmarks/llama_cpp_extra_bufts.py --quant Q4_0,Q8_0,Q4_K_M,IQ4_NL --rounds 6
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
from pathlib import Path

from llama_cpp_vs_llama_bench import random_llama

SIDES = ("on", "off")
METRICS = ("prefill_tok_s", "decode_tok_s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quant", default="Q4_0,Q8_0,Q4_K_M,IQ4_NL", help="GGUF types, comma list")
    ap.add_argument("--random-llama", default="1024,8", metavar="HIDDEN,LAYERS")
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None, help="write the raw numbers as JSON here")
    args = ap.parse_args()

    import llama_cpp

    from smallbench.backends import LoadSpec, get_backend_class
    from smallbench.hardware import hardware_info
    from smallbench.suites import get_suite
    from smallbench.suites.base import SuiteContext

    hw = hardware_info()
    print(f"cpu {hw.cpu_model} ({hw.cpu_threads} threads), flags {' '.join(hw.cpu_flags)}")
    print(f"llama-cpp-python {llama_cpp.__version__}; {llama_cpp.llama_print_system_info().decode().strip()}")
    suite = get_suite("throughput")
    settings = suite.settings({"prompt_tokens": args.prompt_tokens, "gen_tokens": args.gen_tokens,
                               "batch_sizes": [1], "warmup": 1, "repeats": args.repeats})
    hidden, layers = (int(x) for x in args.random_llama.split(","))
    report = {}
    for quant in [q.strip().upper() for q in args.quant.split(",") if q.strip()]:
        folder = Path(tempfile.mkdtemp(prefix="sb-bufts-"))
        try:
            path = random_llama(hidden, layers, quant, folder)
            loaded = {}
            for side in SIDES:
                b = get_backend_class("llama-cpp")()
                b.import_library()
                info = b.load(LoadSpec(model_id=path.name, source=str(path), options={"extra_bufts": side}))
                loaded[side] = (b, info)
            buffers = {s: loaded[s][0].describe().flags["weight_buffers"] for s in SIDES}
            print(f"\n{quant}: {info.params_total / 1e6:.0f}M params; weight buffers (MiB): "
                  + "; ".join(f"{s}: " + ", ".join(f"{k} {v / 2**20:.1f}" for k, v in buffers[s].items())
                              for s in SIDES))
            rounds = []
            for r in range(args.rounds):
                got = {}
                for side in SIDES if r % 2 == 0 else SIDES[::-1]:
                    b, info = loaded[side]
                    res = suite.run(b, settings, SuiteContext(load=None, model_info=info))
                    got[side] = {m.name: m.value for m in res.metrics if m.name in METRICS}
                rounds.append(got)
                print(f"  round {r + 1}: " + "  ".join(
                    f"{m} on {got['on'][m]:8.1f} off {got['off'][m]:8.1f} ratio {got['on'][m] / got['off'][m]:.3f}"
                    for m in METRICS))
            summary = {m: {"on_median": statistics.median(g["on"][m] for g in rounds),
                           "off_median": statistics.median(g["off"][m] for g in rounds),
                           "ratio_on_off": statistics.median(g["on"][m] / g["off"][m] for g in rounds)}
                       for m in METRICS}
            for m, s in summary.items():
                print(f"  {m}: on {s['on_median']:.1f}  off {s['off_median']:.1f}  "
                      f"median per-round ratio on/off {s['ratio_on_off']:.3f}")
            report[quant] = {"buffers": buffers, "rounds": rounds, "summary": summary}
            for b, _ in loaded.values():
                b.close()
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "hardware": hw.model_dump(), "report": report}, f, indent=2)


if __name__ == "__main__":
    main()
