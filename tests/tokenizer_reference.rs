//! llama.cpp's `llama_tokenize` results for the real models (tests/fixtures/reference/*_tokenizer_dev.json),
//! plus detokenization round trips on the same texts.

use std::path::PathBuf;

use chord_engine::gguf::Gguf;
use chord_engine::tokenizer::{StreamDecoder, Tokenizer};
use serde::Deserialize;

/// A real model's path: `CHORD_MODELS_DIR` (default /work/models) joined with `name`.
fn model_path(name: &str) -> PathBuf {
    std::env::var_os("CHORD_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work/models"))
        .join(name)
}

#[derive(Deserialize)]
struct Fixture {
    model: String,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    add_special: bool,
    parse_special: bool,
    tokens: Vec<u32>,
}

fn load(fixture: &str) -> Option<(Fixture, Tokenizer)> {
    let path = chord_tests::fixture("reference").join(fixture);
    let json = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let fx: Fixture = serde_json::from_str(&json).expect("fixture json");
    let model = model_path(&fx.model);
    if !model.is_file() {
        eprintln!(
            "SKIPPED: model {} not found (set CHORD_MODELS_DIR)",
            model.display()
        );
        return None;
    }
    let file = std::fs::File::open(&model).expect("open model");
    let tok = Tokenizer::from_gguf(&Gguf::read(&file).expect("gguf")).expect("tokenizer");
    Some((fx, tok))
}

fn check(fixture: &str) {
    let Some((fx, tok)) = load(fixture) else {
        return;
    };
    assert!(fx.cases.len() >= 50);
    let mut failures = Vec::new();
    for c in &fx.cases {
        let got = tok
            .tokenize(&c.text, c.add_special, c.parse_special)
            .expect("tokenize");
        if got != c.tokens {
            failures.push(format!(
                "{:?} (add_special {}, parse_special {})\n   want {:?}\n    got {:?}",
                c.text, c.add_special, c.parse_special, c.tokens, got
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{}: {} failing cases:\n{}",
        fx.model,
        failures.len(),
        failures.join("\n")
    );
}

/// Text back from the reference tokens: streaming equals whole-sequence decoding, and for texts
/// without special tokens the pieces give the text back.
fn round_trip(fixture: &str) {
    let Some((fx, tok)) = load(fixture) else {
        return;
    };
    for c in &fx.cases {
        let mut dec = StreamDecoder::new(true);
        let mut streamed = String::new();
        let mut bytes = Vec::new();
        for &id in &c.tokens {
            streamed += &dec.push(&tok, id).unwrap();
            bytes.extend_from_slice(tok.token_to_piece(id, true).unwrap());
        }
        streamed += &dec.finish();
        assert_eq!(streamed, String::from_utf8_lossy(&bytes), "{:?}", c.text);
        if !c.parse_special && !c.add_special {
            // No BOS, no special tokens: the pieces spell the text (SPM adds no prefix space here:
            // both models have add_space_prefix = false).
            assert_eq!(streamed, c.text, "{}", fx.model);
        }
    }
}

#[test]
fn smollm2_matches_llama_cpp() {
    check("smollm2_tokenizer_dev.json");
}

#[test]
fn gemma3_matches_llama_cpp() {
    check("gemma3_tokenizer_dev.json");
}

#[test]
fn smollm2_round_trip() {
    round_trip("smollm2_tokenizer_dev.json");
}

#[test]
fn gemma3_round_trip() {
    round_trip("gemma3_tokenizer_dev.json");
}
