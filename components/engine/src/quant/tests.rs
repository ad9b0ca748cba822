//! Unit tests in the manner of llama.cpp's tests/test-quantize-fns.cpp, plus SIMD-vs-scalar,
//! exactness and bad-input checks.

use super::*;

/// splitmix64: a tiny seeded generator, so the tests need no dependency.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    /// Roughly normal: sum of 4 uniforms.
    fn normal(&mut self) -> f32 {
        (self.uniform() + self.uniform() + self.uniform() + self.uniform()) * 0.87
    }
    /// Activation-like data: mostly normal, with the occasional outlier and scale change.
    fn activations(&mut self, n: usize) -> Vec<f32> {
        let scale = [0.01f32, 0.3, 1.0, 4.0][(self.next_u64() % 4) as usize];
        (0..n)
            .map(|_| {
                let v = self.normal() * scale;
                if self.next_u64().is_multiple_of(97) {
                    v * 20.0
                } else {
                    v
                }
            })
            .collect()
    }
}

/// llama.cpp's `generate_data`.
fn generate_data(offset: f32, n: usize, amplitude: f32) -> Vec<f32> {
    (0..n)
        .map(|i| 0.1 + amplitude * (i as f32 + offset).cos())
        .collect()
}

/// llama.cpp's `array_rmse` (sic: sqrt of the sum, divided by n).
fn array_rmse(a: &[f32], b: &[f32]) -> f32 {
    let sum: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum();
    sum.sqrt() as f32 / a.len() as f32
}

fn quantize(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let mut q = vec![0u8; ty.row_size(x.len() as u64).unwrap() as usize];
    quantize_row(ty, x, &mut q).unwrap();
    q
}

fn dequantize(ty: GgmlType, q: &[u8], n: usize) -> Vec<f32> {
    let mut y = vec![0f32; n];
    dequantize_row(ty, q, &mut y).unwrap();
    y
}

/// Byte offsets of the f16 scale fields in a block (to keep random blocks finite).
fn f16_fields(ty: GgmlType) -> &'static [usize] {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 | GgmlType::IQ4_NL | GgmlType::IQ4_XS => {
            &[0]
        }
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q8_1 => {
            &[0, 2]
        }
        GgmlType::Q2_K => &[80, 82],
        GgmlType::Q3_K => &[108],
        GgmlType::Q6_K => &[208],
        _ => &[],
    }
}

/// A row of `n` values of weight type `ty` from random bytes, with finite scales.
fn random_weights(ty: GgmlType, n: usize, rng: &mut Rng) -> Vec<u8> {
    if !ty.is_quantized() {
        let x: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
        return quantize(ty, &x);
    }
    let ts = ty.type_size();
    let mut q: Vec<u8> = (0..n / ty.block_size() * ts)
        .map(|_| rng.next_u64() as u8)
        .collect();
    for block in q.chunks_exact_mut(ts) {
        if ty == GgmlType::Q8_K {
            block[..4].copy_from_slice(&(rng.uniform() * 0.05).to_le_bytes());
        }
        for &off in f16_fields(ty) {
            let s = rng.uniform() * 0.05;
            block[off..off + 2].copy_from_slice(&util::f16_to_le(s));
        }
    }
    q
}

/// Dot product of dequantized rows in f64, and the sum of |terms| (the scale for tolerances).
fn f64_dot(w: &[f32], a: &[f32]) -> (f64, f64) {
    w.iter().zip(a).fold((0.0, 0.0), |(s, m), (&x, &y)| {
        let p = x as f64 * y as f64;
        (s + p, m + p.abs())
    })
}

/// Extra error allowed for Q8_1-paired types: the block sum `s` is stored as an f16, so the
/// `m * s` term carries up to 2^-11 relative error per block.
fn q8_1_sum_slack(ty: GgmlType, w: &[u8], a: &[u8]) -> f64 {
    let m_of = |ty: GgmlType, blk: &[u8]| match ty {
        GgmlType::Q4_1 | GgmlType::Q5_1 => util::f16_le([blk[2], blk[3]]) as f64,
        _ => 0.0,
    };
    if !matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) {
        return 0.0;
    }
    w.chunks_exact(ty.type_size())
        .zip(a.chunks_exact(GgmlType::Q8_1.type_size()))
        .map(|(wb, ab)| (m_of(ty, wb) * util::f16_le([ab[2], ab[3]]) as f64).abs() / 1024.0)
        .sum()
}

const WEIGHT_TYPES: [GgmlType; 15] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::IQ4_NL,
    GgmlType::IQ4_XS,
];

#[test]
fn type_table_matches_ggml() {
    // (id, name, block size, type size) from ggml.h / ggml-common.h / ggml.c's type_traits.
    let table = [
        (0, "f32", 1, 4),
        (1, "f16", 1, 2),
        (2, "q4_0", 32, 18),
        (3, "q4_1", 32, 20),
        (6, "q5_0", 32, 22),
        (7, "q5_1", 32, 24),
        (8, "q8_0", 32, 34),
        (9, "q8_1", 32, 36),
        (10, "q2_K", 256, 84),
        (11, "q3_K", 256, 110),
        (12, "q4_K", 256, 144),
        (13, "q5_K", 256, 176),
        (14, "q6_K", 256, 210),
        (15, "q8_K", 256, 292),
        (20, "iq4_nl", 32, 18),
        (23, "iq4_xs", 256, 136),
        (30, "bf16", 1, 2),
    ];
    assert_eq!(table.len(), GgmlType::ALL.len());
    for (id, name, bs, ts) in table {
        let ty = GgmlType::from_u32(id).unwrap_or_else(|| panic!("id {id}"));
        assert_eq!(
            (ty.id(), ty.name(), ty.block_size(), ty.type_size()),
            (id, name, bs, ts)
        );
        assert_eq!(ty.to_string(), name);
    }
    for id in [4, 5, 16, 19, 24, 28, 31, 39, 41, 1000, u32::MAX] {
        assert_eq!(GgmlType::from_u32(id), None, "id {id}");
    }
    use GgmlType::*;
    for (ty, vd) in [
        (F32, F32),
        (F16, F16),
        (BF16, BF16),
        (Q4_0, Q8_0),
        (Q4_1, Q8_1),
        (Q5_0, Q8_0),
        (Q5_1, Q8_1),
        (Q8_0, Q8_0),
        (Q2_K, Q8_K),
        (Q3_K, Q8_K),
        (Q4_K, Q8_K),
        (Q5_K, Q8_K),
        (Q6_K, Q8_K),
        (IQ4_NL, Q8_0),
        (IQ4_XS, Q8_K),
    ] {
        assert_eq!(ty.vec_dot_type(), vd, "{ty}");
    }
}

#[test]
fn row_size_is_checked() {
    assert_eq!(GgmlType::Q4_0.row_size(4096).unwrap(), 128 * 18);
    assert_eq!(GgmlType::Q6_K.row_size(2048).unwrap(), 8 * 210);
    assert_eq!(GgmlType::F32.row_size(7).unwrap(), 28);
    assert_eq!(GgmlType::Q8_0.row_size(0).unwrap(), 0);
    assert!(GgmlType::Q4_0.row_size(33).is_err());
    assert!(GgmlType::Q4_K.row_size(640).is_err());
    assert!(GgmlType::F32.row_size(u64::MAX).is_err());
    assert!(GgmlType::Q8_0.row_size(u64::MAX / 32 * 32).is_err());
    assert_eq!(GgmlType::Q8_0.row_size(1 << 40).unwrap(), (1u64 << 35) * 34);
}

#[test]
fn block_casts_never_panic() {
    let bytes = [0u8; 100];
    assert!(BlockQ4_0::from_bytes(&bytes[..36]).is_ok_and(|b| b.len() == 2));
    assert!(BlockQ4_0::from_bytes(&bytes[..37]).is_err());
    // Any offset is fine: blocks have alignment 1.
    assert!(BlockQ8_K::from_bytes(&[0u8; 293][1..]).is_ok());
    assert!(BlockF32::from_bytes(&bytes[1..5]).is_ok());
    assert!(BlockQ4_K::from_bytes(&[]).is_ok_and(|b| b.is_empty()));
}

#[test]
fn roundtrip_error_within_llama_budgets() {
    // MAX_QUANTIZATION_TOTAL_ERROR* of test-quantize-fns.cpp.
    let test_size = 32 * 128;
    let data = generate_data(0.0, test_size, 2.0);
    for ty in GgmlType::ALL {
        let budget = match ty {
            GgmlType::Q2_K => 0.0075,
            GgmlType::Q3_K => 0.0040,
            _ => 0.002,
        };
        for (which, q) in [
            ("quantize_row", quantize(ty, &data)),
            ("quantize_row_ref", {
                let mut q = vec![0u8; ty.row_size(test_size as u64).unwrap() as usize];
                quantize_row_ref(ty, &data, &mut q).unwrap();
                q
            }),
        ] {
            let out = dequantize(ty, &q, test_size);
            let err = array_rmse(&data, &out);
            assert!(err < budget, "{ty} {which}: error {err} >= {budget}");
        }
    }
}

#[test]
fn vec_dot_error_within_llama_budgets() {
    // MAX_DOT_PRODUCT_ERROR(_LOWBIT) of test-quantize-fns.cpp, on every backend.
    let test_size = 32 * 128;
    let data1 = generate_data(0.0, test_size, 2.0);
    let data2 = generate_data(1.0, test_size, 2.0);
    let reference: f64 = data1
        .iter()
        .zip(&data2)
        .map(|(&a, &b)| a as f64 * b as f64)
        .sum();
    for ty in GgmlType::ALL {
        let budget = if ty == GgmlType::Q2_K { 0.04 } else { 0.02 };
        let w = quantize(ty, &data1);
        let a = quantize(ty.vec_dot_type(), &data2);
        for backend in Backend::available() {
            let Some(f) = vec_dot_fn_for(ty, backend) else {
                continue;
            };
            let got = f(test_size, &w, &a);
            let err = (got as f64 - reference).abs() as f32 / test_size as f32;
            assert!(
                err < budget,
                "{ty} {backend:?}: error {err} >= {budget} ({got} vs {reference})"
            );
        }
        let checked = vec_dot(ty, test_size, &w, &a).unwrap();
        assert!(
            ((checked as f64 - reference).abs() as f32 / test_size as f32) < budget,
            "{ty}"
        );
    }
}

#[test]
fn vec_dot_equals_dot_of_dequantized_rows() {
    // The integer kernels compute exactly sum(dequant(w) * dequant(a)) up to f32 rounding.
    let mut rng = Rng(7);
    for ty in GgmlType::ALL {
        for n in [ty.block_size().max(32) * 8, 4096] {
            for quantized_weights in [true, false] {
                let w = if quantized_weights {
                    quantize(ty, &rng.activations(n))
                } else {
                    random_weights(ty, n, &mut rng)
                };
                let a = quantize(ty.vec_dot_type(), &rng.activations(n));
                let wf = dequantize(ty, &w, n);
                let af = dequantize(ty.vec_dot_type(), &a, n);
                let (want, mag) = f64_dot(&wf, &af);
                let tol = 1e-4 * mag + q8_1_sum_slack(ty, &w, &a) + 1e-30;
                for backend in Backend::available() {
                    let Some(f) = vec_dot_fn_for(ty, backend) else {
                        continue;
                    };
                    let got = f(n, &w, &a) as f64;
                    assert!(
                        (got - want).abs() <= tol,
                        "{ty} {backend:?} n={n} random_bytes={}: {got} vs {want} (tol {tol})",
                        !quantized_weights
                    );
                }
            }
        }
    }
}

#[test]
fn simd_matches_scalar_on_random_data() {
    let backends: Vec<Backend> = Backend::available()
        .into_iter()
        .filter(|&b| b != Backend::Scalar)
        .collect();
    if backends.is_empty() {
        eprintln!("no SIMD backend on this CPU/build: nothing to compare");
        return;
    }
    let mut rng = Rng(42);
    for ty in WEIGHT_TYPES {
        let scalar = vec_dot_fn_for(ty, Backend::Scalar).unwrap();
        for round in 0..40 {
            let nb = 1 + (rng.next_u64() % 17) as usize;
            let n = nb * ty.block_size().max(32);
            let w = if round % 2 == 0 {
                random_weights(ty, n, &mut rng)
            } else {
                quantize(ty, &rng.activations(n))
            };
            let a = quantize(ty.vec_dot_type(), &rng.activations(n));
            let (_, mag) = f64_dot(
                &dequantize(ty, &w, n),
                &dequantize(ty.vec_dot_type(), &a, n),
            );
            let want = scalar(n, &w, &a);
            for &backend in &backends {
                let f = vec_dot_fn_for(ty, backend)
                    .unwrap_or_else(|| panic!("{ty}: no {backend:?} kernel"));
                let got = f(n, &w, &a);
                let tol = 2e-5 * mag + 1e-30;
                assert!(
                    ((got - want) as f64).abs() <= tol,
                    "{ty} {backend:?} n={n}: simd {got} vs scalar {want} (tol {tol})"
                );
            }
        }
    }
}

/// The AVX2 multi-row kernels, which `vec_dot4_fn` does not hand out where the VNNI ones run:
/// bit for bit the one-row kernel too.
#[cfg(target_arch = "x86_64")]
#[test]
fn avx2_four_row_kernels_match_one_row_kernels() {
    if !Backend::Avx2.is_available() {
        return;
    }
    let mut rng = Rng(12);
    let kernels: [(GgmlType, VecDot4Fn, VecDot4x2Fn); 4] = [
        (GgmlType::Q4_0, q4_0_avx2_x4, q4_0_avx2_x4t2),
        (GgmlType::Q4_1, q4_1_avx2_x4, q4_1_avx2_x4t2),
        (GgmlType::Q5_0, q5_0_avx2_x4, q5_0_avx2_x4t2),
        (GgmlType::Q8_0, q8_0_avx2_x4, q8_0_avx2_x4t2),
    ];
    for (ty, dot4, dot4x2) in kernels {
        let n = 4096;
        let dot = vec_dot_fn_for(ty, Backend::Avx2).unwrap();
        let rows: Vec<Vec<u8>> = (0..4).map(|_| random_weights(ty, n, &mut rng)).collect();
        let ws = [&rows[0][..], &rows[1], &rows[2], &rows[3]];
        let a = quantize(ty.vec_dot_type(), &rng.activations(n));
        let b = quantize(ty.vec_dot_type(), &rng.activations(n));
        let one = dot4(n, ws, &a);
        let two = dot4x2(n, ws, [&a, &b]);
        for (j, row) in rows.iter().enumerate() {
            let (da, db) = (dot(n, row, &a).to_bits(), dot(n, row, &b).to_bits());
            assert_eq!(one[j].to_bits(), da, "{} x4", ty.name());
            assert_eq!(two[0][j].to_bits(), da, "{} x4t2", ty.name());
            assert_eq!(two[1][j].to_bits(), db, "{} x4t2", ty.name());
        }
    }
}

#[test]
fn four_row_kernels_match_one_row_kernels() {
    let mut rng = Rng(11);
    let mut covered = 0;
    for ty in GgmlType::ALL {
        let Some(dot4) = vec_dot4_fn(ty) else {
            continue;
        };
        covered += 1;
        let n = 4096;
        let dot = vec_dot_fn(ty);
        let rows: Vec<Vec<u8>> = (0..4).map(|_| random_weights(ty, n, &mut rng)).collect();
        let a = quantize(ty.vec_dot_type(), &rng.activations(n));
        let got = dot4(n, [&rows[0], &rows[1], &rows[2], &rows[3]], &a);
        for (j, row) in rows.iter().enumerate() {
            assert_eq!(
                got[j].to_bits(),
                dot(n, row, &a).to_bits(),
                "{} row {j}",
                ty.name()
            );
        }
        // Bad lengths: NaN, no panic.
        assert!(dot4(n, [&rows[0], &rows[1], &rows[2], &rows[3][1..]], &a)[0].is_nan());
        if let Some(dot4x2) = vec_dot4x2_fn(ty) {
            let b = quantize(ty.vec_dot_type(), &rng.activations(n));
            let got = dot4x2(n, [&rows[0], &rows[1], &rows[2], &rows[3]], [&a, &b]);
            for (j, row) in rows.iter().enumerate() {
                assert_eq!(
                    got[0][j].to_bits(),
                    dot(n, row, &a).to_bits(),
                    "{} 4x2",
                    ty.name()
                );
                assert_eq!(
                    got[1][j].to_bits(),
                    dot(n, row, &b).to_bits(),
                    "{} 4x2",
                    ty.name()
                );
            }
            assert!(
                dot4x2(n, [&rows[0], &rows[1], &rows[2], &rows[3]], [&a, &b[1..]])[1][0].is_nan()
            );
        }
        if let Some(dot4x4) = vec_dot4x4_fn(ty) {
            let acts: Vec<Vec<u8>> = (0..4)
                .map(|_| quantize(ty.vec_dot_type(), &rng.activations(n)))
                .collect();
            let ws = [&rows[0][..], &rows[1], &rows[2], &rows[3]];
            let got = dot4x4(n, ws, [&acts[0], &acts[1], &acts[2], &acts[3]]);
            for (t, act) in acts.iter().enumerate() {
                for (j, row) in rows.iter().enumerate() {
                    assert_eq!(
                        got[t][j].to_bits(),
                        dot(n, row, act).to_bits(),
                        "{} 4x4",
                        ty.name()
                    );
                }
            }
            assert!(dot4x4(n, ws, [&acts[0], &acts[1], &acts[2], &acts[3][1..]])[3][0].is_nan());
        }
        if let Some(dot4x8) = vec_dot4x8_fn(ty) {
            let acts: Vec<Vec<u8>> = (0..8)
                .map(|_| quantize(ty.vec_dot_type(), &rng.activations(n)))
                .collect();
            let scales: Vec<Vec<f32>> = acts.iter().map(|a| q8_0_scales(a).collect()).collect();
            let ws = [&rows[0][..], &rows[1], &rows[2], &rows[3]];
            let a8: [&[u8]; 8] = std::array::from_fn(|t| &acts[t][..]);
            let d8: [&[f32]; 8] = std::array::from_fn(|t| &scales[t][..]);
            let got = dot4x8(n, ws, a8, d8);
            for (t, act) in acts.iter().enumerate() {
                for (j, row) in rows.iter().enumerate() {
                    assert_eq!(
                        got[t][j].to_bits(),
                        dot(n, row, act).to_bits(),
                        "{} 4x8",
                        ty.name()
                    );
                }
            }
            let mut short = d8;
            short[5] = &scales[5][1..];
            assert!(dot4x8(n, ws, a8, short)[5][0].is_nan());
        }
    }
    if Backend::best() == Backend::Avx2 {
        assert!(covered >= 4, "the AVX2 four-row kernels are not offered");
    }
}

#[test]
fn best_backend_is_used() {
    let best = Backend::best();
    assert!(best.is_available());
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c")
    {
        assert_eq!(best, Backend::Avx2);
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    assert_eq!(best, Backend::Simd128);
    #[cfg(target_arch = "aarch64")]
    if std::env::var_os("CHORD_BACKEND").is_none() {
        assert_eq!(best, Backend::Neon);
    }
    eprintln!("best backend: {best:?}");
    for ty in WEIGHT_TYPES {
        let f = vec_dot_fn(ty);
        let g = vec_dot_fn_for(ty, best)
            .or_else(|| vec_dot_fn_for(ty, Backend::Scalar))
            .unwrap();
        assert!(
            std::ptr::fn_addr_eq(f, g),
            "{ty}: vec_dot_fn is not the {best:?} kernel"
        );
    }
}

#[test]
fn activation_quantizers_are_identical_on_every_backend() {
    let mut rng = Rng(3);
    for ty in [
        GgmlType::Q8_0,
        GgmlType::Q8_1,
        GgmlType::Q8_K,
        GgmlType::F16,
        GgmlType::BF16,
    ] {
        for round in 0..30 {
            let n = 256 * (1 + round % 4);
            let mut x = rng.activations(n);
            if round % 5 == 0 {
                x[..32].fill(0.0);
            }
            if round % 7 == 0 {
                // Ties: amax 127 gives a scale of 1, so x.5 values round to even.
                for (i, v) in x[32..64].iter_mut().enumerate() {
                    *v = if i == 0 {
                        127.0
                    } else {
                        (i as f32 - 16.0) + 0.5
                    };
                }
            }
            if round % 11 == 0 {
                x[64..96].fill(-3.0); // negative maximum, repeated
            }
            if round % 3 == 1 {
                // +a and -a both present: Q8_K's sign depends on which comes first.
                let (first, second) = if round % 2 == 0 {
                    (1000.0, -1000.0)
                } else {
                    (-1000.0, 1000.0)
                };
                x[100] = first;
                x[200] = second;
            }
            let mut want = vec![0u8; ty.row_size(n as u64).unwrap() as usize];
            quantize_row_with(Backend::Scalar, ty, &x, &mut want).unwrap();
            for backend in Backend::available() {
                let mut got = vec![0xAAu8; want.len()];
                quantize_row_with(backend, ty, &x, &mut got).unwrap();
                assert_eq!(got, want, "{ty} {backend:?} round {round}");
            }
            if ty == GgmlType::Q8_K {
                // llama.cpp quantizes Q8_K activations with the reference quantizer itself.
                let mut r = vec![0u8; want.len()];
                quantize_row_ref(ty, &x, &mut r).unwrap();
                assert_eq!(
                    r, want,
                    "Q8_K activation quantizer must equal quantize_row_q8_K_ref"
                );
            }
        }
    }
}

#[test]
fn q8_activation_quantizers_follow_llama_x86() {
    // x86 llama.cpp: id = 127/amax and rounding half to even; the _ref: 1/d and half away from zero.
    let mut x = vec![0f32; 32];
    x[0] = 127.0;
    x[1] = 2.5;
    x[2] = -3.5;
    x[3] = 0.5;
    let mut act = vec![0u8; 34];
    let mut reff = vec![0u8; 34];
    quantize_row(GgmlType::Q8_0, &x, &mut act).unwrap();
    quantize_row_ref(GgmlType::Q8_0, &x, &mut reff).unwrap();
    let (act, reff) = (
        BlockQ8_0::from_bytes(&act).unwrap()[0],
        BlockQ8_0::from_bytes(&reff).unwrap()[0],
    );
    assert_eq!(&act.qs[..4], &[127, 2, -4, 0]);
    assert_eq!(&reff.qs[..4], &[127, 3, -4, 1]);
    assert_eq!(act.d, reff.d);

    let mut act1 = vec![0u8; 36];
    quantize_row(GgmlType::Q8_1, &x, &mut act1).unwrap();
    let b = BlockQ8_1::from_bytes(&act1).unwrap()[0];
    assert_eq!(&b.qs[..4], &[127, 2, -4, 0]);
    let sum: i32 = b.qs.iter().map(|&q| q as i32).sum();
    assert_eq!(b.s, util::f16_to_le(util::f16_le(b.d) * sum as f32));
}

#[test]
fn q8_k_picks_the_signed_maximum() {
    // The scale is -127/max with max the value of largest magnitude (first one on ties), so the
    // extreme value maps to -127 exactly and the rest follow.
    let mut x = vec![0.25f32; 256];
    x[10] = -2.0;
    x[20] = 2.0;
    let mut q = vec![0u8; 292];
    quantize_row(GgmlType::Q8_K, &x, &mut q).unwrap();
    let b = BlockQ8_K::from_bytes(&q).unwrap()[0];
    // max = x[10] = -2, so iscale = 63.5 and d = 1/63.5.
    assert_eq!(b.d(), 1.0 / 63.5);
    assert_eq!(b.qs[10], -127);
    assert_eq!(b.qs[20], 127);
    assert_eq!(b.qs[0], 16); // 0.25 * 63.5 = 15.875
    assert_eq!(b.bsum(0), 15 * 16 - 127);
}

#[test]
fn dequantize_handles_special_scales() {
    // A zero scale gives zeros; an infinite one gives infinities or NaN (0 * inf), never a panic.
    for ty in WEIGHT_TYPES.into_iter().filter(|t| t.is_quantized()) {
        let n = ty.block_size();
        let mut q = vec![0x5Au8; ty.type_size()];
        for &off in f16_fields(ty) {
            q[off..off + 2].copy_from_slice(&0u16.to_le_bytes());
        }
        let y = dequantize(ty, &q, n);
        assert!(y.iter().all(|v| *v == 0.0), "{ty}: {y:?}");
        for &off in f16_fields(ty) {
            q[off..off + 2].copy_from_slice(&0x7C00u16.to_le_bytes());
        }
        let _ = dequantize(ty, &q, n);
    }
}

#[test]
fn bad_inputs_are_errors() {
    for ty in GgmlType::ALL {
        let bs = ty.block_size();
        let ts = ty.type_size();
        let n = 2 * bs.max(32);
        let row = ty.row_size(n as u64).unwrap() as usize;
        let x = vec![0.5f32; n];
        let mut q = vec![0u8; row];
        let mut y = vec![0f32; n];

        // Wrong byte counts.
        assert!(dequantize_row(ty, &q[..row - 1], &mut y).is_err(), "{ty}");
        assert!(
            dequantize_row(ty, &vec![0u8; row + ts], &mut y).is_err(),
            "{ty}"
        );
        assert!(
            quantize_row(ty, &x, &mut vec![0u8; row + 1]).is_err(),
            "{ty}"
        );
        assert!(quantize_row_ref(ty, &x, &mut q[..row - 1]).is_err(), "{ty}");
        // Lengths that are not whole blocks.
        if bs > 1 {
            assert!(quantize_row(ty, &x[..n - 1], &mut q).is_err(), "{ty}");
            assert!(dequantize_row(ty, &q, &mut y[..n - 1]).is_err(), "{ty}");
        }
        // Backends that cannot run here.
        for backend in [Backend::Avx2, Backend::Simd128, Backend::Neon] {
            if !backend.is_available() {
                assert!(quantize_row_with(backend, ty, &x, &mut q).is_err());
                assert!(vec_dot_fn_for(ty, backend).is_none());
            }
        }
        // A correct call still works.
        quantize_row(ty, &x, &mut q).unwrap();
        dequantize_row(ty, &q, &mut y).unwrap();

        // vec_dot: checked entry errors, raw kernels return NaN.
        let at = ty.vec_dot_type();
        let arow = at.row_size(n as u64).unwrap() as usize;
        let a = vec![0u8; arow];
        assert!(vec_dot(ty, n, &q, &a).is_ok(), "{ty}");
        assert!(vec_dot(ty, n, &q[..row - 1], &a).is_err(), "{ty}");
        assert!(vec_dot(ty, n, &q, &a[..arow - 1]).is_err(), "{ty}");
        assert!(vec_dot(ty, n + 1, &q, &a).is_err(), "{ty}");
        assert!(vec_dot(ty, usize::MAX, &q, &a).is_err(), "{ty}");
        for backend in Backend::available() {
            let Some(f) = vec_dot_fn_for(ty, backend) else {
                continue;
            };
            assert!(f(n, &q, &a).is_finite(), "{ty} {backend:?}");
            assert!(f(n, &q[..row - 1], &a).is_nan(), "{ty} {backend:?}");
            assert!(f(n, &q, &a[1..]).is_nan(), "{ty} {backend:?}");
            assert!(f(n - bs.max(32), &q, &a).is_nan(), "{ty} {backend:?}");
            assert!(f(usize::MAX, &q, &a).is_nan(), "{ty} {backend:?}");
            if bs > 1 {
                assert!(f(n + 1, &q, &a).is_nan(), "{ty} {backend:?}");
            }
        }
    }
    // Q4_K activations must be Q8_K, not Q8_0-sized.
    let w = vec![0u8; 144];
    assert!(vec_dot(GgmlType::Q4_K, 256, &w, &[0u8; 34 * 8]).is_err());
}

#[test]
fn garbage_bytes_never_panic() {
    let mut rng = Rng(99);
    for ty in GgmlType::ALL {
        let n = 4 * ty.block_size().max(32);
        let q: Vec<u8> = (0..ty.row_size(n as u64).unwrap())
            .map(|_| rng.next_u64() as u8)
            .collect();
        let a: Vec<u8> = (0..ty.vec_dot_type().row_size(n as u64).unwrap())
            .map(|_| rng.next_u64() as u8)
            .collect();
        let _ = dequantize(ty, &q, n);
        for backend in Backend::available() {
            if let Some(f) = vec_dot_fn_for(ty, backend) {
                let _ = f(n, &q, &a);
            }
        }
        let x: Vec<f32> = (0..n)
            .map(|_| f32::from_bits(rng.next_u64() as u32))
            .collect();
        let mut out = vec![0u8; q.len()];
        quantize_row(ty, &x, &mut out).unwrap();
        quantize_row_ref(ty, &x, &mut out).unwrap();
    }
}
