//! Q5_1: blocks of 32 values, `x = d * q + m` with 5-bit `q`, f16 scale and f16 min.

use super::util::{Pod, f16_le, f16_to_le};
use super::{BlockQ8_1, GgmlType, QuantBlock};

/// ggml's `block_q5_1`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockQ5_1 {
    /// Scale (f16).
    pub d: [u8; 2],
    /// Minimum (f16).
    pub m: [u8; 2],
    /// Fifth bit of each quant (bit j = value j), little-endian u32.
    pub qh: [u8; 4],
    /// Low nibbles (value j low, j+16 high).
    pub qs: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_1>() == 24);
// SAFETY: byte arrays only.
unsafe impl Pod for BlockQ5_1 {}
impl super::sealed::Sealed for BlockQ5_1 {}

impl QuantBlock for BlockQ5_1 {
    const TYPE: GgmlType = GgmlType::Q5_1;
    const BLOCK_SIZE: usize = 32;
    type VecDot = BlockQ8_1;

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

pub(crate) mod scalar {
    use super::*;

    /// Port of `dequantize_row_q5_1` (ggml-quants.c).
    pub fn dequantize(x: &[BlockQ5_1], y: &mut [f32]) {
        for (b, y) in x.iter().zip(y.chunks_exact_mut(32)) {
            let d = f16_le(b.d);
            let m = f16_le(b.m);
            let qh = u32::from_le_bytes(b.qh);
            for j in 0..16 {
                let xh_0 = (((qh >> j) << 4) & 0x10) as u8;
                let xh_1 = ((qh >> (j + 12)) & 0x10) as u8;
                let x0 = ((b.qs[j] & 0x0F) | xh_0) as i32;
                let x1 = ((b.qs[j] >> 4) | xh_1) as i32;
                y[j] = x0 as f32 * d + m;
                y[j + 16] = x1 as f32 * d + m;
            }
        }
    }

    /// Port of `quantize_row_q5_1_ref` (ggml-quants.c).
    pub fn quantize(x: &[f32], y: &mut [BlockQ5_1]) {
        for (x, b) in x.chunks_exact(32).zip(y.iter_mut()) {
            let mut min = f32::MAX;
            let mut max = -f32::MAX;
            for &v in x {
                if v < min {
                    min = v;
                }
                if v > max {
                    max = v;
                }
            }
            let d = (max - min) / 31.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            b.d = f16_to_le(d);
            b.m = f16_to_le(min);
            let mut qh = 0u32;
            for j in 0..16 {
                let x0 = (x[j] - min) * id;
                let x1 = (x[16 + j] - min) * id;
                let xi0 = (x0 + 0.5) as u8;
                let xi1 = (x1 + 0.5) as u8;
                b.qs[j] = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4);
                qh |= (((xi0 & 0x10) >> 4) as u32) << j;
                qh |= (((xi1 & 0x10) >> 4) as u32) << (j + 16);
            }
            b.qh = qh.to_le_bytes();
        }
    }

    /// Port of `ggml_vec_dot_q5_1_q8_1_generic` (ggml-cpu/quants.c).
    pub fn vec_dot(x: &[BlockQ5_1], y: &[BlockQ8_1]) -> f32 {
        let mut sumf = 0.0f32;
        for (xb, yb) in x.iter().zip(y) {
            let qh = u32::from_le_bytes(xb.qh);
            let mut sumi0 = 0i32;
            let mut sumi1 = 0i32;
            for j in 0..16 {
                let xh_0 = (((qh >> j) << 4) & 0x10) as u8;
                let xh_1 = ((qh >> (j + 12)) & 0x10) as u8;
                let x0 = ((xb.qs[j] & 0xF) | xh_0) as i32;
                let x1 = ((xb.qs[j] >> 4) | xh_1) as i32;
                sumi0 += x0 * yb.qs[j] as i32;
                sumi1 += x1 * yb.qs[j + 16] as i32;
            }
            let sumi = sumi0 + sumi1;
            sumf += (f16_le(xb.d) * f16_le(yb.d)) * sumi as f32 + f16_le(xb.m) * f16_le(yb.s);
        }
        sumf
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use super::super::x86::*;
    use super::*;
    use core::arch::x86_64::*;

    /// Port of `ggml_vec_dot_q5_1_q8_1` (ggml-cpu/arch/x86/quants.c, AVX2 branch).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn vec_dot(x: &[BlockQ5_1], y: &[BlockQ8_1]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        let mut summs = 0.0f32;
        for (xb, yb) in x.iter().zip(y) {
            // SAFETY: `d, m` and `d, s` are the blocks' first 4 bytes.
            let ((d0, m0), (d1, s1)) = unsafe {
                (
                    h2f_pair((xb as *const BlockQ5_1).cast()),
                    h2f_pair((yb as *const BlockQ8_1).cast()),
                )
            };
            let dx = _mm256_set1_ps(d0);
            summs = m0.mul_add(s1, summs);
            let mut qx = bytes_from_nibbles_32(&xb.qs);
            let mut bxhi = bytes_from_bits_32(&xb.qh);
            bxhi = _mm256_and_si256(bxhi, _mm256_set1_epi8(0x10));
            qx = _mm256_or_si256(qx, bxhi);
            let dy = _mm256_set1_ps(d1);
            // SAFETY: `qs` is 32 bytes.
            let qy = unsafe { load256(yb.qs.as_ptr()) };
            let q = mul_sum_us8_pairs_float(qx, qy);
            acc = _mm256_fmadd_ps(q, _mm256_mul_ps(dx, dy), acc);
        }
        hsum_float_8(acc) + summs
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub(crate) mod simd128 {
    use super::super::util::fma_f32;
    use super::super::wasm::*;
    use super::*;
    use core::arch::wasm32::*;

    /// Bit-identical twin of the AVX2 `ggml_vec_dot_q5_1_q8_1` (ggml-cpu/arch/x86/quants.c; see
    /// `avx2::vec_dot`): eight lanes of four values, one fused multiply-add per block, the
    /// `m * s` terms summed with scalar fused multiply-adds.
    pub fn vec_dot(x: &[BlockQ5_1], y: &[BlockQ8_1]) -> f32 {
        let m4 = i8x16_splat(0x0F);
        let b5 = i8x16_splat(0x10);
        let mut acc = Acc8::zero();
        let mut summs = 0.0f32;
        for (xb, yb) in x.iter().zip(y) {
            summs = fma_f32(f16_le(xb.m), f16_le(yb.s), summs);
            let qh = u32::from_le_bytes(xb.qh);
            let h0 = v128_and(bits_to_bytes16(qh as u16), b5);
            let h1 = v128_and(bits_to_bytes16((qh >> 16) as u16), b5);
            // SAFETY: `qs` of Q5_1 is 16 bytes, `qs` of Q8_1 is 32 bytes.
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
            acc.fmadd_i32::<false>(d, dot4_u8i8(lo, y0), dot4_u8i8(hi, y1));
        }
        acc.hsum() + summs
    }
}

#[cfg(target_arch = "aarch64")]
pub(crate) mod neon {
    use super::super::neon::*;
    use super::*;
    use core::arch::aarch64::*;

    /// Port of `ggml_vec_dot_q5_1_q8_1` (ggml-cpu/arch/arm/quants.c, `__ARM_NEON` branch).
    #[target_feature(enable = "neon")]
    pub fn vec_dot(x: &[BlockQ5_1], y: &[BlockQ8_1]) -> f32 {
        // ggml keeps the `m * s` terms of even and odd blocks in two sums.
        let (mut summs0, mut summs1) = (0.0f32, 0.0f32);
        for (xp, yp) in x.chunks_exact(2).zip(y.chunks_exact(2)) {
            summs0 += h2f(xp[0].m) * h2f(yp[0].s);
            summs1 += h2f(xp[1].m) * h2f(yp[1].s);
        }
        let (sumf, done) = q8_pairs(
            x,
            y,
            |xb| {
                let (hl, hh) = q5_high_bits::<false>(xb.qh);
                let (l, h) = nibbles(&xb.qs);
                (
                    vorrq_s8(vreinterpretq_s8_u8(l), hl),
                    vorrq_s8(vreinterpretq_s8_u8(h), hh),
                )
            },
            |yb| &yb.qs,
            |xb, yb| h2f(xb.d) * h2f(yb.d),
        );
        sumf + summs0 + summs1 + scalar::vec_dot(&x[done..], &y[done..])
    }
}
