//! The sampler chain against llama.cpp itself: tests/fixtures/sampling/llama_cpp_chain.json holds
//! the tokens llama.cpp's chain (logit bias → penalties → top-k → typical → top-p → min-p →
//! temperature → dist, as `common_sampler_init` builds it) drew from fixed logits with fixed seeds,
//! accepting each token before the next draw. Made by scripts/llama_cpp_ref/ (harness.cpp calls
//! llama.cpp's public sampler API). The logits are distinct, so no tie order can differ.

use chord_engine::sample::{Sampler, SamplerOptions};
use serde_json::Value as Json;

fn logits(n: usize, m: usize, d: f32) -> Vec<f32> {
    // As in harness.cpp: exact integer arithmetic, then one f32 division and subtraction.
    (0..n).map(|i| ((i * 7919) % m) as f32 / d - 5.0).collect()
}

#[test]
fn sampler_chain_matches_llama_cpp() {
    // Embedded, so the test also runs on wasm32-wasip2 without file access.
    let text = include_str!("../../../tests/fixtures/sampling/llama_cpp_chain.json");
    let cases: Json = serde_json::from_str(text).unwrap();
    let cases = cases.as_array().unwrap();
    assert!(cases.len() >= 12);
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let f = |k: &str| c[k].as_f64().unwrap() as f32;
        let u = |k: &str| usize::try_from(c[k].as_u64().unwrap()).unwrap();
        let bias = c["logit_bias"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                let v = if b[1] == "-inf" {
                    f32::NEG_INFINITY
                } else {
                    b[1].as_f64().unwrap() as f32
                };
                (u32::try_from(b[0].as_u64().unwrap()).unwrap(), v)
            })
            .collect();
        let opts = SamplerOptions {
            temperature: f("temperature"),
            top_k: i32::try_from(c["top_k"].as_i64().unwrap()).unwrap(),
            top_p: f("top_p"),
            min_p: f("min_p"),
            typical_p: f("typical_p"),
            min_keep: 0,
            repeat_penalty: f("repeat_penalty"),
            repeat_last_n: u("repeat_last_n"),
            frequency_penalty: f("frequency_penalty"),
            presence_penalty: f("presence_penalty"),
            logit_bias: bias,
            seed: u32::try_from(c["seed"].as_u64().unwrap()).unwrap(),
        };
        let n = u("n_vocab");
        let row = logits(n, u("m"), f("d"));
        let mut s = Sampler::new(opts, n).unwrap();
        let want: Vec<u32> = c["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| u32::try_from(t.as_u64().unwrap()).unwrap())
            .collect();
        let mut got = Vec::new();
        for _ in 0..want.len() {
            let t = s.sample(&row).unwrap();
            s.accept(t).unwrap();
            got.push(t);
        }
        assert_eq!(got, want, "case {name}");
    }
}
