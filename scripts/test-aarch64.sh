#!/usr/bin/env bash
# Cross-compiles chord-engine's unit tests for aarch64 and runs them under qemu-user, so the
# NEON kernels (components/engine/src/quant/*.rs, `mod neon`) are tested on an x86_64 machine.
#
# Needs: rustup, python3 with pip, and either qemu-aarch64(-static) on PATH or apt-get (for
# `apt-get download`, no root needed). Downloads are cached under $WASM_CHORD_CACHE
# (default ~/.cache/wasm-chord); running the script again reuses them.
#
# The target is aarch64-unknown-linux-musl: a static binary runs under qemu-user without an
# aarch64 sysroot. The linker is zig (`pip install ziglang`) behind a small wrapper.
#
# Usage: scripts/test-aarch64.sh [test binary args, e.g. a test name filter such as `quant`]
# Without arguments it runs every engine lib test (about a minute under qemu); tests that need
# model files skip when the files are absent.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${WASM_CHORD_CACHE:-$HOME/.cache/wasm-chord}
TARGET=aarch64-unknown-linux-musl
TARGET_ENV=AARCH64_UNKNOWN_LINUX_MUSL
mkdir -p "$CACHE"

# 1. Rust target.
if ! rustup target list --installed | grep -qx "$TARGET"; then
    rustup target add "$TARGET"
fi

# 2. zig as the cross linker, installed into the cache (not into the user's site-packages).
ZIG_DIR=$CACHE/ziglang
if ! PYTHONPATH=$ZIG_DIR python3 -m ziglang version >/dev/null 2>&1; then
    python3 -m pip install --quiet --disable-pip-version-check --upgrade --target "$ZIG_DIR" ziglang
fi
TOOLS=$CACHE/aarch64-tools
mkdir -p "$TOOLS"
LINKER=$TOOLS/zig-cc-aarch64-musl
# Rewritten every run (cheap) so a moved cache dir still works.
cat >"$LINKER" <<EOF
#!/bin/sh
# cargo's linker for $TARGET: zig's clang, targeting static musl.
PYTHONPATH="$ZIG_DIR" exec python3 -m ziglang cc -target aarch64-linux-musl "\$@"
EOF
chmod +x "$LINKER"

# 3. qemu-user: from PATH, else unpacked from Debian/Ubuntu's qemu-user-static package.
QEMU=
for q in qemu-aarch64-static qemu-aarch64; do
    if command -v "$q" >/dev/null 2>&1; then
        QEMU=$(command -v "$q")
        break
    fi
done
if [ -z "$QEMU" ]; then
    QDIR=$CACHE/qemu
    find_qemu() {
        for q in "$QDIR"/root/usr/bin/qemu-aarch64-static "$QDIR"/root/usr/bin/qemu-aarch64; do
            if [ -x "$q" ]; then
                echo "$q"
                return
            fi
        done
    }
    QEMU=$(find_qemu)
    if [ -z "$QEMU" ]; then
        mkdir -p "$QDIR/debs" "$QDIR/root"
        # Newer Debian ships the static binaries in qemu-user; try both names.
        for pkg in qemu-user-static qemu-user; do
            if (cd "$QDIR/debs" && apt-get download "$pkg" >/dev/null 2>&1); then
                for deb in "$QDIR"/debs/"$pkg"_*.deb; do
                    dpkg -x "$deb" "$QDIR/root"
                done
                QEMU=$(find_qemu)
                [ -n "$QEMU" ] && break
            fi
        done
    fi
    if [ -z "$QEMU" ]; then
        echo "no qemu-aarch64 found: install qemu-user-static or make apt-get download work" >&2
        exit 1
    fi
fi
echo "qemu: $QEMU"

# 4. Build and run (qemu-user's default CPU, `max`, has NEON).
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
export "CARGO_TARGET_${TARGET_ENV}_LINKER=$LINKER"
export "CARGO_TARGET_${TARGET_ENV}_RUNNER=$QEMU"
# zig brings its own musl crt objects and libc; Rust's self-contained copies would clash (`_start`
# defined twice).
export "CARGO_TARGET_${TARGET_ENV}_RUSTFLAGS=-C link-self-contained=no"
cd "$ROOT"
cargo test -p chord-engine --release --target "$TARGET" --lib -- "$@"
