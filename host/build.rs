//! Builds the engine component (`chord-engine` for wasm32-wasip2) so `chord` can embed it.
//!
//! It runs a nested `cargo build -p chord-engine --target wasm32-wasip2 --release` with its own
//! target directory (`<target>/engine-wasm`), so it never waits on the outer build's lock, and passes
//! the result's path to the crate as `CHORD_ENGINE_WASM`; likewise the relaxed-simd variant
//! (`<target>/engine-wasm-relaxed`, `CHORD_ENGINE_RELAXED_WASM`). Setting either variable in the
//! environment embeds that file instead (for packagers and offline builds).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!(
        "cargo:rustc-env=CHORD_HOST_TARGET={}",
        std::env::var("TARGET").unwrap_or_default()
    );
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest.parent().expect("host/ is inside the workspace");
    // The portable build (simd128, the one adapters and browsers get) and the relaxed-simd build
    // (`chord`'s default: one fused multiply-add where the portable build emulates it exactly).
    engine(workspace, "CHORD_ENGINE_WASM", "engine-wasm", None);
    engine(
        workspace,
        "CHORD_ENGINE_RELAXED_WASM",
        "engine-wasm-relaxed",
        Some("-Ctarget-feature=+simd128,+relaxed-simd"),
    );
}

/// Builds one variant of the engine component into `<target>/<dir>` (or takes the prebuilt file
/// named by `$env`) and passes its path to the crate as `env`. `rustflags`: instead of the
/// wasm32 flags of .cargo/config.toml.
fn engine(workspace: &Path, env: &str, dir: &str, rustflags: Option<&str>) {
    println!("cargo:rerun-if-env-changed={env}");
    if let Some(prebuilt) = std::env::var_os(env) {
        let path = PathBuf::from(prebuilt);
        println!("cargo:rerun-if-changed={}", path.display());
        println!("cargo:rustc-env={env}={}", path.display());
        return;
    }
    for input in [
        "components/engine/src",
        "components/engine/Cargo.toml",
        "wit",
        "Cargo.lock",
        ".cargo/config.toml",
    ] {
        println!("cargo:rerun-if-changed={}", workspace.join(input).display());
    }

    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"))
        .join(dir);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args([
            "build",
            "-p",
            "chord-engine",
            "--target",
            "wasm32-wasip2",
            "--release",
            "--target-dir",
        ])
        .arg(&target_dir)
        // The outer build's flags are for the host target; inheriting them would replace the
        // wasm32 rustflags of .cargo/config.toml (simd128).
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        // Under `cargo clippy` this names clippy-driver; the component is built, not linted, here.
        .env_remove("RUSTC_WORKSPACE_WRAPPER");
    if let Some(flags) = rustflags {
        cmd.env("CARGO_ENCODED_RUSTFLAGS", flags.replace(' ', "\x1f"));
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo to build the engine component: {e}"));
    if !out.status.success() {
        panic!(
            "building the engine component failed (cargo build -p chord-engine --target wasm32-wasip2 --release, rustflags {rustflags:?}):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let wasm = target_dir.join("wasm32-wasip2/release/chord_engine.wasm");
    if !Path::new(&wasm).exists() {
        panic!(
            "the engine build succeeded but {} is missing",
            wasm.display()
        );
    }
    println!("cargo:rustc-env={env}={}", wasm.display());
}
