//! wasm-chord host library: everything `chord` needs that is not the CLI itself.
pub mod error;
pub mod pull;

pub use error::{Error, Result};
