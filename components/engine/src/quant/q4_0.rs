//! Q4_0: blocks of 32 values, `x = d * (q - 8)` with 4-bit `q` and an f16 scale `d`.

use super::util::{Pod, f16_le, f16_to_le};
use super::{BlockQ8_0, GgmlType, QuantBlock};

/// ggml's `block_q4_0`: f16 scale, then 16 bytes of nibbles (value j in the low nibble of
/// byte j, value j+16 in the high nibble).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockQ4_0 {
    /// Scale (f16, little-endian).
    pub d: [u8; 2],
    /// Quants, two per byte.
    pub qs: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 18);
// SAFETY: byte arrays only.
unsafe impl Pod for BlockQ4_0 {}
impl super::sealed::Sealed for BlockQ4_0 {}

impl QuantBlock for BlockQ4_0 {
    const TYPE: GgmlType = GgmlType::Q4_0;
    const BLOCK_SIZE: usize = 32;
    type VecDot = BlockQ8_0;

    fn dequantize(blocks: &[Self], dst: &mut [f32]) {
        scalar::dequantize(blocks, dst)
    }
    fn quantize(src: &[f32], dst: &mut [Self]) {
        scalar::quantize(src, dst)
    }
    fn vec_dot(w: &[Self], a: &[BlockQ8_0]) -> f32 {
        scalar::vec_dot(w, a)
    }
}

pub(crate) mod scalar {
    use super::*;

    /// Port of `dequantize_row_q4_0` (ggml-quants.c).
    pub fn dequantize(x: &[BlockQ4_0], y: &mut [f32]) {
        for (b, y) in x.iter().zip(y.chunks_exact_mut(32)) {
            let d = f16_le(b.d);
            for j in 0..16 {
                let x0 = (b.qs[j] & 0x0F) as i32 - 8;
                let x1 = (b.qs[j] >> 4) as i32 - 8;
                y[j] = x0 as f32 * d;
                y[j + 16] = x1 as f32 * d;
            }
        }
    }

    /// Port of `quantize_row_q4_0_ref` (ggml-quants.c).
    pub fn quantize(x: &[f32], y: &mut [BlockQ4_0]) {
        for (x, b) in x.chunks_exact(32).zip(y.iter_mut()) {
            let mut amax = 0.0f32;
            let mut max = 0.0f32;
            for &v in x {
                if amax < v.abs() {
                    amax = v.abs();
                    max = v;
                }
            }
            let d = max / -8.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            b.d = f16_to_le(d);
            for j in 0..16 {
                let x0 = x[j] * id;
                let x1 = x[16 + j] * id;
                let xi0 = ((x0 + 8.5) as i8).min(15) as u8;
                let xi1 = ((x1 + 8.5) as i8).min(15) as u8;
                b.qs[j] = xi0 | (xi1 << 4);
            }
        }
    }

    /// Port of `ggml_vec_dot_q4_0_q8_0_generic` (ggml-cpu/quants.c).
    pub fn vec_dot(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
        let mut sumf = 0.0f32;
        for (xb, yb) in x.iter().zip(y) {
            let mut sumi0 = 0i32;
            let mut sumi1 = 0i32;
            for j in 0..16 {
                let v0 = (xb.qs[j] & 0x0F) as i32 - 8;
                let v1 = (xb.qs[j] >> 4) as i32 - 8;
                sumi0 += v0 * yb.qs[j] as i32;
                sumi1 += v1 * yb.qs[j + 16] as i32;
            }
            let sumi = sumi0 + sumi1;
            sumf += sumi as f32 * f16_le(xb.d) * f16_le(yb.d);
        }
        sumf
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use super::super::x86::*;
    use super::*;
    use core::arch::x86_64::*;

    /// Port of `ggml_vec_dot_q4_0_q8_0` (ggml-cpu/arch/x86/quants.c, AVX2 branch).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn vec_dot(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        for (xb, yb) in x.iter().zip(y) {
            let d = _mm256_set1_ps(h2f_first(xb) * h2f_first(yb));
            let qx = _mm256_sub_epi8(bytes_from_nibbles_32(&xb.qs), _mm256_set1_epi8(8));
            // SAFETY: `qs` is 32 bytes.
            let qy = unsafe { load256(yb.qs.as_ptr()) };
            let q = mul_sum_i8_pairs_float(qx, qy);
            acc = _mm256_fmadd_ps(d, q, acc);
        }
        hsum_float_8(acc)
    }

    /// Four rows, one activation row: [`vec_dot`] of each, bit for bit (see [`rows_q8_0`]).
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn vec_dot_x4(x: [&[BlockQ4_0]; 4], y: &[BlockQ8_0]) -> [f32; 4] {
        rows_q8_0::<_, 1, 8>(x, [y], |xb| qu(xb))[0]
    }

    /// Four rows, two activation rows (prefill): [`vec_dot`] of each pair, bit for bit.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn vec_dot_x4t2(x: [&[BlockQ4_0]; 4], y: [&[BlockQ8_0]; 2]) -> [[f32; 4]; 2] {
        rows_q8_0::<_, 2, 8>(x, y, |xb| qu(xb))
    }

    /// This block's values as `u` with `qx = u - 8` (see [`rows_q8_0`]).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn qu(xb: &BlockQ4_0) -> __m256i {
        bytes_from_nibbles_32(&xb.qs)
    }

    /// [`vec_dot`] of four rows with `T` activation rows, AVX-512 VNNI sums, bit for bit.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA, F16C and AVX-512 F/VL/VNNI.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
    pub unsafe fn vec_dot_x4_vnni<const T: usize>(
        x: [&[BlockQ4_0]; 4],
        y: [&[BlockQ8_0]; T],
    ) -> [[f32; 4]; T] {
        rows_q8_0_vnni::<_, T, 8>(x, y, |xb| qu(xb))
    }

    /// [`vec_dot`] of four rows with eight activation rows whose block scales are `dy`
    /// (512-bit VNNI, see [`rows_q8_0_x4t8`]), bit for bit.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA, F16C and AVX-512 F/BW/VL/VNNI.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub unsafe fn vec_dot_x4t8_vnni(
        x: [&[BlockQ4_0]; 4],
        y: [&[BlockQ8_0]; 8],
        dy: [&[f32]; 8],
    ) -> [[f32; 4]; 8] {
        // SAFETY: the features are enabled here.
        unsafe {
            rows_q8_0_x4t8(x, y, dy, |a, b| {
                _mm512_sub_epi8(nibbles_x2(&a.qs, &b.qs), _mm512_set1_epi8(8))
            })
        }
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub(crate) mod simd128 {
    use super::super::wasm::*;
    use super::*;
    use core::arch::wasm32::*;

    /// Bit-identical twin of the AVX2 `ggml_vec_dot_q4_0_q8_0` (ggml-cpu/arch/x86/quants.c; see
    /// `avx2::vec_dot`): eight lanes of four values, one fused multiply-add per block.
    pub fn vec_dot(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
        let m4 = i8x16_splat(0x0F);
        let s8 = i8x16_splat(8);
        let mut acc = Acc8::zero();
        for (xb, yb) in x.iter().zip(y) {
            // SAFETY: `qs` of Q4_0 is 16 bytes, `qs` of Q8_0 is 32 bytes.
            let (raw, y0, y1) = unsafe {
                (
                    load(xb.qs.as_ptr()),
                    load(yb.qs.as_ptr()),
                    load(yb.qs.as_ptr().add(16)),
                )
            };
            // Values 0..16 are the low nibbles, 16..32 the high ones.
            let lo = i8x16_sub(v128_and(raw, m4), s8);
            let hi = i8x16_sub(u8x16_shr(raw, 4), s8);
            let d = f16_le(xb.d) * f16_le(yb.d);
            acc.fmadd_i32::<false>(d, dot4_i8(lo, y0), dot4_i8(hi, y1));
        }
        acc.hsum()
    }
    /// [`vec_dot`] of four rows with the same activations, bit for bit (see `rows_q8_0`).
    pub fn vec_dot_x4(x: [&[BlockQ4_0]; 4], y: &[BlockQ8_0]) -> [f32; 4] {
        let m4 = i8x16_splat(0x0F);
        rows_q8_0::<_, 8>(
            x,
            y,
            |xb| xb.d,
            |xb| {
                // SAFETY: `qs` of Q4_0 is 16 bytes.
                let raw = unsafe { load(xb.qs.as_ptr()) };
                (v128_and(raw, m4), u8x16_shr(raw, 4))
            },
        )
    }
}

#[cfg(target_arch = "aarch64")]
pub(crate) mod neon {
    use super::super::neon::*;
    use super::*;
    use core::arch::aarch64::*;

    /// Port of `ggml_vec_dot_q4_0_q8_0` (ggml-cpu/arch/arm/quants.c, `__ARM_NEON` branch).
    #[target_feature(enable = "neon")]
    pub fn vec_dot(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
        let s8b = vdupq_n_s8(8);
        let (sumf, done) = q8_pairs(
            x,
            y,
            |xb| {
                let (l, h) = nibbles(&xb.qs);
                (
                    vsubq_s8(vreinterpretq_s8_u8(l), s8b),
                    vsubq_s8(vreinterpretq_s8_u8(h), s8b),
                )
            },
            |yb| &yb.qs,
            |xb, yb| h2f(xb.d) * h2f(yb.d),
        );
        sumf + scalar::vec_dot(&x[done..], &y[done..])
    }
}
