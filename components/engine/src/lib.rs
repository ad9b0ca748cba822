//! wasm-chord engine.
//!
//! A plain Rust library (GGUF reader, quantized kernels, tokenizers, forward passes) that builds
//! natively — for tests, benches and the host — and for `wasm32-wasip2`, where one thin module of
//! WIT glue turns it into the engine component.

mod arch;
pub mod chat;
pub mod error;
pub mod generate;
pub mod gguf;
pub mod info;
pub mod model;
pub mod quant;
pub mod sample;
pub mod stop;
pub mod tokenizer;

pub use error::{Error, Result};

// The WIT glue that makes this library the engine component; only in the wasm32 build, and not
// in its unit tests (run under plain `wasmtime run`, which has no store or compute to import).
#[cfg(all(target_arch = "wasm32", not(test)))]
mod wit_glue;
