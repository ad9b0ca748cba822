//! wasm-chord host library: everything `chord` needs that is not the CLI itself.
pub mod error;
pub mod pull;
pub mod synth;

pub use error::{Error, Result};
