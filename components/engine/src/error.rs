//! The engine's one error type.

/// Everything that can go wrong inside the engine. Bad input is always one of these, never a panic.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The model file is not a valid GGUF, or its contents contradict themselves.
    #[error("invalid model: {0}")]
    InvalidModel(String),
    /// A valid file that uses something this engine does not implement (architecture, tensor type, …).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A caller-supplied argument is out of range or malformed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Reading bytes from the backing store failed.
    #[error("store: {0}")]
    Store(String),
    /// The compute device the model's matrices are on failed.
    #[error("compute: {0}")]
    Compute(String),
    /// A session's context window is full and context shifting is off (or cannot free room).
    #[error("context full: {0}")]
    ContextFull(String),
    /// An allocation sized by the model or the input could not be made.
    #[error("out of memory: {0}")]
    OutOfMemory(String),
}

/// Result alias used throughout the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;
