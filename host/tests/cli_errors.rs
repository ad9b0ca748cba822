//! Bad inputs to the model commands: one line on stderr, exit status 1, no panic text. Every
//! command runs the engine inside the component, so these errors come through the WIT boundary.
use std::path::Path;
use std::process::{Command, Output};

fn chord(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chord"))
        .args(args)
        .output()
        .unwrap()
}

fn smollm2() -> String {
    chord_host::pull::resolve_model("smollm2-135m-instruct")
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// Asserts a one-line error containing `want`, exit status 1, no panic or backtrace.
fn one_line_error(out: &Output, want: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "stderr: {stderr}");
    assert!(stderr.starts_with("chord: error: "), "stderr: {stderr}");
    assert!(
        stderr.to_lowercase().contains(&want.to_lowercase()),
        "expected {want:?} in: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

fn run(model: &str) -> Output {
    chord(&["run", "--model", model, "--prompt", "hi", "-n", "4"])
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn missing_file() {
    one_line_error(&run("/nonexistent/model.gguf"), "no such file");
}

#[test]
fn unknown_model_name() {
    one_line_error(&run("no-such-model"), "unknown model `no-such-model`");
}

#[test]
fn not_a_gguf_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "x.gguf", b"hello, this is not a model at all");
    one_line_error(&run(&p), "not a GGUF file");
}

#[test]
fn truncated_gguf() {
    let dir = tempfile::tempdir().unwrap();
    let real = std::fs::read(smollm2()).unwrap();
    // Cut inside the header, and inside the tensor data.
    let p = write(dir.path(), "head.gguf", &real[..100_000]);
    one_line_error(&run(&p), "truncated");
    let p = write(dir.path(), "data.gguf", &real[..real.len() - 1000]);
    one_line_error(&run(&p), "truncated");
}

#[test]
fn unsupported_architecture() {
    use chord_engine::gguf::{GgufWriter, Value};
    use chord_engine::quant::GgmlType;
    let mut w = GgufWriter::new();
    w.kv("general.architecture", Value::String("mamba".into()))
        .kv("mamba.block_count", Value::U32(1))
        .kv("mamba.embedding_length", Value::U32(32))
        .kv("mamba.context_length", Value::U32(64));
    w.tensor(
        "token_embd.weight",
        &[32, 4],
        GgmlType::F32,
        vec![0; 4 * 32 * 4],
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "mamba.gguf", &w.to_bytes());
    one_line_error(&run(&p), "mamba");
    // `info` still describes it: reading a file's header does not need its architecture.
    let out = chord(&["info", &p]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn prompt_longer_than_the_context() {
    let long = "word ".repeat(200);
    let out = chord(&[
        "run",
        "--model",
        &smollm2(),
        "--prompt",
        &long,
        "--ctx",
        "64",
        "-n",
        "4",
    ]);
    one_line_error(&out, "context full");
}

#[test]
fn too_little_guest_memory() {
    let out = chord(&[
        "--max-guest-memory",
        "32M",
        "run",
        "--model",
        &smollm2(),
        "--prompt",
        "hi",
    ]);
    one_line_error(&out, "--max-guest-memory");
}

#[test]
fn token_outside_the_vocabulary() {
    let out = chord(&[
        "logits",
        "--model",
        &smollm2(),
        "--tokens",
        "1,4000000",
        "--json",
    ]);
    one_line_error(&out, "outside the vocabulary");
}
