//! Builds the engine component (`chord-engine` for wasm32-wasip2) so `chord` can embed it.
//!
//! It runs a nested `cargo build -p chord-engine --target wasm32-wasip2 --release` with its own
//! target directory (`<target>/engine-wasm`), so it never waits on the outer build's lock, and passes
//! the result's path to the crate as `CHORD_ENGINE_WASM`. Setting `CHORD_ENGINE_WASM` in the
//! environment embeds that file instead (for packagers and offline builds).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!(
        "cargo:rustc-env=CHORD_HOST_TARGET={}",
        std::env::var("TARGET").unwrap_or_default()
    );
    println!("cargo:rerun-if-env-changed=CHORD_ENGINE_WASM");
    if let Some(prebuilt) = std::env::var_os("CHORD_ENGINE_WASM") {
        let path = PathBuf::from(prebuilt);
        println!("cargo:rerun-if-changed={}", path.display());
        println!("cargo:rustc-env=CHORD_ENGINE_WASM={}", path.display());
        return;
    }

    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest.parent().expect("host/ is inside the workspace");
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
        .join("engine-wasm");
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
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo to build the engine component: {e}"));
    if !out.status.success() {
        panic!(
            "building the engine component failed (cargo build -p chord-engine --target wasm32-wasip2 --release):\n{}",
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
    println!("cargo:rustc-env=CHORD_ENGINE_WASM={}", wasm.display());
}
