//! The host library's error type.
use std::io;
use std::path::{Path, PathBuf};

/// Every failure of the host library. Each message is one self-contained line (the cause is
/// included in the text rather than chained) so the CLI can print it as is.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A model argument is neither a file, a known model name nor a URL.
    #[error(
        "unknown model `{name}` (known: {known}); give a known name, a .gguf path or an https:// URL"
    )]
    UnknownModel {
        /// What the user asked for.
        name: String,
        /// The known names, comma-separated.
        known: String,
    },
    /// A malformed argument (bad URL, bad hex digest, ...).
    #[error("{0}")]
    InvalidArgument(String),
    /// No cache directory could be determined.
    #[error("cannot find a cache directory: set CHORD_CACHE_DIR or HOME")]
    NoCacheDir,
    /// A network request failed (after retries, where retrying made sense).
    #[error("download of {url} failed: {reason}")]
    Http {
        /// The URL requested.
        url: String,
        /// What went wrong (status line, timeout, DNS, TLS, ...).
        reason: String,
    },
    /// A package registry did not list what was asked for.
    #[error("PyPI package `{package}`: {reason}")]
    Registry {
        /// The package name.
        package: String,
        /// What was missing.
        reason: String,
    },
    /// Downloaded or cached bytes do not match their expected sha256 or size.
    #[error(
        "{what}: {kind} mismatch (expected {expected}, got {actual}); the bad file was deleted"
    )]
    Integrity {
        /// The file or download concerned.
        what: String,
        /// `sha256` or `size`.
        kind: &'static str,
        /// The expected value.
        expected: String,
        /// The value found.
        actual: String,
    },
    /// A wheel, sdist or downloaded file is not what it should be (missing member, bad format).
    #[error("{what}: {reason}")]
    Archive {
        /// The archive or file concerned.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The engine rejected a model or an input.
    #[error("{0}")]
    Engine(#[from] chord_engine::Error),
    /// The engine component: the model file is not a valid GGUF (its `invalid-model`).
    #[error("invalid model: {0}")]
    InvalidModel(String),
    /// The engine component does not implement something this call needs (its `unsupported`).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The engine component: the session's context is full (its `context-full`).
    #[error("context full: {0}")]
    ContextFull(String),
    /// The engine component could not get the model's bytes from the store: unknown name, missing
    /// file, I/O (its `store`).
    #[error("store: {0}")]
    Store(String),
    /// The engine component: the compute backend failed (its `compute`).
    #[error("compute: {0}")]
    Compute(String),
    /// The engine component ran out of guest memory (its `out-of-memory`); raise the memory limit.
    #[error("out of guest memory: {0} (chord: raise --max-guest-memory)")]
    OutOfMemory(String),
    /// An engine call was interrupted ([`crate::runtime::InterruptHandle::interrupt`], e.g. Ctrl-C).
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
    /// An engine call after the engine stopped (crashed or was interrupted mid-call).
    #[error("the engine stopped after an earlier error; start a new runtime")]
    EngineStopped,
    /// wasmtime could not compile or instantiate the engine component.
    #[error("wasmtime: {0}")]
    Wasmtime(String),
    /// A filesystem operation failed.
    #[error("{}: {err}", path.display())]
    Io {
        /// The path operated on.
        path: PathBuf,
        /// The underlying error.
        err: io::Error,
    },
}

/// Result alias for the host library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The exit status `chord` should end with: 130 for a cancelled call (as shells report SIGINT),
    /// 1 for anything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Cancelled => 130,
            _ => 1,
        }
    }

    /// A closure mapping an `io::Error` on `path` to [`Error::Io`], for `map_err`.
    pub(crate) fn io(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
        move |err| Error::Io {
            path: path.to_owned(),
            err,
        }
    }
}
