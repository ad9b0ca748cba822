#!/usr/bin/env bash
# Builds llama.cpp (CPU only, static) from the vendored sources and runs harness.cpp, writing the
# reference fixtures it produces. Usage: scripts/llama_cpp_ref/build.sh /path/to/vendor/llama.cpp [build-dir]
set -euo pipefail
LLAMA=${1:?path to llama.cpp sources}
B=${2:-/tmp/llama-ref-build}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cmake -S "$LLAMA" -B "$B" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF \
  -DLLAMA_BUILD_COMMON=OFF -DBUILD_SHARED_LIBS=OFF >/dev/null
cmake --build "$B" --target llama -j"$(nproc)" >/dev/null
LIBS=$(find "$B" -name 'libllama.a' -o -name 'libggml*.a' | sort -r | tr '\n' ' ')
g++ -O2 -std=c++17 -I"$LLAMA/include" -I"$LLAMA/ggml/include" "$HERE/harness.cpp" \
  -Wl,--start-group $LIBS -Wl,--end-group -lpthread -lm -fopenmp -o "$B/harness"
mkdir -p "$ROOT/tests/fixtures/sampling"
"$B/harness" > "$ROOT/tests/fixtures/sampling/llama_cpp_chain.json"
"$B/harness" chat > "$ROOT/tests/fixtures/chat/llama_cpp_builtin.json"
echo "wrote tests/fixtures/sampling/llama_cpp_chain.json and tests/fixtures/chat/llama_cpp_builtin.json"
