//! Q6_K: super-blocks of 256 values in 16 groups of 16, `x = d * sc * (q - 32)` with 6-bit `q`
//! and 8-bit signed group scales `sc`.

use super::k_common::{GROUP_MAX_EPS, make_qx_quants};
use super::util::{Pod, f16_le, f16_to_le, nearest_int};
use super::{BlockQ8_K, GgmlType, QK_K, QuantBlock};

/// ggml's `block_q6_K`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockQ6_K {
    /// Low 4 bits of the quants.
    pub ql: [u8; QK_K / 2],
    /// High 2 bits of the quants.
    pub qh: [u8; QK_K / 4],
    /// Group scales.
    pub scales: [i8; QK_K / 16],
    /// Super-block scale (f16).
    pub d: [u8; 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ6_K>() == 210);
// SAFETY: byte arrays only.
unsafe impl Pod for BlockQ6_K {}
impl super::sealed::Sealed for BlockQ6_K {}

impl Default for BlockQ6_K {
    fn default() -> Self {
        BlockQ6_K {
            ql: [0; QK_K / 2],
            qh: [0; QK_K / 4],
            scales: [0; QK_K / 16],
            d: [0; 2],
        }
    }
}

impl QuantBlock for BlockQ6_K {
    const TYPE: GgmlType = GgmlType::Q6_K;
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

    /// The 256 signed quants (`q - 32`) of a block, in value order.
    #[inline(always)]
    pub(crate) fn unpack(b: &BlockQ6_K, a: &mut [i8; QK_K]) {
        for n in 0..2 {
            let ql = &b.ql[64 * n..64 * n + 64];
            let qh = &b.qh[32 * n..32 * n + 32];
            let a = &mut a[128 * n..128 * n + 128];
            for l in 0..32 {
                a[l] = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
                a[l + 32] = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
                a[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
                a[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
            }
        }
    }

    /// Port of `dequantize_row_q6_K` (ggml-quants.c).
    pub fn dequantize(x: &[BlockQ6_K], y: &mut [f32]) {
        let mut a = [0i8; QK_K];
        for (b, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
            let d = f16_le(b.d);
            unpack(b, &mut a);
            for (i, (yi, &q)) in y.iter_mut().zip(&a).enumerate() {
                *yi = d * b.scales[i / 16] as f32 * q as f32;
            }
        }
    }

    /// Port of `quantize_row_q6_K_ref` (ggml-quants.c).
    pub fn quantize(x: &[f32], y: &mut [BlockQ6_K]) {
        let mut l = [0i8; QK_K];
        let mut scales = [0f32; QK_K / 16];
        for (x, b) in x.chunks_exact(QK_K).zip(y.iter_mut()) {
            let mut max_scale = 0.0f32;
            let mut max_abs_scale = 0.0f32;
            for ib in 0..QK_K / 16 {
                let scale = make_qx_quants(
                    32,
                    &x[16 * ib..16 * ib + 16],
                    &mut l[16 * ib..16 * ib + 16],
                    1,
                    None,
                );
                scales[ib] = scale;
                let abs_scale = scale.abs();
                if abs_scale > max_abs_scale {
                    max_abs_scale = abs_scale;
                    max_scale = scale;
                }
            }
            if max_abs_scale < GROUP_MAX_EPS {
                *b = BlockQ6_K::default();
                b.d = f16_to_le(0.0);
                continue;
            }
            let iscale = -128.0 / max_scale;
            b.d = f16_to_le(1.0 / iscale);
            for ib in 0..QK_K / 16 {
                b.scales[ib] = nearest_int(iscale * scales[ib]).min(127) as i8;
            }
            for j in 0..QK_K / 16 {
                let d = f16_le(b.d) * b.scales[j] as f32;
                if d == 0.0 {
                    continue;
                }
                for ii in 0..16 {
                    let q = nearest_int(x[16 * j + ii] / d).clamp(-32, 31);
                    l[16 * j + ii] = (q + 32) as i8;
                }
            }
            for n in 0..2 {
                let lq = &l[128 * n..128 * n + 128];
                for i in 0..32 {
                    let q1 = lq[i] as u8 & 0xF;
                    let q2 = lq[i + 32] as u8 & 0xF;
                    let q3 = lq[i + 64] as u8 & 0xF;
                    let q4 = lq[i + 96] as u8 & 0xF;
                    b.ql[64 * n + i] = q1 | (q3 << 4);
                    b.ql[64 * n + i + 32] = q2 | (q4 << 4);
                    b.qh[32 * n + i] = (lq[i] as u8 >> 4)
                        | ((lq[i + 32] as u8 >> 4) << 2)
                        | ((lq[i + 64] as u8 >> 4) << 4)
                        | ((lq[i + 96] as u8 >> 4) << 6);
                }
            }
        }
    }

    /// Port of `ggml_vec_dot_q6_K_q8_K_generic` (ggml-cpu/quants.c).
    pub fn vec_dot(x: &[BlockQ6_K], y: &[BlockQ8_K]) -> f32 {
        let mut aux8 = [0i8; QK_K];
        let mut sums = [0f32; 8];
        for (xb, yb) in x.iter().zip(y) {
            unpack(xb, &mut aux8);
            let mut aux32 = [0i32; 8];
            for j in 0..QK_K / 16 {
                let scale = xb.scales[j] as i32;
                for k in 0..2 {
                    let o = 16 * j + 8 * k;
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
        }
        let mut sumf = 0.0f32;
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

    /// Port of `ggml_vec_dot_q6_K_q8_K` (ggml-cpu/arch/x86/quants.c, AVX2 branch).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn vec_dot(x: &[BlockQ6_K], y: &[BlockQ8_K]) -> f32 {
        let m3 = _mm256_set1_epi8(3);
        let m15 = _mm256_set1_epi8(15);
        let mut acc = _mm256_setzero_ps();
        for (xb, yb) in x.iter().zip(y) {
            let d = yb.d() * h2f(xb.d);
            let (mut q4, mut qh, mut q8) = (xb.ql.as_ptr(), xb.qh.as_ptr(), yb.qs.as_ptr());
            // SAFETY: 32 bytes of `bsums`, 16 bytes of `scales`.
            let (q8sums, scales) =
                unsafe { (load256(yb.bsums.as_ptr()), load128(xb.scales.as_ptr())) };
            let scales_16 = _mm256_cvtepi8_epi16(scales);
            let q8sclsub = _mm256_slli_epi32::<5>(_mm256_madd_epi16(q8sums, scales_16));

            let mut sumi = _mm256_setzero_si256();
            let mut is = 0;
            for _ in 0..QK_K / 128 {
                // SAFETY: per step 64 bytes of `ql`, 32 of `qh` and 128 of the Q8_K quants;
                // two steps cover exactly the 128, 64 and 256 bytes.
                let (q4bits1, q4bits2, q4bits_h, q8_0, q8_1, q8_2, q8_3) = unsafe {
                    let r = (
                        load256(q4),
                        load256(q4.add(32)),
                        load256(qh),
                        load256(q8),
                        load256(q8.add(32)),
                        load256(q8.add(64)),
                        load256(q8.add(96)),
                    );
                    q4 = q4.add(64);
                    qh = qh.add(32);
                    q8 = q8.add(128);
                    r
                };
                let q4h_0 = _mm256_slli_epi16::<4>(_mm256_and_si256(q4bits_h, m3));
                let q4h_1 =
                    _mm256_slli_epi16::<2>(_mm256_and_si256(q4bits_h, _mm256_set1_epi8(12)));
                let q4h_2 = _mm256_and_si256(q4bits_h, _mm256_set1_epi8(48));
                let q4h_3 =
                    _mm256_srli_epi16::<2>(_mm256_and_si256(q4bits_h, _mm256_set1_epi8(-64)));

                let q4_0 = _mm256_or_si256(_mm256_and_si256(q4bits1, m15), q4h_0);
                let q4_1 = _mm256_or_si256(_mm256_and_si256(q4bits2, m15), q4h_1);
                let q4_2 = _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(q4bits1), m15),
                    q4h_2,
                );
                let q4_3 = _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(q4bits2), m15),
                    q4h_3,
                );

                let mut p16_0 = _mm256_maddubs_epi16(q4_0, q8_0);
                let mut p16_1 = _mm256_maddubs_epi16(q4_1, q8_1);
                let mut p16_2 = _mm256_maddubs_epi16(q4_2, q8_2);
                let mut p16_3 = _mm256_maddubs_epi16(q4_3, q8_3);

                let scale_0 = _mm_shuffle_epi8(scales, get_scale_shuffle(is));
                let scale_1 = _mm_shuffle_epi8(scales, get_scale_shuffle(is + 1));
                let scale_2 = _mm_shuffle_epi8(scales, get_scale_shuffle(is + 2));
                let scale_3 = _mm_shuffle_epi8(scales, get_scale_shuffle(is + 3));
                is += 4;

                p16_0 = _mm256_madd_epi16(_mm256_cvtepi8_epi16(scale_0), p16_0);
                p16_1 = _mm256_madd_epi16(_mm256_cvtepi8_epi16(scale_1), p16_1);
                p16_2 = _mm256_madd_epi16(_mm256_cvtepi8_epi16(scale_2), p16_2);
                p16_3 = _mm256_madd_epi16(_mm256_cvtepi8_epi16(scale_3), p16_3);

                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p16_0, p16_1));
                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p16_2, p16_3));
            }
            sumi = _mm256_sub_epi32(sumi, q8sclsub);
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

    /// Bit-identical twin of the AVX2 `ggml_vec_dot_q6_K_q8_K` (ggml-cpu/arch/x86/quants.c; see
    /// `avx2::vec_dot`): the unsigned 6-bit codes times the activations, lane k of each 32-value
    /// group holding values 4k..4k+4 scaled in i32, minus `32 * scale * bsum` per lane (lane k:
    /// groups 2k and 2k+1), one fused multiply-add per super-block.
    pub fn vec_dot(x: &[BlockQ6_K], y: &[BlockQ8_K]) -> f32 {
        let m15 = u16x8_splat(0x0F0F);
        let mut acc = Acc8::zero();
        for (xb, yb) in x.iter().zip(y) {
            let d = yb.d() * f16_le(xb.d);
            // SAFETY: 32 bytes of `bsums`, 16 bytes of `scales`.
            let (bs0, bs1, scales) = unsafe {
                (
                    load(yb.bsums.as_ptr()),
                    load(yb.bsums.as_ptr().add(16)),
                    load(xb.scales.as_ptr()),
                )
            };
            let sub0 = i32x4_shl(i32x4_dot_i16x8(bs0, i16x8_extend_low_i8x16(scales)), 5);
            let sub1 = i32x4_shl(i32x4_dot_i16x8(bs1, i16x8_extend_high_i8x16(scales)), 5);
            let (mut lo, mut hi) = (i32x4_splat(0), i32x4_splat(0));
            for c in 0..QK_K / 128 {
                for half in 0..2 {
                    // The 16-byte half `half` of ggml's 32-byte vectors: lanes 4*half..4*half+4.
                    let o = 16 * half;
                    // SAFETY: 16 bytes at offsets < 128 (`ql`), < 64 (`qh`).
                    let (la, lb, h) = unsafe {
                        (
                            load(xb.ql.as_ptr().add(64 * c + o)),
                            load(xb.ql.as_ptr().add(64 * c + 32 + o)),
                            load(xb.qh.as_ptr().add(32 * c + o)),
                        )
                    };
                    // ggml's 16-bit shifts and byte masks: codes 0..64.
                    let q = [
                        v128_or(
                            v128_and(la, m15),
                            i16x8_shl(v128_and(h, u16x8_splat(0x0303)), 4),
                        ),
                        v128_or(
                            v128_and(lb, m15),
                            i16x8_shl(v128_and(h, u16x8_splat(0x0C0C)), 2),
                        ),
                        v128_or(
                            v128_and(u16x8_shr(la, 4), m15),
                            v128_and(h, u16x8_splat(0x3030)),
                        ),
                        v128_or(
                            v128_and(u16x8_shr(lb, 4), m15),
                            u16x8_shr(v128_and(h, u16x8_splat(0xC0C0)), 2),
                        ),
                    ];
                    let mut s = i32x4_splat(0);
                    for (k, qk) in q.into_iter().enumerate() {
                        let g = 8 * c + 2 * k + half;
                        // SAFETY: 16 bytes at 16g < 256.
                        let yv = unsafe { load(yb.qs.as_ptr().add(16 * g)) };
                        let p = dot4_u8i8(qk, yv);
                        s = i32x4_add(s, i32x4_mul(p, i32x4_splat(xb.scales[g] as i32)));
                    }
                    if half == 0 {
                        lo = i32x4_add(lo, s);
                    } else {
                        hi = i32x4_add(hi, s);
                    }
                }
            }
            acc.fmadd_i32::<true>(d, i32x4_sub(lo, sub0), i32x4_sub(hi, sub1));
        }
        acc.hsum()
    }
}

#[cfg(target_arch = "aarch64")]
pub(crate) mod neon {
    use super::super::neon::*;
    use super::*;
    use core::arch::aarch64::*;

    /// Port of `ggml_vec_dot_q6_K_q8_K` (ggml-cpu/arch/arm/quants.c, `__ARM_NEON` branch): the
    /// quants are taken unsigned (0..64) and the offset 32 is removed once per super-block
    /// through the Q8_K block sums.
    #[target_feature(enable = "neon")]
    pub fn vec_dot(x: &[BlockQ6_K], y: &[BlockQ8_K]) -> f32 {
        let m4b = vdupq_n_u8(0xF);
        let mthree = vdupq_n_u8(3);
        let mut sum = 0.0f32;
        for (xb, yb) in x.iter().zip(y) {
            let d_all = h2f(xb.d);
            // SAFETY: `bsums` is 32 bytes, `scales` 16.
            let (s0, s1, scales) = unsafe {
                (
                    ld_s16(yb.bsums.as_ptr()),
                    ld_s16(yb.bsums.as_ptr().add(16)),
                    ld_s8(xb.scales.as_ptr()),
                )
            };
            let isum_mins = vaddvq_s32(vaddq_s32(
                madd_i16(s0, vmovl_s8(vget_low_s8(scales))),
                madd_i16(s1, vmovl_s8(vget_high_s8(scales))),
            ));

            let (ql, qh, q8) = (xb.ql.as_ptr(), xb.qh.as_ptr(), yb.qs.as_ptr());
            let sc = &xb.scales;
            let mut isum = 0i32;
            for j in 0..QK_K / 128 {
                // SAFETY: 32 bytes at 32j < 64 in `qh`, 64 at 64j < 128 in `ql`, 128 at
                // 128j < 256 in the Q8_K quants.
                let (h, l, y_lo, y_hi) = unsafe {
                    let h = [ld_u8(qh.add(32 * j)), ld_u8(qh.add(32 * j + 16))];
                    let l = [0, 1, 2, 3].map(|k| ld_u8(ql.add(64 * j + 16 * k)));
                    let y_lo = [0, 1, 2, 3].map(|k| ld_s8(q8.add(128 * j + 16 * k)));
                    let y_hi = [0, 1, 2, 3].map(|k| ld_s8(q8.add(128 * j + 64 + 16 * k)));
                    (h, l, y_lo, y_hi)
                };
                // Values 128j..128j+64: low nibbles of `l` with bits 0-1 (then 2-3) of `h`.
                let hi = [
                    vshlq_n_u8::<4>(vandq_u8(mthree, h[0])),
                    vshlq_n_u8::<4>(vandq_u8(mthree, h[1])),
                    vshlq_n_u8::<4>(vandq_u8(mthree, vshrq_n_u8::<2>(h[0]))),
                    vshlq_n_u8::<4>(vandq_u8(mthree, vshrq_n_u8::<2>(h[1]))),
                ];
                let s = &sc[8 * j..8 * j + 8];
                for k in 0..4 {
                    let q = vreinterpretq_s8_u8(vorrq_u8(vandq_u8(l[k], m4b), hi[k]));
                    isum += vaddvq_s32(dot_i8(vdupq_n_s32(0), q, y_lo[k])) * s[k] as i32;
                }
                // Values 128j+64..128j+128: high nibbles with bits 4-5 (then 6-7).
                let hi = [
                    vshlq_n_u8::<4>(vandq_u8(mthree, vshrq_n_u8::<4>(h[0]))),
                    vshlq_n_u8::<4>(vandq_u8(mthree, vshrq_n_u8::<4>(h[1]))),
                    vshlq_n_u8::<4>(vandq_u8(mthree, vshrq_n_u8::<6>(h[0]))),
                    vshlq_n_u8::<4>(vandq_u8(mthree, vshrq_n_u8::<6>(h[1]))),
                ];
                for k in 0..4 {
                    let q = vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8::<4>(l[k]), hi[k]));
                    isum += vaddvq_s32(dot_i8(vdupq_n_s32(0), q, y_hi[k])) * s[4 + k] as i32;
                }
            }
            // Wrapping: only garbage block sums could overflow, and must not panic.
            sum += d_all * yb.d() * isum.wrapping_sub(isum_mins.wrapping_mul(32)) as f32;
        }
        sum
    }
}
