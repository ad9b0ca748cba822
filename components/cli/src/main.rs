//! `chord-cli`: a command component (`wasi:cli/run`) that generates text with a model through the
//! `chord:llm/inference` import. Composed with the engine and the fs-store and no-compute adapters
//! (scripts/build-standalone) it runs under plain `wasmtime run`:
//!
//! ```text
//! wasmtime run --dir models::/models target/standalone/chord-standalone.wasm \
//!     --model /models/SmolLM2-135M-Instruct.Q4_1.gguf --prompt "The capital of France is" -n 16
//! ```
//!
//! Token text streams to stdout; errors go to stderr as one line, with exit status 1.

mod args;

#[cfg(target_arch = "wasm32")]
mod generate;

use std::process::ExitCode;

fn main() -> ExitCode {
    let parsed = match args::parse(std::env::args().skip(1)) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("chord-cli: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match parsed {
        args::Parsed::Help => {
            print!("{}", args::usage());
            ExitCode::SUCCESS
        }
        args::Parsed::Run(a) => match run(&a) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("chord-cli: error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

#[cfg(target_arch = "wasm32")]
fn run(a: &args::Args) -> Result<(), String> {
    generate::run(a)
}

/// The command needs the `chord:llm/inference` import: it only works as a wasm32 component.
#[cfg(not(target_arch = "wasm32"))]
fn run(_: &args::Args) -> Result<(), String> {
    Err("chord-cli is a WebAssembly component: build it for wasm32-wasip2 (scripts/build-standalone)".into())
}
