//! Q5_K: super-blocks of 256 values in 8 sub-blocks of 32, `x = d*sc * q - dmin*m` with 5-bit
//! `q` (4 bits in `qs`, the fifth in `qh`) and 6-bit sub-block scales and mins.

use super::k_common::{
    get_scale_min_k4, make_qkx2_quants, pack_scales_mins_k4, unpack_scales_mins_k4,
};
use super::util::{Pod, f16_le, f16_to_le, nearest_int};
use super::{BlockQ8_K, GgmlType, QK_K, QuantBlock};

/// ggml's `block_q5_K`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockQ5_K {
    /// Super-block scale of the scales (f16).
    pub d: [u8; 2],
    /// Super-block scale of the mins (f16).
    pub dmin: [u8; 2],
    /// 8 scales and 8 mins, 6 bits each.
    pub scales: [u8; 12],
    /// Fifth bits: bit 2j of byte l for value 64j+l, bit 2j+1 for value 64j+32+l.
    pub qh: [u8; QK_K / 8],
    /// Low 4 bits, laid out as in Q4_K.
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_K>() == 176);
// SAFETY: byte arrays only.
unsafe impl Pod for BlockQ5_K {}
impl super::sealed::Sealed for BlockQ5_K {}

impl Default for BlockQ5_K {
    fn default() -> Self {
        BlockQ5_K {
            d: [0; 2],
            dmin: [0; 2],
            scales: [0; 12],
            qh: [0; QK_K / 8],
            qs: [0; QK_K / 2],
        }
    }
}

impl QuantBlock for BlockQ5_K {
    const TYPE: GgmlType = GgmlType::Q5_K;
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

    /// Port of `dequantize_row_q5_K` (ggml-quants.c).
    pub fn dequantize(x: &[BlockQ5_K], y: &mut [f32]) {
        for (b, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
            let d = f16_le(b.d);
            let min = f16_le(b.dmin);
            let (mut u1, mut u2) = (1u8, 2u8);
            for j in 0..4 {
                let (sc, m) = get_scale_min_k4(2 * j, &b.scales);
                let (d1, m1) = (d * sc as f32, min * m as f32);
                let (sc, m) = get_scale_min_k4(2 * j + 1, &b.scales);
                let (d2, m2) = (d * sc as f32, min * m as f32);
                let ql = &b.qs[32 * j..32 * j + 32];
                let y = &mut y[64 * j..64 * j + 64];
                for l in 0..32 {
                    let h1 = if b.qh[l] & u1 != 0 { 16 } else { 0 };
                    let h2 = if b.qh[l] & u2 != 0 { 16 } else { 0 };
                    y[l] = d1 * ((ql[l] & 0xF) + h1) as f32 - m1;
                    y[l + 32] = d2 * ((ql[l] >> 4) + h2) as f32 - m2;
                }
                u1 <<= 2;
                u2 <<= 2;
            }
        }
    }

    /// Port of `quantize_row_q5_K_ref` (ggml-quants.c).
    pub fn quantize(x: &[f32], y: &mut [BlockQ5_K]) {
        let mut l = [0u8; QK_K];
        let mut laux = [0u8; 32];
        let mut weights = [0f32; 32];
        let mut mins = [0f32; QK_K / 32];
        let mut scales = [0f32; QK_K / 32];
        for (x, b) in x.chunks_exact(QK_K).zip(y.iter_mut()) {
            let mut max_scale = 0.0f32;
            let mut max_min = 0.0f32;
            for j in 0..QK_K / 32 {
                let xs = &x[32 * j..32 * j + 32];
                let mut sum_x2 = 0.0f32;
                for &v in xs {
                    sum_x2 += v * v;
                }
                let av_x = (sum_x2 / 32.0).sqrt();
                for (w, &v) in weights.iter_mut().zip(xs) {
                    *w = av_x + v.abs();
                }
                scales[j] = make_qkx2_quants(
                    31,
                    xs,
                    &weights,
                    &mut l[32 * j..32 * j + 32],
                    &mut mins[j],
                    &mut laux,
                    -0.5,
                    0.1,
                    15,
                    false,
                );
                if scales[j] > max_scale {
                    max_scale = scales[j];
                }
                if mins[j] > max_min {
                    max_min = mins[j];
                }
            }
            let inv_scale = if max_scale > 0.0 {
                63.0 / max_scale
            } else {
                0.0
            };
            let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
            let mut ls = [0u8; 8];
            let mut lm = [0u8; 8];
            for j in 0..QK_K / 32 {
                ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
                lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
            }
            b.scales = pack_scales_mins_k4(&ls, &lm);
            b.d = f16_to_le(max_scale / 63.0);
            b.dmin = f16_to_le(max_min / 63.0);
            for j in 0..QK_K / 32 {
                let (sc, m) = get_scale_min_k4(j, &b.scales);
                let d = f16_le(b.d) * sc as f32;
                if d == 0.0 {
                    continue;
                }
                let dm = f16_le(b.dmin) * m as f32;
                for ii in 0..32 {
                    let q = nearest_int((x[32 * j + ii] + dm) / d);
                    l[32 * j + ii] = q.clamp(0, 31) as u8;
                }
            }
            b.qh = [0; QK_K / 8];
            let (mut m1, mut m2) = (1u8, 2u8);
            for n in 0..QK_K / 64 {
                for j in 0..32 {
                    let mut l1 = l[64 * n + j];
                    if l1 > 15 {
                        l1 -= 16;
                        b.qh[j] |= m1;
                    }
                    let mut l2 = l[64 * n + j + 32];
                    if l2 > 15 {
                        l2 -= 16;
                        b.qh[j] |= m2;
                    }
                    b.qs[32 * n + j] = l1 | (l2 << 4);
                }
                m1 <<= 2;
                m2 <<= 2;
            }
        }
    }

    /// Port of `ggml_vec_dot_q5_K_q8_K_generic` (ggml-cpu/quants.c).
    pub fn vec_dot(x: &[BlockQ5_K], y: &[BlockQ8_K]) -> f32 {
        let mut aux8 = [0i8; QK_K];
        let mut sums = [0f32; 8];
        let mut sumf = 0.0f32;
        for (xb, yb) in x.iter().zip(y) {
            let mut m = 1u8;
            for j in 0..QK_K / 64 {
                for l in 0..32 {
                    let h = if xb.qh[l] & m != 0 { 16 } else { 0 };
                    aux8[64 * j + l] = ((xb.qs[32 * j + l] & 0xF) + h) as i8;
                }
                m <<= 1;
                for l in 0..32 {
                    let h = if xb.qh[l] & m != 0 { 16 } else { 0 };
                    aux8[64 * j + 32 + l] = ((xb.qs[32 * j + l] >> 4) + h) as i8;
                }
                m <<= 1;
            }
            let (scales, mins) = unpack_scales_mins_k4(&xb.scales);
            let mut sumi = 0i32;
            for j in 0..QK_K / 16 {
                sumi += yb.bsum(j) as i32 * mins[j / 2] as i32;
            }
            let mut aux32 = [0i32; 8];
            for (j, &sc) in scales.iter().enumerate() {
                let scale = sc as i32;
                for k in 0..4 {
                    let o = 32 * j + 8 * k;
                    for l in 0..8 {
                        let p = yb.qs[o + l] as i16 * aux8[o + l] as i16;
                        aux32[l] += scale * p as i32;
                    }
                }
            }
            let d = f16_le(xb.d) * yb.d();
            for l in 0..8 {
                sums[l] += d * aux32[l] as f32;
            }
            let dmin = f16_le(xb.dmin) * yb.d();
            sumf -= dmin * sumi as f32;
        }
        for s in sums {
            sumf += s;
        }
        sumf
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use super::super::x86::*;
    use super::*;
    use core::arch::x86_64::*;

    /// Port of `ggml_vec_dot_q5_K_q8_K` (ggml-cpu/arch/x86/quants.c, AVX2 branch).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn vec_dot(x: &[BlockQ5_K], y: &[BlockQ8_K]) -> f32 {
        let m4 = _mm256_set1_epi8(0xF);
        let mzero = _mm_setzero_si128();
        let mone = _mm256_set1_epi8(1);
        let mut acc = _mm256_setzero_ps();
        let mut summs = 0.0f32;
        for (xb, yb) in x.iter().zip(y) {
            let d = yb.d() * h2f(xb.d);
            let dmin = -yb.d() * h2f(xb.dmin);
            let (sc, mn) = unpack_scales_mins_k4(&xb.scales);
            let mut utmp = [0u8; 16];
            utmp[..8].copy_from_slice(&sc);
            utmp[8..].copy_from_slice(&mn);
            // SAFETY: 16 bytes of `utmp`, 32 of `bsums`, 32 of `qh`.
            let (sm, q8sums, hbits) = unsafe {
                (
                    load128(utmp.as_ptr()),
                    load256(yb.bsums.as_ptr()),
                    load256(xb.qh.as_ptr()),
                )
            };
            let mins_and_scales = _mm256_cvtepu8_epi16(sm);
            let q8s = _mm_hadd_epi16(
                _mm256_extracti128_si256::<0>(q8sums),
                _mm256_extracti128_si256::<1>(q8sums),
            );
            let prod = _mm_madd_epi16(_mm256_extracti128_si256::<1>(mins_and_scales), q8s);
            let hsum = _mm_hadd_epi32(_mm_hadd_epi32(prod, mzero), mzero);
            summs = dmin.mul_add(_mm_extract_epi32::<0>(hsum) as f32, summs);

            let sc128 = _mm256_extracti128_si256::<0>(mins_and_scales);
            let scales = _mm256_set_m128i(sc128, sc128);

            let mut hmask = mone;
            let mut sumi = _mm256_setzero_si256();
            let mut bit = 0i32;
            for j in 0..QK_K / 64 {
                let scale_0 = _mm256_shuffle_epi8(scales, get_scale_shuffle_k4(2 * j));
                let scale_1 = _mm256_shuffle_epi8(scales, get_scale_shuffle_k4(2 * j + 1));
                // SAFETY: 32 bytes at 32j < 128 in `qs`; 64 bytes at 64j < 256 in the Q8_K quants.
                let (q5bits, q8_0, q8_1) = unsafe {
                    (
                        load256(xb.qs.as_ptr().add(32 * j)),
                        load256(yb.qs.as_ptr().add(64 * j)),
                        load256(yb.qs.as_ptr().add(64 * j + 32)),
                    )
                };
                let q5l_0 = _mm256_and_si256(q5bits, m4);
                let q5h_0 = _mm256_slli_epi16::<4>(_mm256_srl_epi16(
                    _mm256_and_si256(hbits, hmask),
                    _mm_cvtsi32_si128(bit),
                ));
                bit += 1;
                let q5_0 = _mm256_add_epi8(q5l_0, q5h_0);
                hmask = _mm256_slli_epi16::<1>(hmask);

                let q5l_1 = _mm256_and_si256(_mm256_srli_epi16::<4>(q5bits), m4);
                let q5h_1 = _mm256_slli_epi16::<4>(_mm256_srl_epi16(
                    _mm256_and_si256(hbits, hmask),
                    _mm_cvtsi32_si128(bit),
                ));
                bit += 1;
                let q5_1 = _mm256_add_epi8(q5l_1, q5h_1);
                hmask = _mm256_slli_epi16::<1>(hmask);

                let p16_0 = _mm256_madd_epi16(scale_0, _mm256_maddubs_epi16(q5_0, q8_0));
                let p16_1 = _mm256_madd_epi16(scale_1, _mm256_maddubs_epi16(q5_1, q8_1));
                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p16_0, p16_1));
            }
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
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

    /// Bit-identical twin of the AVX2 `ggml_vec_dot_q5_K_q8_K` (ggml-cpu/arch/x86/quants.c; see
    /// `avx2::vec_dot`): lane k of each 32-value group holds values 4k..4k+4, scaled in i32; one
    /// fused multiply-add per super-block, the mins with a scalar fused multiply-add.
    pub fn vec_dot(x: &[BlockQ5_K], y: &[BlockQ8_K]) -> f32 {
        let m4 = i8x16_splat(0x0F);
        let b5 = i8x16_splat(0x10);
        let mut acc = Acc8::zero();
        let mut summs = 0.0f32;
        for (xb, yb) in x.iter().zip(y) {
            let d = yb.d() * f16_le(xb.d);
            let dmin = -yb.d() * f16_le(xb.dmin);
            let (sc, mn) = unpack_scales_mins_k4(&xb.scales);
            let mut summ = 0i32;
            for j in 0..QK_K / 32 {
                summ += mn[j] as i32 * (yb.bsum(2 * j) as i32 + yb.bsum(2 * j + 1) as i32);
            }
            summs = fma_f32(dmin, summ as f32, summs);

            // SAFETY: `qh` is 32 bytes.
            let (ha, hb) = unsafe { (load(xb.qh.as_ptr()), load(xb.qh.as_ptr().add(16))) };
            // The fifth bit of value i of a 32-value group, at bit 4 of byte i.
            let fifth = |h: v128, bit: usize| {
                let m = i8x16_splat((1u8 << bit) as i8);
                v128_and(i8x16_eq(v128_and(h, m), m), b5)
            };
            let q8 = yb.qs.as_ptr();
            let (mut lo, mut hi) = (i32x4_splat(0), i32x4_splat(0));
            for j in 0..QK_K / 64 {
                // SAFETY: 32 bytes at 32j < 128 in `qs`; 64 bytes at 64j < 256 in the Q8_K quants.
                let (a0, a1, y0, y1, y2, y3) = unsafe {
                    (
                        load(xb.qs.as_ptr().add(32 * j)),
                        load(xb.qs.as_ptr().add(32 * j + 16)),
                        load(q8.add(64 * j)),
                        load(q8.add(64 * j + 16)),
                        load(q8.add(64 * j + 32)),
                        load(q8.add(64 * j + 48)),
                    )
                };
                let q0a = v128_or(v128_and(a0, m4), fifth(ha, 2 * j));
                let q0b = v128_or(v128_and(a1, m4), fifth(hb, 2 * j));
                let q1a = v128_or(u8x16_shr(a0, 4), fifth(ha, 2 * j + 1));
                let q1b = v128_or(u8x16_shr(a1, 4), fifth(hb, 2 * j + 1));
                let (s0, s1) = (
                    i32x4_splat(sc[2 * j] as i32),
                    i32x4_splat(sc[2 * j + 1] as i32),
                );
                lo = i32x4_add(
                    lo,
                    i32x4_add(
                        i32x4_mul(dot4_u8i8(q0a, y0), s0),
                        i32x4_mul(dot4_u8i8(q1a, y2), s1),
                    ),
                );
                hi = i32x4_add(
                    hi,
                    i32x4_add(
                        i32x4_mul(dot4_u8i8(q0b, y1), s0),
                        i32x4_mul(dot4_u8i8(q1b, y3), s1),
                    ),
                );
            }
            acc.fmadd_i32::<true>(d, lo, hi);
        }
        acc.hsum() + summs
    }
}

#[cfg(target_arch = "aarch64")]
pub(crate) mod neon {
    use super::super::neon::*;
    use super::*;
    use core::arch::aarch64::*;

    /// Port of `ggml_vec_dot_q5_K_q8_K` (ggml-cpu/arch/arm/quants.c, `__ARM_NEON` branch).
    #[target_feature(enable = "neon")]
    pub fn vec_dot(x: &[BlockQ5_K], y: &[BlockQ8_K]) -> f32 {
        let m4b = vdupq_n_u8(0xF);
        let mone = vdupq_n_u8(1);
        let mtwo = vdupq_n_u8(2);
        let mut sumf = 0.0f32;
        for (xb, yb) in x.iter().zip(y) {
            let d = yb.d() * h2f(xb.d);
            let dmin = yb.d() * h2f(xb.dmin);
            let (scales, sumi_mins) = k4_scales_min_sum(&xb.scales, &yb.bsums);

            let (q5, q8) = (xb.qs.as_ptr(), yb.qs.as_ptr());
            // SAFETY: `qh` is 32 bytes.
            let mut qh = unsafe { [ld_u8(xb.qh.as_ptr()), ld_u8(xb.qh.as_ptr().add(16))] };
            let mut sumi = 0i32;
            for j in 0..QK_K / 64 {
                // SAFETY: 32 bytes at 32j < 128 in `qs`; 64 bytes at 64j < 256 in the Q8_K quants.
                let (a0, a1, y0, y1, y2, y3) = unsafe {
                    (
                        ld_u8(q5.add(32 * j)),
                        ld_u8(q5.add(32 * j + 16)),
                        ld_s8(q8.add(64 * j)),
                        ld_s8(q8.add(64 * j + 16)),
                        ld_s8(q8.add(64 * j + 32)),
                        ld_s8(q8.add(64 * j + 48)),
                    )
                };
                // Bit 2j of `qh` is the fifth bit of the low nibbles, bit 2j+1 of the high ones.
                let h0 = vshlq_n_u8::<4>(vandq_u8(mone, qh[0]));
                let h1 = vshlq_n_u8::<4>(vandq_u8(mone, qh[1]));
                let h2 = vshlq_n_u8::<3>(vandq_u8(mtwo, qh[0]));
                let h3 = vshlq_n_u8::<3>(vandq_u8(mtwo, qh[1]));
                qh = [vshrq_n_u8::<2>(qh[0]), vshrq_n_u8::<2>(qh[1])];

                let q0 = vreinterpretq_s8_u8(vorrq_u8(vandq_u8(a0, m4b), h0));
                let q1 = vreinterpretq_s8_u8(vorrq_u8(vandq_u8(a1, m4b), h1));
                let q2 = vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8::<4>(a0), h2));
                let q3 = vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8::<4>(a1), h3));

                sumi += vaddvq_s32(dot2_i8(q0, y0, q1, y1)) * scales[2 * j] as i32;
                sumi += vaddvq_s32(dot2_i8(q2, y2, q3, y3)) * scales[2 * j + 1] as i32;
            }
            sumf += d * sumi as f32 - dmin * sumi_mins as f32;
        }
        sumf
    }
}
