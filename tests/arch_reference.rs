//! The forward passes of the architectures without a real test model (qwen2, qwen3, phi3,
//! gemma, gemma2) against llama.cpp, on tiny random-weight GGUFs that exercise each
//! architecture's features (tests/fixtures/arch, see its README.md): the logits of every
//! position of an 80-token sequence evaluated in one batch, as a prefill and the rest through
//! the KV cache, and in chunks of 64, 1 and 15 tokens (with flash attention off and on).
//!
//! Each case also runs with the weights and the KV cache on the host's CPU device (two threads),
//! where the forward step is recorded once and run whole by the device (`model::graph`): its
//! logits must be the engine's own, bit for bit.
//!
//! Run with `cargo test --release -p chord-tests --test arch_reference -- --nocapture` to see
//! the numbers.

use std::sync::Arc;

use chord_engine::gguf::Gguf;
use chord_engine::model::{
    Device, DeviceKv, DeviceMatrix, KvShape, LogitsMode, Model, SessionOptions,
};
use chord_engine::tokenizer::Tokenizer;
use serde::Deserialize;

/// Largest accepted `max |ours - llama.cpp| / max |llama.cpp|` over a row. The engine follows
/// llama.cpp's arithmetic step by step (its roundings to f16 in the KV cache, the queries,
/// the attention weights and F16 matmul inputs; GELU through ggml's f16 table; ggml's e^x; the
/// summation orders of its AVX-512 kernels, see `model::fmat`; glibc's cosf/sinf/tanhf on both
/// sides) and agrees bit for bit on x86_64 with AVX2 (0 seen for every architecture, chunking
/// and attention kernel). A real deviation anywhere upstream flips some f16 rounding and shows
/// up around 1e-4 (a different matmul summation order alone gave 1e-4 to 8e-4; an RMSNorm
/// epsilon off by 3x in Qwen 3's QK-norm gave 6e-4), so 1e-5 lets none through while leaving
/// room for the rare double rounding of the portable (non-AVX2) kernels.
const TOL_REL: f64 = 1e-5;
/// Top-1 must agree wherever llama.cpp's best logit leads the second by at least this.
const MARGIN: f32 = 0.5;

#[derive(Deserialize)]
struct Reference {
    arch: String,
    n_vocab: usize,
    n_ctx: usize,
    tokens: Vec<u32>,
    /// The chunk sizes of the `*_chunked*` logits.
    chunks: Vec<usize>,
    /// One batch, flash attention off.
    logits: Vec<Vec<f32>>,
    /// In `chunks`, flash attention off.
    logits_chunked: Vec<Vec<f32>>,
    /// In `chunks`, flash attention on.
    logits_chunked_flash: Vec<Vec<f32>>,
}

fn reference(arch: &str) -> Reference {
    let path = chord_tests::fixture(&format!("arch/{arch}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let r: Reference = serde_json::from_str(&text).unwrap();
    assert_eq!(r.arch, arch);
    let n = r.tokens.len();
    assert_eq!(r.chunks.iter().sum::<usize>(), n);
    for rows in [&r.logits, &r.logits_chunked, &r.logits_chunked_flash] {
        assert_eq!(rows.len(), n);
        assert!(rows.iter().all(|row| row.len() == r.n_vocab));
    }
    r
}

fn load(arch: &str) -> Arc<Model> {
    let path = chord_tests::fixture(&format!("arch/{arch}.gguf"));
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let src: chord_engine::model::SharedSource = Arc::new(file);
    let gguf = Gguf::read(&*src).unwrap();
    assert_eq!(gguf.architecture().unwrap(), arch);
    // The vocabulary must be one our tokenizer accepts too.
    Tokenizer::from_gguf(&gguf).unwrap_or_else(|e| panic!("{arch}: tokenizer: {e}"));
    Arc::new(Model::load(src, gguf).unwrap())
}

/// The model with its matrices and KV caches on the host's CPU backend (two threads), as `chord
/// bench --native` runs it; `programs: false` hides the device's programs, so that the engine
/// runs each step itself and calls the device per product and per layer's attention (the path of
/// a device without programs).
fn load_on_cpu(arch: &str, programs: bool) -> Arc<Model> {
    let path = chord_tests::fixture(&format!("arch/{arch}.gguf"));
    let bytes = std::fs::read(&path).unwrap();
    let src: chord_engine::model::SharedSource = Arc::new(std::fs::File::open(&path).unwrap());
    let gguf = Gguf::read(&*src).unwrap();
    let cpu = chord_host::compute::cpu::CpuBackend::new(2).unwrap();
    let mut device = cpu.device(Arc::new(bytes));
    if !programs {
        device = Arc::new(PerCall(device));
    }
    Arc::new(Model::load_on(src, gguf, device).unwrap())
}

/// A device without programs over another's matrices and caches.
struct PerCall(Arc<dyn Device>);

impl Device for PerCall {
    fn upload(
        &self,
        name: &str,
        ty: chord_engine::quant::GgmlType,
        n_cols: usize,
        n_rows: usize,
        offset: u64,
    ) -> chord_engine::Result<Box<dyn DeviceMatrix>> {
        self.0.upload(name, ty, n_cols, n_rows, offset)
    }

    fn kv_cache(&self, shape: &KvShape) -> chord_engine::Result<Option<Box<dyn DeviceKv>>> {
        self.0.kv_cache(shape)
    }
}

fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// Compares our rows with llama.cpp's: returns the largest relative difference (and the largest
/// absolute one) and records top-1 disagreements where llama.cpp's margin is clear.
fn compare(
    what: &str,
    ours: &[Vec<f32>],
    want: &[Vec<f32>],
    misses: &mut Vec<String>,
) -> (f64, f64) {
    let (mut max_rel, mut max_abs) = (0f64, 0f64);
    for (i, (row, want)) in ours.iter().zip(want).enumerate() {
        assert_eq!(row.len(), want.len());
        let scale = want.iter().fold(0f64, |m, &v| m.max(f64::from(v).abs()));
        let diff = row.iter().zip(want).fold(0f64, |m, (&a, &b)| {
            m.max((f64::from(a) - f64::from(b)).abs())
        });
        max_abs = max_abs.max(diff);
        max_rel = max_rel.max(diff / scale);
        let best = argmax(want);
        let mut sorted = want.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let margin = sorted[0] - sorted[1];
        if argmax(row) != best && margin >= MARGIN {
            misses.push(format!(
                "{what} pos {i}: ours {} ref {best} (margin {margin:.3})",
                argmax(row)
            ));
        }
    }
    (max_rel, max_abs)
}

/// Evaluates `tokens` in consecutive calls of `chunks` tokens and returns every row.
/// Also says whether the steps ran whole on a device.
fn eval_chunks(
    m: &Arc<Model>,
    n_ctx: usize,
    flash: bool,
    tokens: &[u32],
    chunks: &[usize],
) -> (Vec<Vec<f32>>, bool) {
    let mut sess = m
        .new_session(SessionOptions {
            n_ctx,
            flash_attn: flash,
            ..Default::default()
        })
        .unwrap();
    let whole = sess.steps_on_device();
    assert!(!whole || m.on_device());
    let mut rows = Vec::new();
    let mut pos = 0;
    for &c in chunks {
        let part = &tokens[pos..pos + c];
        let logits = sess.eval(part, LogitsMode::All).unwrap();
        assert_eq!(logits.rows(), c);
        rows.extend((0..c).map(|i| logits.row(i).to_vec()));
        pos += c;
    }
    assert_eq!(sess.n_past(), tokens.len());
    (rows, whole)
}

/// One evaluation to compare: how we run the tokens and llama.cpp's logits for that.
struct Case<'a> {
    what: &'a str,
    flash: bool,
    chunks: Vec<usize>,
    want: &'a [Vec<f32>],
}

fn check(arch: &str) {
    let r = reference(arch);
    let m = load(arch);
    let on_cpu = load_on_cpu(arch, true);
    let per_call = load_on_cpu(arch, false);
    assert_eq!(m.hparams().n_vocab, r.n_vocab);
    let n = r.tokens.len();
    let split = n / 3;
    let cases = [
        Case {
            what: "one batch",
            flash: false,
            chunks: vec![n],
            want: &r.logits,
        },
        // A prefill, then the rest on top of the KV cache: llama.cpp computes the same values
        // for chunks of two or more tokens as for one batch.
        Case {
            what: "prefill + rest",
            flash: false,
            chunks: vec![split, n - split],
            want: &r.logits,
        },
        // With a one-token call between (matrix-vector kernels, one-query attention).
        Case {
            what: "chunks",
            flash: false,
            chunks: r.chunks.clone(),
            want: &r.logits_chunked,
        },
        Case {
            what: "chunks",
            flash: true,
            chunks: r.chunks.clone(),
            want: &r.logits_chunked_flash,
        },
    ];
    let mut misses = Vec::new();
    for Case {
        what,
        flash,
        chunks,
        want,
    } in cases
    {
        let (rows, _) = eval_chunks(&m, r.n_ctx, flash, &r.tokens, &chunks);
        let tag = format!("{arch} {what} {chunks:?} flash={flash}");
        let (rel, abs) = compare(&tag, &rows, want, &mut misses);
        println!("{tag}: max |diff| {abs:.3e}, relative to the row's max |logit| {rel:.3e}");
        let bits = |rows: &[Vec<f32>]| -> Vec<Vec<u32>> {
            rows.iter()
                .map(|r| r.iter().map(|v| v.to_bits()).collect())
                .collect()
        };
        for (dev, programs) in [(&on_cpu, true), (&per_call, false)] {
            let (on_device, whole) = eval_chunks(dev, r.n_ctx, flash, &r.tokens, &chunks);
            assert_eq!(whole, programs, "{tag}: where the steps ran");
            assert!(
                bits(&on_device) == bits(&rows),
                "{tag}: the CPU device (programs {programs}) differs from the engine"
            );
        }
        assert!(
            rel <= TOL_REL,
            "{tag}: max relative diff {rel:.3e} > {TOL_REL:e}"
        );
    }
    assert!(
        misses.is_empty(),
        "top-1 differs where llama.cpp's margin ≥ {MARGIN}: {misses:?}"
    );
}

#[test]
fn qwen2_matches_llama_cpp() {
    check("qwen2");
}

#[test]
fn qwen3_matches_llama_cpp() {
    check("qwen3");
}

#[test]
fn phi3_matches_llama_cpp() {
    check("phi3");
}

/// llama.cpp picks Phi-3's long RoPE factors when its context, rounded up to a multiple of 256,
/// exceeds `rope.scaling.original_context_length` (128 in the fixture): so it uses them in a
/// context of 96 too, and so must we.
#[test]
fn phi3_long_rope_follows_the_padded_context() {
    let r = reference("phi3");
    let m = load("phi3");
    let n = r.tokens.len();
    assert!(n <= 96 && m.hparams().n_ctx_orig == 128);
    let (rows, _) = eval_chunks(&m, 96, false, &r.tokens, &[n]);
    let mut misses = Vec::new();
    let (rel, abs) = compare("phi3 n_ctx 96", &rows, &r.logits, &mut misses);
    println!("phi3 n_ctx 96: max |diff| {abs:.3e}, relative {rel:.3e}");
    assert!(rel <= TOL_REL && misses.is_empty(), "{rel:.3e} {misses:?}");
}

#[test]
fn gemma_matches_llama_cpp() {
    check("gemma");
}

#[test]
fn gemma2_matches_llama_cpp() {
    check("gemma2");
}
