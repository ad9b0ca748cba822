//! llama.cpp's tokenizer test vectors (`ggml-vocab-*.gguf` with `.inp`/`.out`, as run by its
//! tests/test-tokenizer-0.cpp): every case must tokenize to exactly the expected ids.

use std::path::{Path, PathBuf};

use chord_engine::gguf::Gguf;
use chord_engine::tokenizer::Tokenizer;

/// Where the full set of llama.cpp vocab test files lives: `CHORD_VOCAB_DIR`, else the vendored
/// llama.cpp of the llama-cpp-python sdist on this machine.
fn llama_vocab_dir() -> PathBuf {
    std::env::var_os("CHORD_VOCAB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from("/work/ext/llama_cpp_python-0.3.36/vendor/llama.cpp/models")
        })
}

/// Every vocab of llama.cpp's sdist that has test vectors, except the BERT (WPM) one.
const ALL: &[&str] = &[
    "command-r",
    "deepseek-coder",
    "deepseek-llm",
    "falcon",
    "gemma-4",
    "gpt-2",
    "llama-bpe",
    "llama-spm",
    "mpt",
    "phi-3",
    "qwen2",
    "qwen35",
    "refact",
    "starcoder",
];

/// (text, expected ids) pairs, split as test-tokenizer-0.cpp's `read_tests` does.
fn read_cases(inp: &Path, out: &Path) -> Vec<(String, Vec<u32>)> {
    let raw = std::fs::read_to_string(inp).unwrap_or_else(|e| panic!("{}: {e}", inp.display()));
    let expected =
        std::fs::read_to_string(out).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
    const SEP: &str = "\n__ggml_vocab_test__\n";
    let mut texts = Vec::new();
    let mut pos = 0;
    while pos < raw.len() {
        match raw[pos..].find(SEP) {
            Some(i) => {
                texts.push(raw[pos..pos + i].to_string());
                pos += i + SEP.len();
            }
            None => {
                texts.push(raw[pos..].to_string());
                break;
            }
        }
    }
    let lines: Vec<&str> = expected.lines().collect();
    assert_eq!(
        texts.len(),
        lines.len(),
        "{}: inputs and outputs differ in count",
        inp.display()
    );
    texts
        .into_iter()
        .zip(lines)
        .map(|(t, l)| {
            let ids = l
                .split_whitespace()
                .map(|s| s.parse().expect("token id"))
                .collect();
            (t, ids)
        })
        .collect()
}

/// Runs every case of `ggml-vocab-<name>.gguf`; returns a description of each failure.
fn check_vocab(dir: &Path, name: &str) -> Vec<String> {
    let path = dir.join(format!("ggml-vocab-{name}.gguf"));
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let gguf = Gguf::read(&file).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let tok = Tokenizer::from_gguf(&gguf).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let cases = read_cases(
        &dir.join(format!("ggml-vocab-{name}.gguf.inp")),
        &dir.join(format!("ggml-vocab-{name}.gguf.out")),
    );
    assert!(cases.len() > 20, "{name}: only {} cases", cases.len());
    let mut failures = Vec::new();
    for (text, want) in &cases {
        let got = tok
            .tokenize(text, false, false)
            .unwrap_or_else(|e| panic!("{name}: {text:?}: {e}"));
        if &got != want {
            failures.push(format!(
                "{name}: {text:?}\n   want {want:?}\n    got {got:?}"
            ));
        }
    }
    eprintln!("{name}: {} cases, {} failures", cases.len(), failures.len());
    failures
}

fn run(dir: &Path, names: &[&str]) {
    let failures: Vec<String> = names.iter().flat_map(|n| check_vocab(dir, n)).collect();
    assert!(
        failures.is_empty(),
        "{} failing cases:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The three vocabularies committed under tests/fixtures/vocab (always available).
#[test]
fn committed_vocabs() {
    run(
        &chord_tests::fixture("vocab"),
        &["gpt-2", "llama-bpe", "llama-spm"],
    );
}

/// All of llama.cpp's vocab tests.
#[test]
fn all_llama_cpp_vocabs() {
    let dir = llama_vocab_dir();
    if !dir.is_dir() {
        eprintln!("SKIPPED: {} not found (set CHORD_VOCAB_DIR)", dir.display());
        return;
    }
    run(&dir, ALL);
}
