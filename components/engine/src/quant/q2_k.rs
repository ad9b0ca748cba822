//! Q2_K: super-blocks of 256 values in 16 groups of 16, `x = d*sc * q - dmin*m` with 2-bit `q`
//! and 4-bit group scales `sc` and mins `m`.

use super::k_common::make_qkx2_quants;
use super::util::{Pod, f16_le, f16_to_le, nearest_int};
use super::{BlockQ8_K, GgmlType, QK_K, QuantBlock};

/// ggml's `block_q2_K`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockQ2_K {
    /// Group scales (low nibble) and mins (high nibble).
    pub scales: [u8; QK_K / 16],
    /// Quants, four per byte.
    pub qs: [u8; QK_K / 4],
    /// Super-block scale of the scales (f16).
    pub d: [u8; 2],
    /// Super-block scale of the mins (f16).
    pub dmin: [u8; 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ2_K>() == 84);
// SAFETY: byte arrays only.
unsafe impl Pod for BlockQ2_K {}
impl super::sealed::Sealed for BlockQ2_K {}

impl Default for BlockQ2_K {
    fn default() -> Self {
        BlockQ2_K {
            scales: [0; QK_K / 16],
            qs: [0; QK_K / 4],
            d: [0; 2],
            dmin: [0; 2],
        }
    }
}

impl QuantBlock for BlockQ2_K {
    const TYPE: GgmlType = GgmlType::Q2_K;
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

    /// Port of `dequantize_row_q2_K` (ggml-quants.c).
    pub fn dequantize(x: &[BlockQ2_K], y: &mut [f32]) {
        for (b, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
            let d = f16_le(b.d);
            let min = f16_le(b.dmin);
            let mut is = 0;
            let mut yi = 0;
            for n in 0..QK_K / 128 {
                let q = &b.qs[32 * n..32 * n + 32];
                for shift in [0, 2, 4, 6] {
                    for half in 0..2 {
                        let sc = b.scales[is];
                        is += 1;
                        let dl = d * (sc & 0xF) as f32;
                        let ml = min * (sc >> 4) as f32;
                        for l in 0..16 {
                            y[yi] = dl * ((q[16 * half + l] >> shift) & 3) as f32 - ml;
                            yi += 1;
                        }
                    }
                }
            }
        }
    }

    /// Port of `quantize_row_q2_K_ref` (ggml-quants.c).
    pub fn quantize(x: &[f32], y: &mut [BlockQ2_K]) {
        let mut l = [0u8; QK_K];
        let mut laux = [0u8; 16];
        let mut weights = [0f32; 16];
        let mut mins = [0f32; QK_K / 16];
        let mut scales = [0f32; QK_K / 16];
        const Q4SCALE: f32 = 15.0;
        for (x, b) in x.chunks_exact(QK_K).zip(y.iter_mut()) {
            let mut max_scale = 0.0f32;
            let mut max_min = 0.0f32;
            for j in 0..QK_K / 16 {
                let xs = &x[16 * j..16 * j + 16];
                for (w, &v) in weights.iter_mut().zip(xs) {
                    *w = v.abs();
                }
                scales[j] = make_qkx2_quants(
                    3,
                    xs,
                    &weights,
                    &mut l[16 * j..16 * j + 16],
                    &mut mins[j],
                    &mut laux,
                    -0.5,
                    0.1,
                    15,
                    true,
                );
                if scales[j] > max_scale {
                    max_scale = scales[j];
                }
                if mins[j] > max_min {
                    max_min = mins[j];
                }
            }
            if max_scale > 0.0 {
                let iscale = Q4SCALE / max_scale;
                for j in 0..QK_K / 16 {
                    b.scales[j] = nearest_int(iscale * scales[j]) as u8;
                }
                b.d = f16_to_le(max_scale / Q4SCALE);
            } else {
                b.scales = [0; QK_K / 16];
                b.d = f16_to_le(0.0);
            }
            if max_min > 0.0 {
                let iscale = Q4SCALE / max_min;
                for j in 0..QK_K / 16 {
                    let q = nearest_int(iscale * mins[j]);
                    b.scales[j] |= (q << 4) as u8;
                }
                b.dmin = f16_to_le(max_min / Q4SCALE);
            } else {
                b.dmin = f16_to_le(0.0);
            }
            for j in 0..QK_K / 16 {
                let d = f16_le(b.d) * (b.scales[j] & 0xF) as f32;
                if d == 0.0 {
                    continue;
                }
                let dm = f16_le(b.dmin) * (b.scales[j] >> 4) as f32;
                for ii in 0..16 {
                    let q = nearest_int((x[16 * j + ii] + dm) / d);
                    l[16 * j + ii] = q.clamp(0, 3) as u8;
                }
            }
            for n in 0..QK_K / 128 {
                let j = 128 * n;
                for i in 0..32 {
                    b.qs[j / 4 + i] = l[j + i]
                        | (l[j + i + 32] << 2)
                        | (l[j + i + 64] << 4)
                        | (l[j + i + 96] << 6);
                }
            }
        }
    }

    /// Port of `ggml_vec_dot_q2_K_q8_K_generic` (ggml-cpu/quants.c).
    pub fn vec_dot(x: &[BlockQ2_K], y: &[BlockQ8_K]) -> f32 {
        let mut sumf = 0.0f32;
        for (xb, yb) in x.iter().zip(y) {
            let sc = &xb.scales;
            let mut summs = 0i32;
            for j in 0..16 {
                summs += yb.bsum(j) as i32 * (sc[j] >> 4) as i32;
            }
            let dall = yb.d() * f16_le(xb.d);
            let dmin = yb.d() * f16_le(xb.dmin);
            let mut isum = 0i32;
            let mut is = 0;
            let mut q8o = 0;
            for n in 0..QK_K / 128 {
                let q2 = &xb.qs[32 * n..32 * n + 32];
                for shift in [0, 2, 4, 6] {
                    let d = (sc[is] & 0xF) as i32;
                    is += 1;
                    let mut isuml = 0i32;
                    for l in 0..16 {
                        isuml += yb.qs[q8o + l] as i32 * ((q2[l] >> shift) & 3) as i32;
                    }
                    isum += d * isuml;
                    let d = (sc[is] & 0xF) as i32;
                    is += 1;
                    isuml = 0;
                    for l in 16..32 {
                        isuml += yb.qs[q8o + l] as i32 * ((q2[l] >> shift) & 3) as i32;
                    }
                    isum += d * isuml;
                    q8o += 32;
                }
            }
            sumf += dall * isum as f32 - dmin * summs as f32;
        }
        sumf
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use super::super::x86::*;
    use super::*;
    use core::arch::x86_64::*;

    /// Port of `ggml_vec_dot_q2_K_q8_K` (ggml-cpu/arch/x86/quants.c, AVX2 branch).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn vec_dot(x: &[BlockQ2_K], y: &[BlockQ8_K]) -> f32 {
        let m3 = _mm256_set1_epi8(3);
        let m4 = _mm_set1_epi8(0xF);
        let mut acc = _mm256_setzero_ps();
        for (xb, yb) in x.iter().zip(y) {
            let d = yb.d() * h2f(xb.d);
            let dmin = -yb.d() * h2f(xb.dmin);
            // SAFETY: 16 bytes of `scales`, 32 bytes of `bsums`.
            let (mins_and_scales, bsums) =
                unsafe { (load128(xb.scales.as_ptr()), load256(yb.bsums.as_ptr())) };
            let scales8 = _mm_and_si128(mins_and_scales, m4);
            let mins8 = _mm_and_si128(_mm_srli_epi16::<4>(mins_and_scales), m4);
            let mins = _mm256_cvtepi8_epi16(mins8);
            let prod = _mm256_madd_epi16(mins, bsums);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(prod), acc);

            let all_scales = _mm256_cvtepi8_epi16(scales8);
            let l_scales = _mm256_extracti128_si256::<0>(all_scales);
            let h_scales = _mm256_extracti128_si256::<1>(all_scales);
            let scales = [
                _mm256_set_m128i(l_scales, l_scales),
                _mm256_set_m128i(h_scales, h_scales),
            ];

            let mut sumi = _mm256_setzero_si256();
            for (j, sc) in scales.iter().enumerate() {
                // SAFETY: 32 bytes at 32j < 64 in `qs`; 128 bytes at 128j < 256 in the Q8_K quants.
                let (q2bits, q8_0, q8_1, q8_2, q8_3) = unsafe {
                    let q8 = yb.qs.as_ptr().add(128 * j);
                    (
                        load256(xb.qs.as_ptr().add(32 * j)),
                        load256(q8),
                        load256(q8.add(32)),
                        load256(q8.add(64)),
                        load256(q8.add(96)),
                    )
                };
                let q2_0 = _mm256_and_si256(q2bits, m3);
                let q2_1 = _mm256_and_si256(_mm256_srli_epi16::<2>(q2bits), m3);
                let q2_2 = _mm256_and_si256(_mm256_srli_epi16::<4>(q2bits), m3);
                let q2_3 = _mm256_and_si256(_mm256_srli_epi16::<6>(q2bits), m3);

                let mut p0 = _mm256_maddubs_epi16(q2_0, q8_0);
                let mut p1 = _mm256_maddubs_epi16(q2_1, q8_1);
                let mut p2 = _mm256_maddubs_epi16(q2_2, q8_2);
                let mut p3 = _mm256_maddubs_epi16(q2_3, q8_3);

                p0 = _mm256_madd_epi16(_mm256_shuffle_epi8(*sc, get_scale_shuffle_q3k(0)), p0);
                p1 = _mm256_madd_epi16(_mm256_shuffle_epi8(*sc, get_scale_shuffle_q3k(1)), p1);
                p2 = _mm256_madd_epi16(_mm256_shuffle_epi8(*sc, get_scale_shuffle_q3k(2)), p2);
                p3 = _mm256_madd_epi16(_mm256_shuffle_epi8(*sc, get_scale_shuffle_q3k(3)), p3);

                p0 = _mm256_add_epi32(p0, p1);
                p2 = _mm256_add_epi32(p2, p3);
                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p0, p2));
            }
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
        }
        hsum_float_8(acc)
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub(crate) mod simd128 {
    use super::super::wasm::*;
    use super::*;
    use core::arch::wasm32::*;

    /// Bit-identical twin of the AVX2 `ggml_vec_dot_q2_K_q8_K` (ggml-cpu/arch/x86/quants.c; see
    /// `avx2::vec_dot`): first the mins (lane k: groups 2k and 2k+1), then the codes (lane k of
    /// each 32-value group holding values 4k..4k+4, scaled in i32), each with one fused
    /// multiply-add per super-block into the same eight lanes.
    pub fn vec_dot(x: &[BlockQ2_K], y: &[BlockQ8_K]) -> f32 {
        let m3 = u16x8_splat(0x0303);
        let mut acc = Acc8::zero();
        for (xb, yb) in x.iter().zip(y) {
            let d = yb.d() * f16_le(xb.d);
            let dmin = -yb.d() * f16_le(xb.dmin);
            let mins = |k: usize| {
                let (a, b) = (2 * k, 2 * k + 1);
                (xb.scales[a] >> 4) as i32 * yb.bsum(a) as i32
                    + (xb.scales[b] >> 4) as i32 * yb.bsum(b) as i32
            };
            acc.fmadd_i32::<true>(
                dmin,
                i32x4(mins(0), mins(1), mins(2), mins(3)),
                i32x4(mins(4), mins(5), mins(6), mins(7)),
            );

            let (mut lo, mut hi) = (i32x4_splat(0), i32x4_splat(0));
            for n in 0..QK_K / 128 {
                for half in 0..2 {
                    let o = 32 * n + 16 * half;
                    // SAFETY: 16 bytes at o < 64 in `qs`.
                    let q = unsafe { load(xb.qs.as_ptr().add(o)) };
                    let mut s = i32x4_splat(0);
                    for k in 0..4u32 {
                        let g = 8 * n + 2 * k as usize + half;
                        let v = v128_and(u16x8_shr(q, 2 * k), m3);
                        // SAFETY: 16 bytes at 16g < 256 in the Q8_K quants.
                        let yv = unsafe { load(yb.qs.as_ptr().add(16 * g)) };
                        let sc = i32x4_splat((xb.scales[g] & 0xF) as i32);
                        s = i32x4_add(s, i32x4_mul(dot4_u8i8(v, yv), sc));
                    }
                    if half == 0 {
                        lo = i32x4_add(lo, s);
                    } else {
                        hi = i32x4_add(hi, s);
                    }
                }
            }
            acc.fmadd_i32::<true>(d, lo, hi);
        }
        acc.hsum()
    }
}

#[cfg(target_arch = "aarch64")]
pub(crate) mod neon {
    use super::super::neon::*;
    use super::*;
    use core::arch::aarch64::*;

    /// Port of `ggml_vec_dot_q2_K_q8_K` (ggml-cpu/arch/arm/quants.c, `__ARM_NEON` branch).
    #[target_feature(enable = "neon")]
    pub fn vec_dot(x: &[BlockQ2_K], y: &[BlockQ8_K]) -> f32 {
        let m3 = vdupq_n_u8(0x3);
        let m4 = vdupq_n_u8(0xF);
        let mut sum = 0.0f32;
        for (xb, yb) in x.iter().zip(y) {
            let d = yb.d() * h2f(xb.d);
            let dmin = -yb.d() * h2f(xb.dmin);

            // SAFETY: `scales` is 16 bytes, `bsums` 32.
            let (mins_and_scales, s0, s1) = unsafe {
                (
                    ld_u8(xb.scales.as_ptr()),
                    ld_s16(yb.bsums.as_ptr()),
                    ld_s16(yb.bsums.as_ptr().add(16)),
                )
            };
            let mut aux = [0u8; 16];
            // SAFETY: `aux` is 16 bytes.
            unsafe { vst1q_u8(aux.as_mut_ptr(), vandq_u8(mins_and_scales, m4)) };
            let mins = vshrq_n_u8::<4>(mins_and_scales);
            let m0 = vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(mins)));
            let m1 = vreinterpretq_s16_u16(vmovl_u8(vget_high_u8(mins)));
            sum += dmin * vaddvq_s32(vaddq_s32(madd_i16(m0, s0), madd_i16(m1, s1))) as f32;

            let (q2, q8) = (xb.qs.as_ptr(), yb.qs.as_ptr());
            let mut isum = 0i32;
            for j in 0..QK_K / 128 {
                // SAFETY: 32 bytes at 32j < 64 in `qs`.
                let bits = unsafe { [ld_u8(q2.add(32 * j)), ld_u8(q2.add(32 * j + 16))] };
                // Four 2-bit planes of 32 values each, with their 16-value groups' scales.
                let planes = [
                    bits.map(|b| vandq_u8(b, m3)),
                    bits.map(|b| vandq_u8(vshrq_n_u8::<2>(b), m3)),
                    bits.map(|b| vandq_u8(vshrq_n_u8::<4>(b), m3)),
                    bits.map(|b| vandq_u8(vshrq_n_u8::<6>(b), m3)),
                ];
                for (p, q) in planes.iter().enumerate() {
                    let o = 128 * j + 32 * p;
                    // SAFETY: 32 bytes at o < 256 in the Q8_K quants.
                    let (y0, y1) = unsafe { (ld_s8(q8.add(o)), ld_s8(q8.add(o + 16))) };
                    let is = 8 * j + 2 * p;
                    let z = vdupq_n_s32(0);
                    isum += vaddvq_s32(dot_i8(z, vreinterpretq_s8_u8(q[0]), y0)) * aux[is] as i32;
                    isum +=
                        vaddvq_s32(dot_i8(z, vreinterpretq_s8_u8(q[1]), y1)) * aux[is + 1] as i32;
                }
            }
            sum += d * isum as f32;
        }
        sum
    }
}
