#!/usr/bin/env bash
# On an NVIDIA GPU machine with no network (a lent H100/H200): llama.cpp on CUDA. Installs the kit that
# scripts/gpu-kit.sh packed here (carry `.gpu-kit`), builds llama-cpp-python from its source with CUDA for this
# GPU only, runs the llama.cpp GPU tests, then records into OUT: tiny-llama (real weights) in three GGUF types
# and the sponsor models at full size with dummy weights (BF16 and Q4_K_M), each model bounded by BUDGET seconds.
# Sized for one 10-minute device call: the build (one GPU architecture) is most of it. MODELS overrides the list.
# Usage: scripts/record-gpu-llama.sh [OUT] [BUDGET per model, s] [BUILD limit, s]
set -uo pipefail
out=${1:-results}; budget=${2:-90}; build=${3:-360}
models=${MODELS:-minicpm5-1b tiny-aya-global nemotron-3-nano-4b}
kit=.gpu-kit
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 SMALLBENCH_CACHE="$PWD/$kit/cache"
[ -d "$kit/llama-src" ] || { echo "no $kit: run scripts/gpu-kit.sh here first and carry $kit" >&2; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv
python3 -m pip install -q --no-index --no-deps "$kit"/wheels/*.whl || exit 1
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . || exit 1
start=$SECONDS
CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=native -DLLAVA_BUILD=OFF" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
  timeout "$build" python3 -m pip install -q --no-index --no-deps --no-build-isolation "$kit/llama-src" || exit 1
echo "llama-cpp-python built with CUDA in $((SECONDS - start)) s"
python3 -c 'import llama_cpp as l; print("llama-cpp-python", l.__version__, "GPU offload", l.llama_supports_gpu_offload())'
python3 -m pytest -p no:cacheprovider -n 0 -q tests/test_llama_cpp_backend.py::test_gpu_offload_build_runs_on_the_gpu
speed=(-s latency,throughput,memory --prompt-tokens 128 --gen-tokens 32 --repeats 5 --warmup 1 --batch-sizes 1,4,16)
timeout "$budget" smallbench run -b llama-cpp --device cuda -m tiny-llama --quant F32,Q8_0,Q4_0 -o "$out" "${speed[@]}"
shape=(--prompt-tokens 256 --gen-tokens 32 --repeats 3 --warmup 1 --batch-sizes 1,8 --timeout "$budget")
for m in $models; do
  timeout "$budget" smallbench run --dummy -b llama-cpp --device cuda -m "$m" --quant BF16,Q4_K_M \
    -s memory,latency,throughput -o "$out" "${shape[@]}"
done
smallbench report "$out" --wide 2>/dev/null | grep -E 'llama-cpp.*cuda' | head -20 || true
