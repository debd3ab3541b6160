#!/usr/bin/env bash
# Full-size sponsor models with dummy (random) weights on this machine's CPU: the records in results/.
# Speed and memory only (dummy weights carry no accuracy). Re-running skips cells that already have a
# successful record; pass --force to redo them.  Usage: scripts/record-sponsors.sh [OUT] [extra run args]
set -uo pipefail
out=${1:-results}; shift || true
models=minicpm5-1b,tiny-aya-global,nemotron-3-nano-4b
shape=(--prompt-tokens 64 --gen-tokens 16 --repeats 3 --warmup 1 --batch-sizes 1,4)
# A stray engine from an earlier run would share the memory bus and skew the bandwidth figure.
pkill -f 'VLLM::' 2>/dev/null || true
smallbench run --dummy -m "$models" -b llama-cpp,transformers -s memory,latency,throughput -o "$out" "${shape[@]}" "$@"
# A second, longer shape where decode is cheap enough (llama.cpp).
smallbench run --dummy -m "$models" -b llama-cpp -s latency,throughput -o "$out" \
  --prompt-tokens 512 --gen-tokens 64 --repeats 3 --warmup 1 --batch-sizes 1,4 "$@"
smallbench run --dummy -m "$models" -b vllm -s memory,latency,throughput -o "$out" --enforce-eager "${shape[@]}" "$@"
smallbench run --dummy -m "$models" -b mlx -s memory -o "$out" "${shape[@]}" "$@"
# MLX's CPU build multiplies matrices ~40x slower than torch here: latency only (no throughput batches).
smallbench run --dummy -m "$models" -b mlx -s latency -o "$out" "${shape[@]}" "$@"
smallbench fit mellum2-12b-a2.5b --quant BF16 || true
