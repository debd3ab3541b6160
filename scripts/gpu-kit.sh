#!/usr/bin/env bash
# Packs, here (with PyPI), what a GPU machine with no network needs beyond its own image (Python 3.12 with CUDA
# torch and transformers: the H100/H200 machines this project is lent) to run smallbench and build llama.cpp with
# CUDA there. Into KIT (default .gpu-kit/, git-ignored; small enough to travel with the working tree):
#   wheels/     cp312 / pure-Python wheels of the requirements that image lacks, at the versions installed here
#   llama-src/  llama-cpp-python's source (the version installed here) without what a CUDA build never reads
#               (git history, docs, vocab test models, other GPU backends): 73 MB becomes a few
#   cache/      llama.cpp's HF -> GGUF converter of that version (what `smallbench setup llama-converter` fetches)
# There: scripts/record-gpu-llama.sh installs the kit and builds llama-cpp-python with CUDA.
# Usage: scripts/gpu-kit.sh [KIT]
set -euo pipefail
kit=${1:-.gpu-kit}
version() { python -c "import importlib.metadata as m; print(m.version('$1'))"; }
llama=$(version llama-cpp-python)
rm -rf "$kit"
mkdir -p "$kit/wheels" "$kit/cache"
wanted=()
for name in pydantic pydantic-core annotated-types typing-inspection platformdirs diskcache gguf; do
  wanted+=("$name==$(version "$name")")
done
python -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$kit/wheels" "${wanted[@]}"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python -m pip download --quiet --no-deps --no-binary=:all: "llama-cpp-python==$llama" -d "$tmp"
tar xzf "$tmp/llama_cpp_python-$llama.tar.gz" -C "$tmp"
src="$tmp/llama_cpp_python-$llama"
cpp="$src/vendor/llama.cpp"
rm -rf "$src/.git" "$src/docs" "$src/examples" "$src/tests" "$cpp"/.git* "$cpp"/{docs,models,media,benches,tests,examples}
find "$cpp/tools" -mindepth 1 -maxdepth 1 ! -name mtmd -exec rm -rf {} +  # the package builds tools/mtmd only
find "$cpp/ggml/src" -mindepth 1 -maxdepth 1 -type d -name 'ggml-*' ! -name ggml-cpu ! -name ggml-cuda \
  -exec rm -rf {} +
mv "$src" "$kit/llama-src"
SMALLBENCH_CACHE="$kit/cache" smallbench setup llama-converter >/dev/null
du -sh "$kit" "$kit"/*
