//! Kernel benches: the dot product of one weight row with one quantized activation row
//! (n = 4096) for every type, scalar reference vs each SIMD backend available here; and the
//! activation quantizers. `cargo bench -p chord-benches --bench kernels`.

use chord_benches::data;
use chord_engine::quant::{Backend, GgmlType, quantize_row, quantize_row_with, vec_dot_fn_for};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

const N: usize = 4096;

fn quantized(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let mut q = vec![0u8; ty.row_size(x.len() as u64).unwrap() as usize];
    quantize_row(ty, x, &mut q).unwrap();
    q
}

fn vec_dot(c: &mut Criterion) {
    let types = [
        GgmlType::Q4_1,
        GgmlType::Q8_0,
        GgmlType::Q5_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
        GgmlType::Q4_0,
        GgmlType::Q5_1,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q5_K,
        GgmlType::IQ4_NL,
        GgmlType::IQ4_XS,
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
    ];
    let (w, x) = (data(1, N), data(2, N));
    for ty in types {
        let wq = quantized(ty, &w);
        let xq = quantized(ty.vec_dot_type(), &x);
        let mut g = c.benchmark_group(format!("vec_dot/{}", ty.name()));
        g.throughput(Throughput::Elements(N as u64));
        for backend in Backend::available() {
            let Some(f) = vec_dot_fn_for(ty, backend) else {
                continue;
            };
            let name = if backend == Backend::Scalar {
                "scalar".to_string()
            } else {
                format!("{backend:?}").to_lowercase()
            };
            g.bench_function(name, |b| {
                b.iter(|| f(black_box(N), black_box(&wq), black_box(&xq)))
            });
        }
        g.finish();
    }
}

fn quantize_activations(c: &mut Criterion) {
    let x = data(3, N);
    for ty in [GgmlType::Q8_0, GgmlType::Q8_1, GgmlType::Q8_K] {
        let mut out = vec![0u8; ty.row_size(N as u64).unwrap() as usize];
        let mut g = c.benchmark_group(format!("quantize_act/{}", ty.name()));
        g.throughput(Throughput::Elements(N as u64));
        for backend in Backend::available() {
            let name = if backend == Backend::Scalar {
                "scalar".to_string()
            } else {
                format!("{backend:?}").to_lowercase()
            };
            g.bench_function(name, |b| {
                b.iter(|| {
                    quantize_row_with(backend, ty, black_box(&x), black_box(&mut out)).unwrap()
                })
            });
        }
        g.finish();
    }
}

criterion_group!(benches, vec_dot, quantize_activations);
criterion_main!(benches);
