//! wasm-chord host library: everything `chord` needs that is not the CLI itself.

pub mod bindings;
pub mod compute;
pub mod error;
pub mod pull;
pub mod runtime;
pub mod store;
pub mod synth;

pub use error::{Error, Result};
pub use runtime::{
    FinishReason, GenerationHandle, GuestSimd, LoadOptions, ModelHandle, PositionLogits, Runtime,
    RuntimeOptions, SamplerOptions, SessionHandle, SessionOptions, Token, Usage,
};
