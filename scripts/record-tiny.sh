#!/usr/bin/env bash
# The built-in tiny-llama on all four backends and its quantizations: speed, memory, and accuracy on the real
# offline data in ../shared/data (WikiText-2, BLiMP, GSM8K). The records in results/ were made with this.
# Re-running skips cells that already have a successful record; pass --force to redo them.
# Usage: scripts/record-tiny.sh [OUT] [DATA] [extra run args]
set -uo pipefail
out=${1:-results}; data=${2:-../shared/data}; shift 2 || shift $# || true
speed=(-s latency,throughput,memory --prompt-tokens 128 --gen-tokens 32 --repeats 5 --warmup 1 --batch-sizes 1,4,16)
# zero-shot: GSM8K's few-shot examples come from its train split, which ../shared/data does not hold
acc=(-s accuracy --tasks wikitext,blimp,gsm8k --data-dir "$data" --limit 100 --num-fewshot 0)
pkill -f 'VLLM::' 2>/dev/null || true
for args in "-b transformers" "-b vllm" "-b llama-cpp --quant F32,Q8_0,Q4_0" "-b mlx --quant float32,8bit,4bit"; do
  # shellcheck disable=SC2086
  smallbench run -m tiny-llama $args -o "$out" "${speed[@]}" "$@"
  # shellcheck disable=SC2086
  smallbench run -m tiny-llama $args -o "$out" "${acc[@]}" "$@"
done
