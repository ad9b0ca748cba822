//! `chord tokenize --no-add-special --json` reproduces every line of llama.cpp's vocab tests
//! (`ggml-vocab-*.gguf` with `.inp`/`.out`, from the llama-cpp-python 0.3.36 sdist; BERT aside),
//! one process per case, text on stdin — exactly as a user would run it.
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

const VOCABS: &[&str] = &[
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

fn cases(dir: &Path, name: &str) -> Vec<(String, String)> {
    let inp = std::fs::read_to_string(dir.join(format!("ggml-vocab-{name}.gguf.inp"))).unwrap();
    let out = std::fs::read_to_string(dir.join(format!("ggml-vocab-{name}.gguf.out"))).unwrap();
    // test-tokenizer-0.cpp's split: texts separated by "\n__ggml_vocab_test__\n".
    let mut texts: Vec<String> = inp
        .split("\n__ggml_vocab_test__\n")
        .map(str::to_string)
        .collect();
    if texts.last().is_some_and(|t| t.is_empty()) {
        texts.pop();
    }
    let lines: Vec<String> = out.lines().map(str::to_string).collect();
    assert_eq!(
        texts.len(),
        lines.len(),
        "{name}: .inp and .out differ in count"
    );
    texts.into_iter().zip(lines).collect()
}

fn tokenize(model: &Path, text: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_chord"))
        .args([
            "tokenize",
            "--model",
            model.to_str().unwrap(),
            "--no-add-special",
            "--json",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn tokenize_cli_reproduces_every_llama_cpp_vocab_test() {
    let dir = std::env::var_os("CHORD_VOCAB_DIR")
        .map(Into::into)
        .unwrap_or_else(|| {
            chord_host::pull::fetch_sdist_files(
                "llama-cpp-python",
                "0.3.36",
                "vendor/llama.cpp/models/",
                "ggml-vocab-*",
            )
            .expect("llama.cpp vocab test files")
        });
    let work: Vec<(String, String, String)> = VOCABS
        .iter()
        .flat_map(|v| {
            cases(&dir, v)
                .into_iter()
                .map(move |(t, e)| (v.to_string(), t, e))
        })
        .collect();
    let failures = std::sync::Mutex::new(Vec::new());
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((vocab, text, want)) = work.get(i) else {
                        break;
                    };
                    let model = dir.join(format!("ggml-vocab-{vocab}.gguf"));
                    let got: Vec<u32> = serde_json::from_str(&tokenize(&model, text)).unwrap();
                    let want: Vec<u32> = want
                        .split_whitespace()
                        .map(|s| s.parse().unwrap())
                        .collect();
                    if got != want {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("{vocab}: {text:?}: want {want:?} got {got:?}"));
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    eprintln!("{} cases over {} vocabularies", work.len(), VOCABS.len());
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
