//! Bench helpers (the benches themselves are the `[[bench]]` targets).

use std::path::PathBuf;

/// Deterministic pseudo-random floats in [-1, 1) (no rand dependency needed).
pub fn data(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0
        })
        .collect()
}

/// The real models the benches run, by the names `chord pull` knows.
pub const SMOLLM2: &str = "smollm2-135m-instruct";
pub const GEMMA3: &str = "gemma3-270m";

/// Where the known model `name` is: `$CHORD_MODELS_DIR/<file>` when that variable is set, else
/// `chord pull`'s cache. Never downloads: a missing file is the caller's reason to skip, given
/// as the error.
pub fn model_path(name: &str) -> Result<PathBuf, String> {
    let known = chord_host::pull::find_known(name).ok_or(format!("{name} is not a known model"))?;
    let path = match std::env::var_os("CHORD_MODELS_DIR") {
        Some(dir) => PathBuf::from(dir).join(known.file_name),
        None => chord_host::pull::Cache::from_env()
            .map_err(|e| e.to_string())?
            .model_path(known),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} is missing (`chord pull {name}`, or set CHORD_MODELS_DIR)",
            path.display()
        ))
    }
}

/// A ordinary token id for step `i` (not BOS/EOS, whose ids are small), as `chord bench` picks.
pub fn token(i: u32, n_vocab: u32) -> u32 {
    let n_vocab = n_vocab.max(2);
    1 + (i.wrapping_mul(2_654_435_761) % (n_vocab - 1))
}

/// A runtime (the engine component, products on the cpu backend with `cpu_threads` threads, or
/// in the guest for `None`) with the model at `path` loaded for `n_ctx` positions and one session.
pub fn component_session(
    path: &std::path::Path,
    cpu_threads: Option<usize>,
    n_ctx: u32,
) -> chord_host::Result<(
    chord_host::Runtime,
    chord_host::ModelHandle,
    chord_host::SessionHandle,
)> {
    use chord_host::{LoadOptions, Runtime, RuntimeOptions, SessionOptions};
    let mut rt = Runtime::new(RuntimeOptions {
        cpu_threads,
        ..RuntimeOptions::default()
    })?;
    let model = rt.load_model(
        path,
        &LoadOptions {
            context_length: Some(n_ctx),
            ..LoadOptions::default()
        },
    )?;
    let session = rt.new_session(&model, &SessionOptions::default())?;
    Ok((rt, model, session))
}
