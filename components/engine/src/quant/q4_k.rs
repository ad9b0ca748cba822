//! Q4_K: super-blocks of 256 values in 8 sub-blocks of 32, `x = d*sc * q - dmin*m` with 4-bit
//! `q` and 6-bit sub-block scales `sc` and mins `m`.

use super::k_common::{
    get_scale_min_k4, make_qkx2_quants, pack_scales_mins_k4, unpack_scales_mins_k4,
};
use super::util::{Pod, f16_le, f16_to_le, nearest_int};
use super::{BlockQ8_K, GgmlType, QK_K, QuantBlock};

/// ggml's `block_q4_K`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockQ4_K {
    /// Super-block scale of the scales (f16).
    pub d: [u8; 2],
    /// Super-block scale of the mins (f16).
    pub dmin: [u8; 2],
    /// 8 scales and 8 mins, 6 bits each.
    pub scales: [u8; 12],
    /// Quants: for each 64 values, 32 bytes (first 32 values low nibbles, next 32 high).
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_K>() == 144);
// SAFETY: byte arrays only.
unsafe impl Pod for BlockQ4_K {}
impl super::sealed::Sealed for BlockQ4_K {}

impl Default for BlockQ4_K {
    fn default() -> Self {
        BlockQ4_K {
            d: [0; 2],
            dmin: [0; 2],
            scales: [0; 12],
            qs: [0; QK_K / 2],
        }
    }
}

impl QuantBlock for BlockQ4_K {
    const TYPE: GgmlType = GgmlType::Q4_K;
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

    /// Port of `dequantize_row_q4_K` (ggml-quants.c).
    pub fn dequantize(x: &[BlockQ4_K], y: &mut [f32]) {
        for (b, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
            let d = f16_le(b.d);
            let min = f16_le(b.dmin);
            for j in 0..4 {
                let (sc, m) = get_scale_min_k4(2 * j, &b.scales);
                let (d1, m1) = (d * sc as f32, min * m as f32);
                let (sc, m) = get_scale_min_k4(2 * j + 1, &b.scales);
                let (d2, m2) = (d * sc as f32, min * m as f32);
                let q = &b.qs[32 * j..32 * j + 32];
                let y = &mut y[64 * j..64 * j + 64];
                for l in 0..32 {
                    y[l] = d1 * (q[l] & 0xF) as f32 - m1;
                    y[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
                }
            }
        }
    }

    /// Port of `quantize_row_q4_K_ref` (ggml-quants.c).
    pub fn quantize(x: &[f32], y: &mut [BlockQ4_K]) {
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
                    15,
                    xs,
                    &weights,
                    &mut l[32 * j..32 * j + 32],
                    &mut mins[j],
                    &mut laux,
                    -1.0,
                    0.1,
                    20,
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
                    l[32 * j + ii] = q.clamp(0, 15) as u8;
                }
            }
            for j in 0..QK_K / 64 {
                for i in 0..32 {
                    b.qs[32 * j + i] = l[64 * j + i] | (l[64 * j + i + 32] << 4);
                }
            }
        }
    }

    /// Port of `ggml_vec_dot_q4_K_q8_K_generic` (ggml-cpu/quants.c).
    pub fn vec_dot(x: &[BlockQ4_K], y: &[BlockQ8_K]) -> f32 {
        let mut aux8 = [0i8; QK_K];
        let mut sums = [0f32; 8];
        let mut sumf = 0.0f32;
        for (xb, yb) in x.iter().zip(y) {
            for j in 0..QK_K / 64 {
                for l in 0..32 {
                    aux8[64 * j + l] = (xb.qs[32 * j + l] & 0xF) as i8;
                    aux8[64 * j + 32 + l] = (xb.qs[32 * j + l] >> 4) as i8;
                }
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

    /// Port of `ggml_vec_dot_q4_K_q8_K` (ggml-cpu/arch/x86/quants.c, AVX2 branch).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn vec_dot(x: &[BlockQ4_K], y: &[BlockQ8_K]) -> f32 {
        let m4 = _mm256_set1_epi8(0xF);
        let mut acc = _mm256_setzero_ps();
        let mut acc_m = _mm_setzero_ps();
        for (xb, yb) in x.iter().zip(y) {
            let d = yb.d() * h2f(xb.d);
            let dmin = -yb.d() * h2f(xb.dmin);
            let (sc, mn) = unpack_scales_mins_k4(&xb.scales);
            let mut utmp = [0u8; 16];
            utmp[..8].copy_from_slice(&sc);
            utmp[8..].copy_from_slice(&mn);
            // SAFETY: 16 bytes of `utmp`, 32 bytes of `bsums`.
            let (sm, q8sums) = unsafe { (load128(utmp.as_ptr()), load256(yb.bsums.as_ptr())) };
            let mins_and_scales = _mm256_cvtepu8_epi16(sm);
            let q8s = _mm_hadd_epi16(
                _mm256_extracti128_si256::<0>(q8sums),
                _mm256_extracti128_si256::<1>(q8sums),
            );
            let prod = _mm_madd_epi16(_mm256_extracti128_si256::<1>(mins_and_scales), q8s);
            acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod), acc_m);

            let sc128 = _mm256_extracti128_si256::<0>(mins_and_scales);
            let scales = _mm256_set_m128i(sc128, sc128);

            let mut sumi = _mm256_setzero_si256();
            let q4 = xb.qs.as_ptr();
            let q8 = yb.qs.as_ptr();
            for j in 0..QK_K / 64 {
                let scale_l = _mm256_shuffle_epi8(scales, get_scale_shuffle_k4(2 * j));
                let scale_h = _mm256_shuffle_epi8(scales, get_scale_shuffle_k4(2 * j + 1));
                // SAFETY: 32 bytes at 32j < 128 in `qs`; 64 bytes at 64j < 256 in the Q8_K quants.
                let (q4bits, q8l, q8h) = unsafe {
                    (
                        load256(q4.add(32 * j)),
                        load256(q8.add(64 * j)),
                        load256(q8.add(64 * j + 32)),
                    )
                };
                let q4l = _mm256_and_si256(q4bits, m4);
                let q4h = _mm256_and_si256(_mm256_srli_epi16::<4>(q4bits), m4);
                let p16l = _mm256_madd_epi16(scale_l, _mm256_maddubs_epi16(q4l, q8l));
                let p16h = _mm256_madd_epi16(scale_h, _mm256_maddubs_epi16(q4h, q8h));
                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p16l, p16h));
            }
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
        }
        acc_m = _mm_add_ps(acc_m, _mm_movehl_ps(acc_m, acc_m));
        acc_m = _mm_add_ss(acc_m, _mm_movehdup_ps(acc_m));
        hsum_float_8(acc) + _mm_cvtss_f32(acc_m)
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub(crate) mod simd128 {
    use super::super::wasm::*;
    use super::*;
    use core::arch::wasm32::*;

    /// Bit-identical twin of the AVX2 `ggml_vec_dot_q4_K_q8_K` (ggml-cpu/arch/x86/quants.c; see
    /// `avx2::vec_dot`): lane k of each 32-value group holds values 4k..4k+4, scaled in i32; one
    /// fused multiply-add per super-block into eight lanes, the mins into four.
    pub fn vec_dot(x: &[BlockQ4_K], y: &[BlockQ8_K]) -> f32 {
        let mut acc = Acc8::zero();
        let mut acc_m = Acc4::zero();
        for (xb, yb) in x.iter().zip(y) {
            let d = yb.d() * f16_le(xb.d);
            let dmin = -yb.d() * f16_le(xb.dmin);
            let (sc, mn) = unpack_scales_mins_k4(&xb.scales);
            // `_mm_madd_epi16(mins, _mm_hadd_epi16(bsums))`: lane k holds sub-blocks 2k, 2k+1.
            let bs = |j: usize| yb.bsum(2 * j) as i32 + yb.bsum(2 * j + 1) as i32;
            let m = |k: usize| mn[2 * k] as i32 * bs(2 * k) + mn[2 * k + 1] as i32 * bs(2 * k + 1);
            acc_m.fmadd_i32::<true>(dmin, i32x4(m(0), m(1), m(2), m(3)));

            let q4 = xb.qs.as_ptr();
            let q8 = yb.qs.as_ptr();
            let (mut lo, mut hi) = (i32x4_splat(0), i32x4_splat(0));
            for j in 0..QK_K / 64 {
                // SAFETY: 32 bytes at 32j < 128 in `qs`; 64 bytes at 64j < 256 in the Q8_K quants.
                let (a0, a1, y0, y1, y2, y3) = unsafe {
                    (
                        load(q4.add(32 * j)),
                        load(q4.add(32 * j + 16)),
                        load(q8.add(64 * j)),
                        load(q8.add(64 * j + 16)),
                        load(q8.add(64 * j + 32)),
                        load(q8.add(64 * j + 48)),
                    )
                };
                // Low nibbles: values 64j..64j+32 (scale 2j); high nibbles: the next 32.
                let (l0, h0) = dot4_nibbles(a0, y0, y2);
                let (l1, h1) = dot4_nibbles(a1, y1, y3);
                let (s0, s1) = (
                    i32x4_splat(sc[2 * j] as i32),
                    i32x4_splat(sc[2 * j + 1] as i32),
                );
                lo = i32x4_add(lo, i32x4_add(i32x4_mul(l0, s0), i32x4_mul(h0, s1)));
                hi = i32x4_add(hi, i32x4_add(i32x4_mul(l1, s0), i32x4_mul(h1, s1)));
            }
            acc.fmadd_i32::<true>(d, lo, hi);
        }
        let m = acc_m.lanes();
        acc.hsum() + ((m[0] + m[2]) + (m[1] + m[3]))
    }
}

#[cfg(target_arch = "aarch64")]
pub(crate) mod neon {
    use super::super::neon::*;
    use super::*;
    use core::arch::aarch64::*;

    /// Port of `ggml_vec_dot_q4_K_q8_K` (ggml-cpu/arch/arm/quants.c, `__ARM_NEON` branch).
    #[target_feature(enable = "neon")]
    pub fn vec_dot(x: &[BlockQ4_K], y: &[BlockQ8_K]) -> f32 {
        let m4b = vdupq_n_u8(0xF);
        let mut sumf = 0.0f32;
        for (xb, yb) in x.iter().zip(y) {
            let d = yb.d() * h2f(xb.d);
            let dmin = yb.d() * h2f(xb.dmin);
            let (scales, min_sum) = k4_scales_min_sum(&xb.scales, &yb.bsums);
            sumf -= dmin * min_sum as f32;

            let (q4, q8) = (xb.qs.as_ptr(), yb.qs.as_ptr());
            let (mut sumi1, mut sumi2) = (0i32, 0i32);
            for j in 0..QK_K / 64 {
                // SAFETY: 32 bytes at 32j < 128 in `qs`; 64 bytes at 64j < 256 in the Q8_K quants.
                let (a0, a1, y0, y1, y2, y3) = unsafe {
                    (
                        ld_u8(q4.add(32 * j)),
                        ld_u8(q4.add(32 * j + 16)),
                        ld_s8(q8.add(64 * j)),
                        ld_s8(q8.add(64 * j + 16)),
                        ld_s8(q8.add(64 * j + 32)),
                        ld_s8(q8.add(64 * j + 48)),
                    )
                };
                // Low nibbles: values 64j..64j+32 (scale 2j); high nibbles: the next 32.
                let p1 = dot2_i8(
                    vreinterpretq_s8_u8(vandq_u8(a0, m4b)),
                    y0,
                    vreinterpretq_s8_u8(vandq_u8(a1, m4b)),
                    y1,
                );
                sumi1 += vaddvq_s32(p1) * scales[2 * j] as i32;
                let p2 = dot2_i8(
                    vreinterpretq_s8_u8(vshrq_n_u8::<4>(a0)),
                    y2,
                    vreinterpretq_s8_u8(vshrq_n_u8::<4>(a1)),
                    y3,
                );
                sumi2 += vaddvq_s32(p2) * scales[2 * j + 1] as i32;
            }
            sumf += d * (sumi1 + sumi2) as f32;
        }
        sumf
    }
}
