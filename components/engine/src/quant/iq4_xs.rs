//! IQ4_XS: super-blocks of 256 values in 8 sub-blocks of 32, `x = d * (ls - 32) * kvalues[q]`
//! with 4-bit table indices and 6-bit sub-block scales `ls`.

use super::iq4_nl::{Iq4Out, quantize_iq4_nl_impl};
use super::util::{KVALUES_IQ4NL, Pod, f16_le};
use super::{BlockQ8_K, GgmlType, QK_K, QuantBlock};

/// ggml's `block_iq4_xs`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockIQ4_XS {
    /// Super-block scale (f16).
    pub d: [u8; 2],
    /// High 2 bits of the 8 sub-block scales (u16, little-endian).
    pub scales_h: [u8; 2],
    /// Low 4 bits of the 8 sub-block scales.
    pub scales_l: [u8; QK_K / 64],
    /// Table indices: for each 32 values, 16 bytes (first 16 low nibbles, next 16 high).
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(std::mem::size_of::<BlockIQ4_XS>() == 136);
// SAFETY: byte arrays only.
unsafe impl Pod for BlockIQ4_XS {}
impl super::sealed::Sealed for BlockIQ4_XS {}

impl Default for BlockIQ4_XS {
    fn default() -> Self {
        BlockIQ4_XS {
            d: [0; 2],
            scales_h: [0; 2],
            scales_l: [0; QK_K / 64],
            qs: [0; QK_K / 2],
        }
    }
}

impl BlockIQ4_XS {
    /// The 6-bit scale of sub-block `ib`, minus 32.
    #[inline(always)]
    fn ls(&self, ib: usize) -> i32 {
        let ib = ib & 7;
        let h = u16::from_le_bytes(self.scales_h);
        let l = ((self.scales_l[ib / 2] >> (4 * (ib % 2))) & 0xf) as i32
            | ((((h >> (2 * ib)) & 3) as i32) << 4);
        l - 32
    }
}

impl QuantBlock for BlockIQ4_XS {
    const TYPE: GgmlType = GgmlType::IQ4_XS;
    const BLOCK_SIZE: usize = QK_K;
    type VecDot = BlockQ8_K;

    fn dequantize(blocks: &[Self], dst: &mut [f32]) {
        scalar::dequantize(blocks, dst)
    }
    fn quantize(src: &[f32], dst: &mut [Self]) {
        scalar::quantize(src, dst)
    }
    fn vec_dot(w: &[Self], a: &[BlockQ8_K]) -> f32 {
        scalar::vec_dot(w, a)
    }
}

pub(crate) mod scalar {
    use super::*;

    /// Port of `dequantize_row_iq4_xs` (ggml-quants.c).
    pub fn dequantize(x: &[BlockIQ4_XS], y: &mut [f32]) {
        for (b, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
            let d = f16_le(b.d);
            for ib in 0..QK_K / 32 {
                let dl = d * b.ls(ib) as f32;
                let qs = &b.qs[16 * ib..16 * ib + 16];
                let y = &mut y[32 * ib..32 * ib + 32];
                for j in 0..16 {
                    y[j] = dl * KVALUES_IQ4NL[(qs[j] & 0xf) as usize] as f32;
                    y[j + 16] = dl * KVALUES_IQ4NL[(qs[j] >> 4) as usize] as f32;
                }
            }
        }
    }

    /// Port of `quantize_row_iq4_xs_ref` = `quantize_iq4_xs` without importance weights
    /// (ggml-quants.c; `ntry = 7`).
    pub fn quantize(x: &[f32], y: &mut [BlockIQ4_XS]) {
        for (x, b) in x.chunks_exact(QK_K).zip(y.iter_mut()) {
            let mut dh = 0u16;
            let mut sh = 0u16;
            quantize_iq4_nl_impl(
                x,
                Iq4Out {
                    dh: &mut dh,
                    q4: &mut b.qs,
                    scales_h: &mut sh,
                    scales_l: &mut b.scales_l,
                },
                7,
            );
            b.d = dh.to_le_bytes();
            b.scales_h = sh.to_le_bytes();
        }
    }

    /// Port of `ggml_vec_dot_iq4_xs_q8_K_generic` (ggml-cpu/quants.c).
    pub fn vec_dot(x: &[BlockIQ4_XS], y: &[BlockQ8_K]) -> f32 {
        let mut sumf = 0.0f32;
        for (xb, yb) in x.iter().zip(y) {
            let d4d8 = f16_le(xb.d) * yb.d();
            let mut h = u16::from_le_bytes(xb.scales_h);
            let mut qo = 0;
            let mut q8o = 0;
            for ib in (0..QK_K / 32).step_by(2) {
                let ls1 = ((xb.scales_l[ib / 2] & 0xf) as u16 | ((h << 4) & 0x30)) as i32;
                let ls2 = ((xb.scales_l[ib / 2] >> 4) as u16 | ((h << 2) & 0x30)) as i32;
                h >>= 4;
                let d1 = d4d8 * (ls1 - 32) as f32;
                let d2 = d4d8 * (ls2 - 32) as f32;
                for dk in [d1, d2] {
                    let mut sumi1 = 0i32;
                    let mut sumi2 = 0i32;
                    for j in 0..16 {
                        let q = xb.qs[qo + j];
                        sumi1 += yb.qs[q8o + j] as i32 * KVALUES_IQ4NL[(q & 0xf) as usize] as i32;
                        sumi2 +=
                            yb.qs[q8o + j + 16] as i32 * KVALUES_IQ4NL[(q >> 4) as usize] as i32;
                    }
                    sumf += dk * (sumi1 + sumi2) as f32;
                    qo += 16;
                    q8o += 32;
                }
            }
        }
        sumf
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use super::super::x86::*;
    use super::*;
    use core::arch::x86_64::*;

    /// Port of `ggml_vec_dot_iq4_xs_q8_K` (ggml-cpu/arch/x86/quants.c, AVX2 branch).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn vec_dot(x: &[BlockIQ4_XS], y: &[BlockQ8_K]) -> f32 {
        // SAFETY: the table is 16 bytes.
        let values128 = unsafe { load128(KVALUES_IQ4NL.as_ptr()) };
        let m4b = _mm_set1_epi8(0x0f);
        let mut accum = _mm256_setzero_ps();
        for (xb, yb) in x.iter().zip(y) {
            let mut sh = u16::from_le_bytes(xb.scales_h);
            let mut sumi1 = _mm256_setzero_si256();
            let mut sumi2 = _mm256_setzero_si256();
            for ib in (0..QK_K / 32).step_by(2) {
                // SAFETY: 32 bytes at 16ib < 128 in `qs`; 64 bytes at 32ib < 256 in the Q8_K quants.
                let (q4bits_1, q4bits_2, q8b_1, q8b_2) = unsafe {
                    (
                        load128(xb.qs.as_ptr().add(16 * ib)),
                        load128(xb.qs.as_ptr().add(16 * ib + 16)),
                        load256(yb.qs.as_ptr().add(32 * ib)),
                        load256(yb.qs.as_ptr().add(32 * ib + 32)),
                    )
                };
                let q4b_1 = _mm256_set_m128i(
                    _mm_shuffle_epi8(values128, _mm_and_si128(_mm_srli_epi16::<4>(q4bits_1), m4b)),
                    _mm_shuffle_epi8(values128, _mm_and_si128(q4bits_1, m4b)),
                );
                let q4b_2 = _mm256_set_m128i(
                    _mm_shuffle_epi8(values128, _mm_and_si128(_mm_srli_epi16::<4>(q4bits_2), m4b)),
                    _mm_shuffle_epi8(values128, _mm_and_si128(q4bits_2, m4b)),
                );
                let p16_1 = mul_add_epi8(q4b_1, q8b_1);
                let p16_2 = mul_add_epi8(q4b_2, q8b_2);
                let ls1 = ((xb.scales_l[ib / 2] & 0xf) as i16 | ((sh << 4) & 0x30) as i16) - 32;
                let ls2 = ((xb.scales_l[ib / 2] >> 4) as i16 | ((sh << 2) & 0x30) as i16) - 32;
                sh >>= 4;
                let p_1 = _mm256_madd_epi16(p16_1, _mm256_set1_epi16(ls1));
                let p_2 = _mm256_madd_epi16(p16_2, _mm256_set1_epi16(ls2));
                sumi1 = _mm256_add_epi32(p_1, sumi1);
                sumi2 = _mm256_add_epi32(p_2, sumi2);
            }
            accum = _mm256_fmadd_ps(
                _mm256_set1_ps(h2f(xb.d) * yb.d()),
                _mm256_cvtepi32_ps(_mm256_add_epi32(sumi1, sumi2)),
                accum,
            );
        }
        hsum_float_8(accum)
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub(crate) mod simd128 {
    use super::super::wasm::*;
    use super::*;
    use core::arch::wasm32::*;

    /// Bit-identical twin of the AVX2 `ggml_vec_dot_iq4_xs_q8_K` (ggml-cpu/arch/x86/quants.c;
    /// see `avx2::vec_dot`): table lookup with `i8x16_swizzle`, lane k of each 32-value
    /// sub-block holding values 4k..4k+4 (low nibbles in lanes 0..4, high ones in 4..8) scaled
    /// in i32, one fused multiply-add per super-block.
    pub fn vec_dot(x: &[BlockIQ4_XS], y: &[BlockQ8_K]) -> f32 {
        // SAFETY: the table is 16 bytes.
        let values = unsafe { load(KVALUES_IQ4NL.as_ptr()) };
        let m4 = i8x16_splat(0x0F);
        let mut acc = Acc8::zero();
        for (xb, yb) in x.iter().zip(y) {
            let (mut lo, mut hi) = (i32x4_splat(0), i32x4_splat(0));
            for ib in 0..QK_K / 32 {
                // SAFETY: 16 bytes at 16ib < 128 in `qs`; 32 bytes at 32ib < 256 in the Q8_K quants.
                let (raw, y0, y1) = unsafe {
                    (
                        load(xb.qs.as_ptr().add(16 * ib)),
                        load(yb.qs.as_ptr().add(32 * ib)),
                        load(yb.qs.as_ptr().add(32 * ib + 16)),
                    )
                };
                let l = i8x16_swizzle(values, v128_and(raw, m4));
                let h = i8x16_swizzle(values, u8x16_shr(raw, 4));
                let ls = i32x4_splat(xb.ls(ib));
                lo = i32x4_add(lo, i32x4_mul(dot4_i8(l, y0), ls));
                hi = i32x4_add(hi, i32x4_mul(dot4_i8(h, y1), ls));
            }
            acc.fmadd_i32::<true>(f16_le(xb.d) * yb.d(), lo, hi);
        }
        acc.hsum()
    }
}

#[cfg(target_arch = "aarch64")]
pub(crate) mod neon {
    use super::super::neon::*;
    use super::*;
    use core::arch::aarch64::*;

    /// Port of `ggml_vec_dot_iq4_xs_q8_K` (ggml-cpu/arch/arm/quants.c, `__ARM_NEON` branch).
    #[target_feature(enable = "neon")]
    pub fn vec_dot(x: &[BlockIQ4_XS], y: &[BlockQ8_K]) -> f32 {
        let table = KVALUES_IQ4NL;
        // SAFETY: the table is 16 bytes.
        let values = unsafe { ld_s8(table.as_ptr()) };
        let m4b = vdupq_n_u8(0x0F);
        let mut sumf = 0.0f32;
        for (xb, yb) in x.iter().zip(y) {
            let (q4, q8) = (xb.qs.as_ptr(), yb.qs.as_ptr());
            let mut h = u16::from_le_bytes(xb.scales_h) as i32;
            let (mut sumi1, mut sumi2) = (0i32, 0i32);
            for ib in 0..QK_K / 64 {
                // SAFETY: 32 bytes at 32ib < 128 in `qs`; 64 bytes at 64ib < 256 in the Q8_K quants.
                let (a0, a1, y) = unsafe {
                    (
                        ld_u8(q4.add(32 * ib)),
                        ld_u8(q4.add(32 * ib + 16)),
                        [0, 1, 2, 3].map(|k| ld_s8(q8.add(64 * ib + 16 * k))),
                    )
                };
                let q = [
                    vqtbl1q_s8(values, vandq_u8(a0, m4b)),
                    vqtbl1q_s8(values, vshrq_n_u8::<4>(a0)),
                    vqtbl1q_s8(values, vandq_u8(a1, m4b)),
                    vqtbl1q_s8(values, vshrq_n_u8::<4>(a1)),
                ];
                let prod_1 = dot2_i8(q[0], y[0], q[1], y[1]);
                let prod_2 = dot2_i8(q[2], y[2], q[3], y[3]);
                let sl = xb.scales_l[ib] as i32;
                let ls1 = ((sl & 0xF) | ((h << 4) & 0x30)) - 32;
                let ls2 = ((sl >> 4) | ((h << 2) & 0x30)) - 32;
                h >>= 4;
                sumi1 += vaddvq_s32(prod_1) * ls1;
                sumi2 += vaddvq_s32(prod_2) * ls2;
            }
            sumf += h2f(xb.d) * yb.d() * (sumi1 + sumi2) as f32;
        }
        sumf
    }
}
