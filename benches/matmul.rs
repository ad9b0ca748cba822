//! The quantized matrix products of the two real models, at their shapes and per-tensor types
//! (read from the GGUFs: SmolLM2-135M Q4_1, Gemma 3 270M Q4_K_M), over random weights quantized
//! with the engine's quantizers. Each shape for one token (decode) and 64 (a prefill batch):
//!
//! - `engine`: the engine's own product (`matmul_rows` over all rows on this thread, after
//!   quantizing the activations, as `ops::matmul` does when no device holds the matrix);
//! - `cpu-1t`, `cpu-2t`: the host CPU backend's `DeviceMatrix::matmul` with 1 and 2 threads,
//!   what one `chord:compute` `matrix.matmul` call computes.
//!
//! The output heads run at one token only: a prefill computes logits for its last token alone.
//! Throughput is multiply-adds. `cargo bench -p chord-benches --bench matmul`.

use std::sync::Arc;
use std::time::Duration;

use chord_benches::data;
use chord_engine::model::{DeviceMatrix, Matrix, matmul_rows};
use chord_engine::quant::{GgmlType, quantize_row};
use chord_host::compute::cpu::{CpuBackend, SharedBytes};
use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use std::hint::black_box;

/// One weight matrix of a model: `m` rows of `k` values of `ty`.
struct Shape {
    model: &'static str,
    tensor: &'static str,
    ty: GgmlType,
    k: usize,
    m: usize,
    /// Output heads are multiplied for the last token of a batch only.
    head: bool,
}

const fn shape(
    model: &'static str,
    tensor: &'static str,
    ty: GgmlType,
    k: usize,
    m: usize,
) -> Shape {
    Shape {
        model,
        tensor,
        ty,
        k,
        m,
        head: false,
    }
}

/// Every distinct (type, shape) of the two models. Q and O (SmolLM2), K and V (both) share a
/// shape; Gemma's V and FFN-down alternate between two types across layers, so both are here.
/// Both output heads are the tied Q8_0 token embeddings.
const SHAPES: &[Shape] = &[
    shape("smollm2", "attn_q+o", GgmlType::Q4_1, 576, 576),
    shape("smollm2", "attn_k+v", GgmlType::Q4_1, 576, 192),
    shape("smollm2", "ffn_gate+up", GgmlType::Q4_1, 576, 1536),
    shape("smollm2", "ffn_down", GgmlType::Q4_1, 1536, 576),
    Shape {
        head: true,
        ..shape("smollm2", "output", GgmlType::Q8_0, 576, 49152)
    },
    shape("gemma3", "attn_q", GgmlType::Q5_0, 640, 1024),
    shape("gemma3", "attn_k+v", GgmlType::Q5_0, 640, 256),
    shape("gemma3", "attn_v", GgmlType::Q8_0, 640, 256),
    shape("gemma3", "attn_output", GgmlType::Q4_K, 1024, 640),
    shape("gemma3", "ffn_gate+up", GgmlType::Q5_0, 640, 2048),
    shape("gemma3", "ffn_down", GgmlType::Q6_K, 2048, 640),
    shape("gemma3", "ffn_down", GgmlType::Q4_K, 2048, 640),
    Shape {
        head: true,
        ..shape("gemma3", "output", GgmlType::Q8_0, 640, 262144)
    },
];

/// Prefill batch size.
const PREFILL: usize = 64;

/// `m` random rows of `k` values quantized to `ty`, one row at a time (Gemma's head would take
/// 670 MB as f32).
fn weights(ty: GgmlType, k: usize, m: usize) -> Vec<u8> {
    let row = usize::try_from(ty.row_size(k as u64).expect("row size")).expect("row size");
    let mut w = vec![0u8; row * m];
    for (r, dst) in w.chunks_exact_mut(row).enumerate() {
        quantize_row(ty, &data(r as u64 + 1, k), dst).expect("quantize");
    }
    w
}

fn matmul(c: &mut Criterion) {
    let cpu = [1, 2].map(|t| (t, CpuBackend::new(t).expect("cpu backend")));
    for s in SHAPES {
        let bytes: SharedBytes = Arc::new(weights(s.ty, s.k, s.m));
        let w = Matrix::shared(s.tensor, s.ty, s.k, s.m, bytes.clone(), 0).expect("matrix");
        let vt = s.ty.vec_dot_type();
        let arow = usize::try_from(vt.row_size(s.k as u64).expect("row size")).expect("row size");
        let mut g = c.benchmark_group(format!(
            "matmul/{}/{}/{}_{}x{}",
            s.model,
            s.tensor,
            s.ty.name(),
            s.k,
            s.m
        ));
        if s.head {
            // 30 MB (SmolLM2) and 178 MB (Gemma) of weights per product: few samples suffice.
            g.sample_size(10);
        }
        let batches: &[usize] = if s.head { &[1] } else { &[1, PREFILL] };
        for &n in batches {
            let x = data(0x5eed, n * s.k);
            let mut out = vec![0f32; n * s.m];
            g.throughput(Throughput::Elements((n * s.k * s.m) as u64));
            // Prefill products take up to ~15 ms: flat sampling keeps them inside the time.
            g.sampling_mode(if n == 1 {
                SamplingMode::Auto
            } else {
                SamplingMode::Flat
            });
            // The engine quantizes the activations once per product (shared by products of the
            // same input, e.g. Q, K and V); the backend does per call. Both are timed here.
            let mut acts = vec![0u8; n * arow];
            let mut tmp = vec![0f32; n];
            g.bench_function(BenchmarkId::new("engine", format!("n{n}")), |b| {
                b.iter(|| {
                    for (xt, at) in x.chunks_exact(s.k).zip(acts.chunks_exact_mut(arow)) {
                        quantize_row(vt, black_box(xt), at).expect("quantize");
                    }
                    matmul_rows(&w, &acts, n, 0..s.m, &mut out, &mut tmp).expect("matmul");
                    black_box(&out);
                })
            });
            for (threads, backend) in &cpu {
                let dm = backend
                    .matrix(s.tensor, s.ty, s.k, s.m, bytes.clone(), 0)
                    .expect("matrix");
                g.bench_function(
                    BenchmarkId::new(format!("cpu-{threads}t"), format!("n{n}")),
                    |b| {
                        b.iter(|| {
                            dm.matmul(black_box(&x), n, &mut out).expect("matmul");
                            black_box(&out);
                        })
                    },
                );
            }
        }
        g.finish();
    }
}

criterion_group! {
    name = benches;
    // 13 shapes x 2 batch sizes x 3 variants: short runs by default (the command line overrides).
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = matmul
}
criterion_main!(benches);
