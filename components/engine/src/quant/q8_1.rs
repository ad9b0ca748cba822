//! Q8_1: blocks of 32 values, `x = d * q`, plus `s = d * sum(q)`. The activation type of Q4_1
//! and Q5_1 (the sum folds their min term into one multiply per block).

use super::util::{Pod, f16_le, f16_to_le, round_act, sat_i8};
use super::{Backend, GgmlType, QuantBlock};

/// ggml's `block_q8_1`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockQ8_1 {
    /// Scale (f16).
    pub d: [u8; 2],
    /// `d * sum(qs)` (f16).
    pub s: [u8; 2],
    /// Quants.
    pub qs: [i8; 32],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_1>() == 36);
// SAFETY: byte arrays only.
unsafe impl Pod for BlockQ8_1 {}
impl super::sealed::Sealed for BlockQ8_1 {}

impl QuantBlock for BlockQ8_1 {
    const TYPE: GgmlType = GgmlType::Q8_1;
    const BLOCK_SIZE: usize = 32;
    type VecDot = BlockQ8_1;

    /// ggml has no `dequantize_row_q8_1`; this is `d * q`, like Q8_0.
    fn dequantize(blocks: &[Self], dst: &mut [f32]) {
        scalar::dequantize(blocks, dst)
    }
    fn quantize(src: &[f32], dst: &mut [Self]) {
        scalar::quantize(src, dst)
    }
    fn vec_dot(w: &[Self], a: &[BlockQ8_1]) -> f32 {
        scalar::vec_dot(w, a)
    }
}

/// The activation quantizer on `backend` (llama.cpp's x86 `quantize_row_q8_1`). All backends
/// write the same bytes. The caller checks lengths and availability.
pub(crate) fn quantize_act(backend: Backend, src: &[f32], dst: &mut [BlockQ8_1]) {
    match backend {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `quantize_row_with` checked that AVX2 is available.
        Backend::Avx2 => unsafe { avx2::quantize_act(src, dst) },
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        Backend::Simd128 => simd128::quantize_act(src, dst),
        _ => scalar::quantize_act(src, dst),
    }
}

pub(crate) mod scalar {
    use super::*;

    /// `d * q` for each value.
    pub fn dequantize(x: &[BlockQ8_1], y: &mut [f32]) {
        for (b, y) in x.iter().zip(y.chunks_exact_mut(32)) {
            let d = f16_le(b.d);
            for (yj, &q) in y.iter_mut().zip(&b.qs) {
                *yj = q as f32 * d;
            }
        }
    }

    /// Port of `quantize_row_q8_1_ref` (ggml-quants.c): `id = 1/d`, round half away from zero.
    pub fn quantize(x: &[f32], y: &mut [BlockQ8_1]) {
        for (x, b) in x.chunks_exact(32).zip(y.iter_mut()) {
            let mut amax = 0.0f32;
            for &v in x {
                let a = v.abs();
                amax = if amax > a { amax } else { a };
            }
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            b.d = f16_to_le(d);
            let mut sum = 0i32;
            for j in 0..16 {
                let v0 = x[j] * id;
                let v1 = x[16 + j] * id;
                b.qs[j] = v0.round() as i8;
                b.qs[16 + j] = v1.round() as i8;
                sum += b.qs[j] as i32 + b.qs[16 + j] as i32;
            }
            b.s = f16_to_le(sum as f32 * d);
        }
    }

    /// Scalar twin of llama.cpp's x86 `quantize_row_q8_1` (ggml-cpu/arch/x86/quants.c):
    /// `id = 127/amax`, round half to even, `s = d * sum`. Bit-identical to the SIMD versions.
    pub fn quantize_act(x: &[f32], y: &mut [BlockQ8_1]) {
        for (x, b) in x.chunks_exact(32).zip(y.iter_mut()) {
            let mut amax = 0.0f32;
            for &v in x {
                amax = amax.max(v.abs());
            }
            let d = amax / 127.0;
            b.d = f16_to_le(d);
            let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
            let mut sum = 0i32;
            for (q, &v) in b.qs.iter_mut().zip(x) {
                let i = round_act(v * id);
                sum = sum.wrapping_add(i);
                *q = sat_i8(i);
            }
            b.s = f16_to_le(d * sum as f32);
        }
    }

    /// Integer dot product of two Q8_1 rows (llama.cpp has none; used only for completeness).
    pub fn vec_dot(x: &[BlockQ8_1], y: &[BlockQ8_1]) -> f32 {
        let mut sumf = 0.0f32;
        for (xb, yb) in x.iter().zip(y) {
            let mut sumi = 0i32;
            for j in 0..32 {
                sumi += xb.qs[j] as i32 * yb.qs[j] as i32;
            }
            sumf += sumi as f32 * (f16_le(xb.d) * f16_le(yb.d));
        }
        sumf
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use super::super::q8_0::avx2::{load_block_amax, pack_store, round_to_i32};
    use super::super::x86::hsum_i32_8;
    use super::*;
    use core::arch::x86_64::*;

    /// Port of the AVX2 branch of `quantize_row_q8_1` (ggml-cpu/arch/x86/quants.c).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn quantize_act(x: &[f32], y: &mut [BlockQ8_1]) {
        for (x, b) in x.chunks_exact(32).zip(y.iter_mut()) {
            let Ok(x) = <&[f32; 32]>::try_from(x) else {
                continue;
            };
            let (v, max_scalar) = load_block_amax(x);
            let d = max_scalar / 127.0;
            b.d = f16_to_le(d);
            let id = if max_scalar != 0.0 {
                127.0 / max_scalar
            } else {
                0.0
            };
            let i = round_to_i32(v, id);
            let sum = hsum_i32_8(_mm256_add_epi32(
                _mm256_add_epi32(i[0], i[1]),
                _mm256_add_epi32(i[2], i[3]),
            ));
            b.s = f16_to_le(d * sum as f32);
            pack_store(i, &mut b.qs);
        }
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub(crate) mod simd128 {
    use super::super::q8_0::simd128::{load_block_amax, round_pack};
    use super::*;

    /// SIMD128 twin of llama.cpp's x86 `quantize_row_q8_1` (same bytes as `scalar::quantize_act`).
    pub fn quantize_act(x: &[f32], y: &mut [BlockQ8_1]) {
        for (x, b) in x.chunks_exact(32).zip(y.iter_mut()) {
            let Ok(x) = <&[f32; 32]>::try_from(x) else {
                continue;
            };
            let (v, amax) = load_block_amax(x);
            let d = amax / 127.0;
            b.d = f16_to_le(d);
            let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
            let sum = round_pack(v, id, &mut b.qs);
            b.s = f16_to_le(d * sum as f32);
        }
    }
}
