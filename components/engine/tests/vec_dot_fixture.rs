//! The SIMD dot products against results recorded, as f32 bit patterns, from the AVX2 kernels
//! (ports of llama.cpp's x86 kernels, which the engine matches end to end): natively the AVX2
//! kernels must still give exactly those bits, and on wasm32 the SIMD128 kernels must too — so
//! the component computes what native does and what llama.cpp does.
//!
//! The inputs are generated here, identically on every target (integer generator, f32 basic
//! arithmetic only, the engine's own quantizers), and each case carries a checksum of its input
//! bytes so that a generation difference is reported as such. Regenerate on x86_64 with AVX2:
//! `cargo test -p chord-engine --release --test vec_dot_fixture -- --ignored write_vec_dot_fixture`.

use chord_engine::quant::{Backend, GgmlType, quantize_row, vec_dot_fn_for};
use std::fmt::Write as _;

const FIXTURE: &str = include_str!("../../../tests/fixtures/quant/vec_dot_avx2.json");
const FIXTURE_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/quant/vec_dot_avx2.json"
);

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1): an exact integer-to-float conversion and a power-of-two scaling.
    fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    /// Roughly normal: a scaled sum of 4 uniforms.
    fn normal(&mut self) -> f32 {
        (self.uniform() + self.uniform() + self.uniform() + self.uniform()) * 0.87
    }
    /// Activation-like values of magnitude `scale`, with the occasional outlier.
    fn activations(&mut self, n: usize, scale: f32) -> Vec<f32> {
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
    /// An IEEE half with a random sign and mantissa and a magnitude in [2^-10, 2^0).
    fn f16_bits(&mut self) -> [u8; 2] {
        let r = self.next_u64();
        let bits = ((r & 1) << 15) | ((5 + (r >> 1) % 10) << 10) | ((r >> 8) & 0x3ff);
        (bits as u16).to_le_bytes()
    }
}

/// Byte offsets of the f16 scale fields of a weight block (set to finite values).
fn f16_fields(ty: GgmlType) -> &'static [usize] {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 | GgmlType::IQ4_NL | GgmlType::IQ4_XS => {
            &[0]
        }
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        GgmlType::Q2_K => &[80, 82],
        GgmlType::Q3_K => &[108],
        GgmlType::Q6_K => &[208],
        _ => &[],
    }
}

const TYPES: [GgmlType; 15] = [
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

struct Case {
    ty: GgmlType,
    n: usize,
    /// How the weights were made: `random` bytes (finite scales) or `quantized` values.
    kind: &'static str,
    /// The magnitude of the activations (1e-35: products in the f32 subnormal range).
    scale: f32,
    w: Vec<u8>,
    a: Vec<u8>,
}

fn quantize(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let mut q = vec![0u8; usize::try_from(ty.row_size(x.len() as u64).unwrap()).unwrap()];
    quantize_row(ty, x, &mut q).unwrap();
    q
}

/// The cases, in a fixed order, with their inputs.
fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for (ti, ty) in TYPES.into_iter().enumerate() {
        let lens: &[usize] = match ty.block_size() {
            1 => &[1, 7, 32, 37, 200, 1024, 4099],
            32 => &[32, 64, 96, 576, 1536, 4096],
            _ => &[256, 512, 768, 1536, 4096],
        };
        let scales: &[f32] = if ty.block_size() == 32 {
            &[0.01, 0.3, 1.0, 4.0]
        } else {
            &[0.01, 0.3, 1.0, 4.0, 1e-35]
        };
        for (li, &n) in lens.iter().enumerate() {
            for kind in ["random", "quantized"] {
                let seed = ((ti as u64) << 32) | ((li as u64) << 8) | u64::from(kind == "random");
                let mut rng = Rng(seed);
                let scale = scales[(rng.next_u64() % scales.len() as u64) as usize];
                let w = if kind == "quantized" || !ty.is_quantized() {
                    // Float weights: with tiny activations, products below 2^-126.
                    let wscale = if ty.is_quantized() || scale > 1e-30 {
                        1.0
                    } else {
                        1e-5
                    };
                    quantize(ty, &rng.activations(n, wscale))
                } else {
                    let ts = ty.type_size();
                    let mut w: Vec<u8> = (0..n / ty.block_size() * ts)
                        .map(|_| rng.next_u64() as u8)
                        .collect();
                    for block in w.chunks_exact_mut(ts) {
                        for &off in f16_fields(ty) {
                            block[off..off + 2].copy_from_slice(&rng.f16_bits());
                        }
                    }
                    w
                };
                let a = quantize(ty.vec_dot_type(), &rng.activations(n, scale));
                out.push(Case {
                    ty,
                    n,
                    kind,
                    scale,
                    w,
                    a,
                });
            }
        }
    }
    out
}

/// FNV-1a of the weights then the activations.
fn checksum(c: &Case) -> String {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &b in c.w.iter().chain(&c.a) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn dot(backend: Backend, c: &Case) -> f32 {
    let f = vec_dot_fn_for(c.ty, backend)
        .unwrap_or_else(|| panic!("no {backend:?} kernel for {}", c.ty));
    f(c.n, &c.w, &c.a)
}

/// The SIMD backend of this build, if the machine has it.
fn simd_backend() -> Option<Backend> {
    [Backend::Avx2, Backend::Simd128]
        .into_iter()
        .find(|b| b.is_available())
}

#[test]
fn simd_vec_dot_gives_the_recorded_avx2_bits() {
    let Some(backend) = simd_backend() else {
        eprintln!("no AVX2 or SIMD128 here: nothing to compare");
        return;
    };
    let fixture: serde_json::Value = serde_json::from_str(FIXTURE).expect("fixture JSON");
    let recorded = fixture["cases"].as_array().expect("cases");
    let cases = cases();
    assert_eq!(
        recorded.len(),
        cases.len(),
        "case count: regenerate the fixture"
    );
    let mut bad = Vec::new();
    for (c, r) in cases.iter().zip(recorded) {
        let what = format!("{} n={} {} x{:e}", c.ty, c.n, c.kind, c.scale);
        assert_eq!(
            r["type"].as_str(),
            Some(c.ty.name()),
            "{what}: fixture order"
        );
        assert_eq!(r["n"].as_u64(), Some(c.n as u64), "{what}: fixture order");
        assert_eq!(
            r["input_fnv1a"].as_str(),
            Some(checksum(c).as_str()),
            "{what}: the generated inputs differ from the recorded ones"
        );
        let want = u32::from_str_radix(r["bits"].as_str().expect("bits"), 16).expect("hex");
        let got = dot(backend, c);
        if got.to_bits() != want {
            bad.push(format!(
                "{what}: {backend:?} {got:e} ({:08x}), AVX2 recorded {:e} ({want:08x})",
                got.to_bits(),
                f32::from_bits(want)
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {} dot products differ:\n{}",
        bad.len(),
        cases.len(),
        bad.join("\n")
    );
}

/// Writes the fixture from this machine's AVX2 kernels.
#[test]
#[ignore = "regenerates tests/fixtures/quant/vec_dot_avx2.json (x86_64 with AVX2)"]
fn write_vec_dot_fixture() {
    assert!(
        Backend::Avx2.is_available(),
        "the fixture records the AVX2 kernels"
    );
    let mut s = String::from("{\n");
    s.push_str(
        "  \"about\": \"vec_dot results of the AVX2 kernels (ports of the AVX2 branches of \
         llama.cpp's ggml-cpu/arch/x86/quants.c and ggml_vec_dot_f32/f16/bf16), as f32 bits, \
         for the inputs that components/engine/tests/vec_dot_fixture.rs generates\",\n",
    );
    s.push_str(
        "  \"generated_by\": \"cargo test -p chord-engine --release --test vec_dot_fixture -- \
         --ignored write_vec_dot_fixture\",\n",
    );
    s.push_str("  \"cases\": [\n");
    let cases = cases();
    for (i, c) in cases.iter().enumerate() {
        let v = dot(Backend::Avx2, c);
        writeln!(
            s,
            "    {{\"type\": \"{}\", \"n\": {}, \"weights\": \"{}\", \"act_scale\": {:e}, \
             \"input_fnv1a\": \"{}\", \"bits\": \"{:08x}\", \"value\": \"{:e}\"}}{}",
            c.ty.name(),
            c.n,
            c.kind,
            c.scale,
            checksum(c),
            v.to_bits(),
            v,
            if i + 1 < cases.len() { "," } else { "" }
        )
        .unwrap();
    }
    s.push_str("  ]\n}\n");
    std::fs::write(FIXTURE_PATH, s).expect("write the fixture");
}
