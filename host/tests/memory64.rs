//! Part D's acceptance: a synthetic llama model larger than 4 GiB runs through the wasm32
//! component with a 512 MiB weight cache, within a bounded guest memory, and generates llama.cpp's
//! greedy tokens for the same file (tests/fixtures/memory64, made as docs/memory64.md records).
use std::io::Read;
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use sha2::{Digest, Sha256};

const BUDGET: u64 = 512 << 20;
/// Guest memory beyond the weight cache's budget: KV cache (64 tokens), work buffers, the
/// tokenizer, the GGUF header, a store read in flight, the allocator's slack.
const OVERHEAD: u64 = 64 << 20;

fn sha256(path: &Path) -> String {
    let mut f = std::fs::File::open(path).unwrap();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 8 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_model_over_4_gib_runs_in_a_512_mib_cache() {
    let fx: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../tests/fixtures/memory64/llama-4g-q4_0.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let chord = env!("CARGO_BIN_EXE_chord");
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("llama-4g-q4_0.gguf");
    let mut synth = vec!["synth", "-o", model.to_str().unwrap()];
    synth.extend(
        fx["synth"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap()),
    );
    let out = Command::new(chord).args(&synth).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let size = std::fs::metadata(&model).unwrap().len();
    assert!(size > 4 << 30, "{size} bytes is not over 4 GiB");
    assert_eq!(size, fx["file_size"].as_u64().unwrap());
    // The generator is deterministic: the same bytes llama.cpp was run on.
    assert_eq!(sha256(&model), fx["sha256"].as_str().unwrap());

    let want: Vec<u64> = fx["greedy_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();

    // The guest computes, holding at most the budget of weights: layers are streamed.
    let (got, done) = generate(chord, &model, &fx, "guest");
    assert_eq!(done["prompt_tokens"], 5);
    assert_eq!(got, want, "greedy tokens differ from llama.cpp's");
    assert_eq!(done["cache_budget_bytes"].as_u64(), Some(BUDGET));
    let peak = done["guest_memory_peak_bytes"].as_u64().unwrap();
    assert!(
        peak <= BUDGET + OVERHEAD,
        "guest memory peak {peak} is over the budget plus {} MiB",
        OVERHEAD >> 20
    );
    // Layers beyond the budget were streamed: every forward pass read most of the file again.
    let served = done["store_bytes_read"].as_u64().unwrap();
    assert!(served > 4 * size, "only {served} bytes served");
    assert!(done["prefetch_bytes_used"].as_u64().unwrap() > 0);

    // The host's CPU backend computes: the weights stay in the host's map, the guest holds
    // activations and the KV cache only.
    let (got, done) = generate(chord, &model, &fx, "cpu");
    assert_eq!(
        got, want,
        "greedy tokens (cpu backend) differ from llama.cpp's"
    );
    let peak = done["guest_memory_peak_bytes"].as_u64().unwrap();
    assert!(
        peak <= OVERHEAD,
        "guest memory peak {peak} with the cpu backend"
    );
    let served = done["store_bytes_read"].as_u64().unwrap();
    assert!(
        served < size / 16,
        "{served} bytes served to the guest with the cpu backend"
    );
}

/// `chord --backend BACKEND run` of the fixture's prompt, 8 greedy tokens with a 512 MiB cache
/// budget and `--stats`: the token ids and the summary line.
fn generate(chord: &str, model: &Path, fx: &Value, backend: &str) -> (Vec<u64>, Value) {
    let out = Command::new(chord)
        .args([
            "--backend",
            backend,
            "run",
            "--model",
            model.to_str().unwrap(),
            "--prompt",
            fx["prompt"].as_str().unwrap(),
            "-n",
            "8",
            "--temperature",
            "0",
            "--ctx",
            "64",
            "--cache-budget",
            "512MiB",
            "--stats",
            "--json",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let done = lines.last().unwrap();
    println!("{done}\n{stderr}");
    let got: Vec<u64> = lines[..lines.len() - 1]
        .iter()
        .map(|l| l["id"].as_u64().unwrap())
        .collect();
    (got, done.clone())
}
