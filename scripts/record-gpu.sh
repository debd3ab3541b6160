#!/usr/bin/env bash
# On an NVIDIA GPU: the GPU tests, then records for results/ offline: tiny-llama (real weights) and the sponsor and
# reference models at full size with dummy (random) weights, Transformers on CUDA in bfloat16. Each model runs in
# its own `smallbench run`, bounded by BUDGET seconds, so a slow architecture loses only its own cells.
# Usage: scripts/record-gpu.sh [OUT] [BUDGET per model, s]
set -uo pipefail
out=${1:-results}; budget=${2:-150}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.memory --format=csv
lscpu | grep -E '^(Model name|CPU\(s\))'
python3 -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__)'
python3 -m pytest -p no:cacheprovider -n 0 -q tests/test_gpu.py tests/test_hardware.py::test_nvml_gpu_fields \
  tests/test_transformers_backend.py::test_cuda_stream_and_memory_stats
# tiny-llama at scripts/record-tiny.sh's shape; parity on the GPU in float32 and bfloat16 against this host's CPU
speed=(-s latency,throughput,memory --prompt-tokens 128 --gen-tokens 32 --repeats 5 --warmup 1 --batch-sizes 1,4,16)
timeout "$budget" smallbench run -b transformers --device cuda -m tiny-llama -o "$out" "${speed[@]}"
for args in "--device cuda --dtype float32" "--device cuda --dtype bfloat16" "--device cpu"; do
  # shellcheck disable=SC2086
  timeout "$budget" smallbench run -b transformers -m tiny-llama -s parity -o "$out" $args
done
shape=(--prompt-tokens 256 --gen-tokens 32 --repeats 3 --warmup 1 --batch-sizes 1,8 --timeout "$budget")
for m in minicpm5-1b nemotron-3-nano-4b tiny-aya-global qwen3-4b mellum2-12b-a2.5b; do
  timeout "$budget" smallbench run --dummy -b transformers --device cuda -m "$m" -s memory,latency,throughput \
    -o "$out" "${shape[@]}"
done
smallbench report "$out" --wide 2>/dev/null | head -40 || true
