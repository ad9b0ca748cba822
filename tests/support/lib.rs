//! Shared helpers for the end-to-end tests: fixture paths and model fetching.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use chord_host::pull::Cache;

/// `tests/fixtures/<name>`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// The llama-cpp-python release whose sdist vendors llama.cpp's tokenizer test vocabularies.
pub const LLAMA_CPP_PYTHON_VERSION: &str = "0.3.36";

/// Path of the known model `name` (e.g. `smollm2-135m-instruct`, `gemma3-270m`), pulled through
/// `chord pull`'s code into the user's cache (`$CHORD_CACHE_DIR`, else `~/.cache/wasm-chord`) on
/// first use, then reused. Panics (failing the test) if it cannot be had.
pub fn model(name: &str) -> PathBuf {
    static PULLED: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    // Held during the pull: concurrent tests of one binary wait rather than re-check the cache;
    // other processes wait on the cache's file lock.
    let mut pulled = PULLED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(path) = pulled.get(name) {
        return path.clone();
    }
    let path = Cache::from_env()
        .and_then(|cache| cache.pull(name, None))
        .unwrap_or_else(|e| panic!("cannot get model `{name}`: {e}"))
        .path;
    pulled.insert(name.to_owned(), path.clone());
    path
}

/// Directory holding llama.cpp's tokenizer test files, `ggml-vocab-*.gguf` with their `.inp`
/// (texts) and `.out` (expected token ids) companions, extracted from the llama-cpp-python sdist
/// on PyPI into the cache on first use. Panics (failing the test) if they cannot be had.
pub fn llama_vocab_dir() -> PathBuf {
    static DIR: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut dir = DIR.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(dir) = &*dir {
        return dir.clone();
    }
    let path = chord_host::pull::fetch_sdist_files(
        "llama-cpp-python",
        LLAMA_CPP_PYTHON_VERSION,
        "vendor/llama.cpp/models/",
        "ggml-vocab-*",
    )
    .unwrap_or_else(|e| panic!("cannot get llama.cpp's vocab test files: {e}"));
    *dir = Some(path.clone());
    path
}
