//! Q5_0: blocks of 32 values, `x = d * (q - 16)` with 5-bit `q` (low nibbles in `qs`, fifth bits
//! in `qh`) and an f16 scale.

use super::util::{Pod, f16_le, f16_to_le};
use super::{BlockQ8_0, GgmlType, QuantBlock};

/// ggml's `block_q5_0`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockQ5_0 {
    /// Scale (f16).
    pub d: [u8; 2],
    /// Fifth bit of each quant (bit j = value j), little-endian u32.
    pub qh: [u8; 4],
    /// Low nibbles (value j low, j+16 high).
    pub qs: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == 22);
// SAFETY: byte arrays only.
unsafe impl Pod for BlockQ5_0 {}
impl super::sealed::Sealed for BlockQ5_0 {}

impl QuantBlock for BlockQ5_0 {
    const TYPE: GgmlType = GgmlType::Q5_0;
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

    /// Port of `dequantize_row_q5_0` (ggml-quants.c).
    pub fn dequantize(x: &[BlockQ5_0], y: &mut [f32]) {
        for (b, y) in x.iter().zip(y.chunks_exact_mut(32)) {
            let d = f16_le(b.d);
            let qh = u32::from_le_bytes(b.qh);
            for j in 0..16 {
                let xh_0 = (((qh >> j) << 4) & 0x10) as u8;
                let xh_1 = ((qh >> (j + 12)) & 0x10) as u8;
                let x0 = ((b.qs[j] & 0x0F) | xh_0) as i32 - 16;
                let x1 = ((b.qs[j] >> 4) | xh_1) as i32 - 16;
                y[j] = x0 as f32 * d;
                y[j + 16] = x1 as f32 * d;
            }
        }
    }

    /// Port of `quantize_row_q5_0_ref` (ggml-quants.c).
    pub fn quantize(x: &[f32], y: &mut [BlockQ5_0]) {
        for (x, b) in x.chunks_exact(32).zip(y.iter_mut()) {
            let mut amax = 0.0f32;
            let mut max = 0.0f32;
            for &v in x {
                if amax < v.abs() {
                    amax = v.abs();
                    max = v;
                }
            }
            let d = max / -16.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            b.d = f16_to_le(d);
            let mut qh = 0u32;
            for j in 0..16 {
                let x0 = x[j] * id;
                let x1 = x[16 + j] * id;
                let xi0 = ((x0 + 16.5) as i8).min(31) as u8;
                let xi1 = ((x1 + 16.5) as i8).min(31) as u8;
                b.qs[j] = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4);
                qh |= (((xi0 & 0x10) >> 4) as u32) << j;
                qh |= (((xi1 & 0x10) >> 4) as u32) << (j + 16);
            }
            b.qh = qh.to_le_bytes();
        }
    }

    /// Port of `ggml_vec_dot_q5_0_q8_0_generic` (ggml-cpu/quants.c).
    pub fn vec_dot(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> f32 {
        let mut sumf = 0.0f32;
        for (xb, yb) in x.iter().zip(y) {
            let qh = u32::from_le_bytes(xb.qh);
            let mut sumi0 = 0i32;
            let mut sumi1 = 0i32;
            for j in 0..16 {
                let xh_0 = (((qh & (1 << j)) >> j) << 4) as u8;
                let xh_1 = ((qh & (1 << (j + 16))) >> (j + 12)) as u8;
                let x0 = (((xb.qs[j] & 0x0F) | xh_0) as i32) - 16;
                let x1 = (((xb.qs[j] >> 4) | xh_1) as i32) - 16;
                sumi0 += x0 * yb.qs[j] as i32;
                sumi1 += x1 * yb.qs[j + 16] as i32;
            }
            let sumi = sumi0 + sumi1;
            sumf += (f16_le(xb.d) * f16_le(yb.d)) * sumi as f32;
        }
        sumf
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use super::super::x86::*;
    use super::*;
    use core::arch::x86_64::*;

    /// Port of `ggml_vec_dot_q5_0_q8_0` (ggml-cpu/arch/x86/quants.c, AVX2 branch).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn vec_dot(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        for (xb, yb) in x.iter().zip(y) {
            let d = _mm256_set1_ps(h2f_first(xb) * h2f_first(yb));
            let mut qx = bytes_from_nibbles_32(&xb.qs);
            let mut bxhi = bytes_from_bits_32(&xb.qh);
            // Where the fifth bit is clear the value is q - 16 < 0: set the high nibble to 0xF0.
            bxhi = _mm256_andnot_si256(bxhi, _mm256_set1_epi8(0xF0u8 as i8));
            qx = _mm256_or_si256(qx, bxhi);
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
    pub unsafe fn vec_dot_x4(x: [&[BlockQ5_0]; 4], y: &[BlockQ8_0]) -> [f32; 4] {
        rows_q8_0::<_, 1, 16>(x, [y], |xb| qu(xb))[0]
    }

    /// Four rows, two activation rows (prefill): [`vec_dot`] of each pair, bit for bit.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn vec_dot_x4t2(x: [&[BlockQ5_0]; 4], y: [&[BlockQ8_0]; 2]) -> [[f32; 4]; 2] {
        rows_q8_0::<_, 2, 16>(x, y, |xb| qu(xb))
    }

    /// This block's values as `u` with `qx = u - 16` (see [`rows_q8_0`]).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn qu(xb: &BlockQ5_0) -> __m256i {
        let hi = _mm256_and_si256(bytes_from_bits_32(&xb.qh), _mm256_set1_epi8(0x10));
        _mm256_or_si256(bytes_from_nibbles_32(&xb.qs), hi)
    }

    /// [`vec_dot`] of four rows with `T` activation rows, AVX-512 VNNI sums, bit for bit.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA, F16C and AVX-512 F/VL/VNNI.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
    pub unsafe fn vec_dot_x4_vnni<const T: usize>(
        x: [&[BlockQ5_0]; 4],
        y: [&[BlockQ8_0]; T],
    ) -> [[f32; 4]; T] {
        rows_q8_0_vnni::<_, T, 16>(x, y, |xb| qu(xb))
    }

    /// [`vec_dot`] of four rows with eight activation rows whose block scales are `dy`
    /// (512-bit VNNI, see [`rows_q8_0_x4t8`]), bit for bit.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA, F16C and AVX-512 F/BW/VL/VNNI.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub unsafe fn vec_dot_x4t8_vnni(
        x: [&[BlockQ5_0]; 4],
        y: [&[BlockQ8_0]; 8],
        dy: [&[f32]; 8],
    ) -> [[f32; 4]; 8] {
        // SAFETY: the features are enabled here.
        unsafe {
            rows_q8_0_x4t8(x, y, dy, |a, b| {
                let nib = nibbles_x2(&a.qs, &b.qs);
                // Where the fifth bit is clear the value is the nibble minus 16.
                let h = u64::from(u32::from_le_bytes(a.qh))
                    | (u64::from(u32::from_le_bytes(b.qh)) << 32);
                _mm512_mask_sub_epi8(nib, !h, nib, _mm512_set1_epi8(16))
            })
        }
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub(crate) mod simd128 {
    use super::super::wasm::*;
    use super::*;
    use core::arch::wasm32::*;

    /// Bit-identical twin of the AVX2 `ggml_vec_dot_q5_0_q8_0` (ggml-cpu/arch/x86/quants.c; see
    /// `avx2::vec_dot`): eight lanes of four values, one fused multiply-add per block.
    pub fn vec_dot(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> f32 {
        let m4 = i8x16_splat(0x0F);
        let hi_nib = i8x16_splat(0xF0u8 as i8);
        let mut acc = Acc8::zero();
        for (xb, yb) in x.iter().zip(y) {
            let qh = u32::from_le_bytes(xb.qh);
            // Bytes with the fifth bit clear get 0xF0 (i.e. q - 16 in two's complement).
            let h0 = v128_andnot(hi_nib, bits_to_bytes16(qh as u16));
            let h1 = v128_andnot(hi_nib, bits_to_bytes16((qh >> 16) as u16));
            // SAFETY: `qs` of Q5_0 is 16 bytes, `qs` of Q8_0 is 32 bytes.
            let (raw, y0, y1) = unsafe {
                (
                    load(xb.qs.as_ptr()),
                    load(yb.qs.as_ptr()),
                    load(yb.qs.as_ptr().add(16)),
                )
            };
            let lo = v128_or(v128_and(raw, m4), h0);
            let hi = v128_or(u8x16_shr(raw, 4), h1);
            let d = f16_le(xb.d) * f16_le(yb.d);
            acc.fmadd_i32::<false>(d, dot4_i8(lo, y0), dot4_i8(hi, y1));
        }
        acc.hsum()
    }
    /// [`vec_dot`] of four rows with the same activations, bit for bit (see `rows_q8_0`).
    pub fn vec_dot_x4(x: [&[BlockQ5_0]; 4], y: &[BlockQ8_0]) -> [f32; 4] {
        let (m4, b4) = (i8x16_splat(0x0F), i8x16_splat(0x10));
        rows_q8_0::<_, 16>(
            x,
            y,
            |xb| xb.d,
            |xb| {
                // Values `nibble | fifth bit << 4`, 0..32.
                let qh = u32::from_le_bytes(xb.qh);
                let h0 = v128_and(b4, bits_to_bytes16(qh as u16));
                let h1 = v128_and(b4, bits_to_bytes16((qh >> 16) as u16));
                // SAFETY: `qs` of Q5_0 is 16 bytes.
                let raw = unsafe { load(xb.qs.as_ptr()) };
                (
                    v128_or(v128_and(raw, m4), h0),
                    v128_or(u8x16_shr(raw, 4), h1),
                )
            },
        )
    }
}

#[cfg(target_arch = "aarch64")]
pub(crate) mod neon {
    use super::super::neon::*;
    use super::*;
    use core::arch::aarch64::*;

    /// Port of `ggml_vec_dot_q5_0_q8_0` (ggml-cpu/arch/arm/quants.c, `__ARM_NEON` branch).
    #[target_feature(enable = "neon")]
    pub fn vec_dot(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> f32 {
        let (sumf, done) = q8_pairs(
            x,
            y,
            |xb| {
                // Subtracting `(!bit) << 4` adds the fifth bit and removes the offset 16.
                let (hl, hh) = q5_high_bits::<true>(xb.qh);
                let (l, h) = nibbles(&xb.qs);
                (
                    vsubq_s8(vreinterpretq_s8_u8(l), hl),
                    vsubq_s8(vreinterpretq_s8_u8(h), hh),
                )
            },
            |yb| &yb.qs,
            |xb, yb| h2f(xb.d) * h2f(yb.d),
        );
        sumf + scalar::vec_dot(&x[done..], &y[done..])
    }
}
