//! The host library's one error type.

/// Everything the host library can fail with. `Display` is one line, fit for `chord: error: …`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The model file is not a valid GGUF (from the engine's `invalid-model`).
    #[error("invalid model: {0}")]
    InvalidModel(String),
    /// The engine does not implement something this call needs (from `unsupported`).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// An argument is out of range or malformed (from `invalid-argument`, or checked by the host).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The session's context is full (from `context-full`).
    #[error("context full: {0}")]
    ContextFull(String),
    /// The store could not serve the model's bytes: unknown name, missing file, I/O (from `store`).
    #[error("store: {0}")]
    Store(String),
    /// The compute backend failed (from `compute`).
    #[error("compute: {0}")]
    Compute(String),
    /// The engine ran out of guest memory (from `out-of-memory`); raise the memory limit.
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    /// The call was interrupted ([`crate::runtime::InterruptHandle::interrupt`], e.g. Ctrl-C).
    #[error("cancelled")]
    Cancelled,
    /// The engine component crashed (a bug in the engine, or guest memory exhausted by an infallible
    /// allocation). The runtime cannot be used afterwards.
    #[error("engine crashed: {message}")]
    Trap {
        /// One-line reason.
        message: String,
        /// wasmtime's full report, with the guest backtrace.
        detail: String,
    },
    /// A call after the engine stopped (crashed or was interrupted mid-call).
    #[error("the engine stopped after an earlier error; start a new runtime")]
    EngineStopped,
    /// wasmtime could not compile or instantiate the engine component.
    #[error("wasmtime: {0}")]
    Wasmtime(String),
}

impl Error {
    /// The exit status `chord` should end with: 130 for a cancelled call (as shells report SIGINT),
    /// 1 for anything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Cancelled => 130,
            _ => 1,
        }
    }
}

/// Result alias of the host library.
pub type Result<T, E = Error> = std::result::Result<T, E>;
