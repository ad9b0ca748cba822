//! wasm-chord engine.
//!
//! A plain Rust library (GGUF reader, quantized kernels, tokenizers, forward passes) that builds
//! natively — for tests, benches and the host — and for `wasm32-wasip2`, where one thin module of
//! WIT glue turns it into the engine component.

pub mod error;
pub mod quant;

pub use error::{Error, Result};
mod arch;
pub mod gguf;
pub mod model;
