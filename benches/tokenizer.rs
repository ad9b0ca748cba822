//! Tokenizer throughput: 1 MiB of English (the Apache-2.0 license text, repeated) through the
//! committed llama.cpp test vocabularies (LLaMA 3 BPE, LLaMA SPM, GPT-2) and, when present, the real
//! models' vocabularies (SmolLM2 BPE, Gemma 3 SPM with 262k pieces; `CHORD_MODELS_DIR`, default
//! /work/models). Also detokenization of the result.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chord_engine::gguf::Gguf;
use chord_engine::tokenizer::Tokenizer;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const MIB: usize = 1 << 20;

fn english_mib() -> String {
    let license = include_str!("../LICENSE-APACHE");
    let mut text = String::with_capacity(MIB + license.len());
    while text.len() < MIB {
        text.push_str(license);
    }
    // Cut at a char boundary (the license is ASCII, but be safe).
    let mut end = MIB;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text
}

fn vocabularies() -> Vec<(String, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let fixtures = root.join("tests/fixtures/vocab");
    let models = std::env::var_os("CHORD_MODELS_DIR")
        .map_or_else(|| PathBuf::from("/work/models"), PathBuf::from);
    let mut v: Vec<(String, PathBuf)> = ["llama-bpe", "llama-spm", "gpt-2"]
        .iter()
        .map(|n| (n.to_string(), fixtures.join(format!("ggml-vocab-{n}.gguf"))))
        .collect();
    for (name, file) in [
        ("smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
        ("gemma3", "gemma-3-270m-q4_k_m.gguf"),
    ] {
        let p = models.join(file);
        if p.is_file() {
            v.push((name.to_string(), p));
        }
    }
    v
}

fn bench(c: &mut Criterion) {
    let text = english_mib();
    let mut group = c.benchmark_group("tokenizer");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .warm_up_time(Duration::from_secs(1));
    for (name, path) in vocabularies() {
        let file = std::fs::File::open(&path).expect("open vocabulary");
        let tok = Tokenizer::from_gguf(&Gguf::read(&file).expect("gguf")).expect("tokenizer");
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(format!("tokenize_1MiB_english/{name}"), |b| {
            b.iter(|| tok.tokenize(&text, true, false).expect("tokenize"))
        });
        let ids = tok.tokenize(&text, false, false).expect("tokenize");
        group.bench_function(format!("detokenize_1MiB_english/{name}"), |b| {
            b.iter(|| tok.detokenize(&ids, false).expect("detokenize"))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
