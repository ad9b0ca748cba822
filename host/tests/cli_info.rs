//! `chord info` and `chord synth` on the command line: bad files give one line naming the problem
//! and a non-zero exit, never a panic.
use std::process::{Command, Output};

use chord_engine::gguf::{Gguf, GgufWriter, Value};
use chord_engine::quant::GgmlType;

fn chord(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chord"))
        .args(args)
        .output()
        .unwrap()
}

fn one_line_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "not one line: {stderr}"
    );
    assert!(
        stderr.contains(needle),
        "{stderr:?} does not mention {needle:?}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

fn small_model() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.kv("general.architecture", Value::String("llama".into()))
        .kv("llama.block_count", Value::U32(1))
        .kv("llama.embedding_length", Value::U32(32))
        .kv("llama.context_length", Value::U32(64))
        .kv("tokenizer.ggml.model", Value::String("gpt2".into()));
    w.tensor(
        "token_embd.weight",
        &[32, 4],
        GgmlType::Q8_0,
        vec![0; 4 * 34],
    )
    .unwrap();
    w.to_bytes()
}

#[test]
fn info_reports_a_valid_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    std::fs::write(&path, small_model()).unwrap();
    let out = chord(&["info", path.to_str().unwrap(), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["architecture"], "llama");
    assert_eq!(v["parameters"], 128);
    assert_eq!(v["tensor_types"]["Q8_0"], 1);
    assert_eq!(v["hyperparameters"]["block_count"], "1");
    assert_eq!(v["has_chat_template"], false);
}

#[test]
fn info_rejects_truncated_and_corrupt_files() {
    let dir = tempfile::tempdir().unwrap();
    let good = small_model();
    let p = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path.to_str().unwrap().to_string()
    };
    // Truncated inside the header, and inside the tensor data.
    one_line_error(&chord(&["info", &p("t1.gguf", &good[..40])]), "truncated");
    one_line_error(
        &chord(&["info", &p("t2.gguf", &good[..good.len() - 40])]),
        "past the end",
    );
    // Not a GGUF at all, and an empty file.
    one_line_error(
        &chord(&["info", &p("x.gguf", b"hello world, not a model")]),
        "not a GGUF",
    );
    one_line_error(&chord(&["info", &p("e.gguf", b"")]), "truncated");
    // A corrupted tensor type.
    let mut bad = good.clone();
    let at = bad
        .windows(17)
        .position(|w| w == b"token_embd.weight")
        .unwrap()
        + 17
        + 4
        + 16;
    bad[at..at + 4].copy_from_slice(&99u32.to_le_bytes());
    one_line_error(&chord(&["info", &p("c.gguf", &bad)]), "tensor type 99");
    // A missing file and an unknown name.
    one_line_error(&chord(&["info", "/nonexistent/model.gguf"]), "model");
    one_line_error(&chord(&["info", "no-such-model-name"]), "unknown model");
}

#[test]
fn synth_is_deterministic_and_valid() {
    let dir = tempfile::tempdir().unwrap();
    let vocab = dir.path().join("vocab.gguf");
    let mut w = GgufWriter::new();
    w.kv("general.architecture", Value::String("llama".into()))
        .kv(
            "tokenizer.ggml.tokens",
            Value::Array(chord_engine::gguf::Array::String(
                (0..100).map(|i| format!("t{i}")).collect(),
            )),
        );
    std::fs::write(&vocab, w.to_bytes()).unwrap();
    let run = |out: &str| {
        let o = dir.path().join(out);
        let r = chord(&[
            "synth",
            "-o",
            o.to_str().unwrap(),
            "--type",
            "Q4_0",
            "--seed",
            "7",
            "--vocab-from",
            vocab.to_str().unwrap(),
        ]);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        std::fs::read(o).unwrap()
    };
    let a = run("a.gguf");
    assert_eq!(a, run("b.gguf"));
    let g = Gguf::read(&a).unwrap();
    assert_eq!(g.metadata.get_u32("llama.vocab_size").unwrap(), Some(100));
    assert_eq!(
        g.tensor("blk.1.ffn_down.weight").unwrap().ty,
        GgmlType::Q4_0
    );
    assert_eq!(g.tensor("output_norm.weight").unwrap().ty, GgmlType::F32);
}
