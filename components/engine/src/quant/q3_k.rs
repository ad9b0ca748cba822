//! Q3_K: super-blocks of 256 values in 16 groups of 16, `x = d * (sc - 32) * q` with 3-bit
//! signed `q` (2 low bits in `qs`, the high bit in `hmask`, stored inverted) and 6-bit scales.

use super::k_common::{make_q3_quants, unpack_scales_q3k};
use super::util::{Pod, f16_le, f16_to_le, nearest_int};
use super::{BlockQ8_K, GgmlType, QK_K, QuantBlock};

/// ggml's `block_q3_K`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockQ3_K {
    /// High bits of the quants (set = no `-4` offset).
    pub hmask: [u8; QK_K / 8],
    /// Low 2 bits of the quants.
    pub qs: [u8; QK_K / 4],
    /// 16 scales, 6 bits each.
    pub scales: [u8; 12],
    /// Super-block scale (f16).
    pub d: [u8; 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ3_K>() == 110);
// SAFETY: byte arrays only.
unsafe impl Pod for BlockQ3_K {}
impl super::sealed::Sealed for BlockQ3_K {}

impl Default for BlockQ3_K {
    fn default() -> Self {
        BlockQ3_K {
            hmask: [0; QK_K / 8],
            qs: [0; QK_K / 4],
            scales: [0; 12],
            d: [0; 2],
        }
    }
}

impl QuantBlock for BlockQ3_K {
    const TYPE: GgmlType = GgmlType::Q3_K;
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

    /// The 256 signed quants of a block, in value order (the `aux8` of the generic dot).
    #[inline(always)]
    pub(crate) fn unpack(b: &BlockQ3_K, a: &mut [i8; QK_K]) {
        let mut m = 1u8;
        let mut ai = 0;
        for n in 0..QK_K / 128 {
            let q3 = &b.qs[32 * n..32 * n + 32];
            for shift in [0, 2, 4, 6] {
                for l in 0..32 {
                    let lo = ((q3[l] >> shift) & 3) as i8;
                    a[ai + l] = lo - if b.hmask[l] & m != 0 { 0 } else { 4 };
                }
                ai += 32;
                m <<= 1;
            }
        }
    }

    /// Port of `dequantize_row_q3_K` (ggml-quants.c).
    pub fn dequantize(x: &[BlockQ3_K], y: &mut [f32]) {
        let mut a = [0i8; QK_K];
        for (b, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
            let d_all = f16_le(b.d);
            let scales = unpack_scales_q3k(&b.scales);
            unpack(b, &mut a);
            for (g, (y, a)) in y.chunks_exact_mut(16).zip(a.chunks_exact(16)).enumerate() {
                let dl = d_all * (scales[g] as i32 - 32) as f32;
                for (yi, &q) in y.iter_mut().zip(a) {
                    *yi = dl * q as f32;
                }
            }
        }
    }

    /// Port of `quantize_row_q3_K_ref` (ggml-quants.c).
    pub fn quantize(x: &[f32], y: &mut [BlockQ3_K]) {
        let mut l = [0i8; QK_K];
        let mut scales = [0f32; QK_K / 16];
        for (x, b) in x.chunks_exact(QK_K).zip(y.iter_mut()) {
            let mut max_scale = 0.0f32;
            let mut amax = 0.0f32;
            for j in 0..QK_K / 16 {
                scales[j] = make_q3_quants(
                    4,
                    &x[16 * j..16 * j + 16],
                    &mut l[16 * j..16 * j + 16],
                    true,
                );
                let scale = scales[j].abs();
                if scale > amax {
                    amax = scale;
                    max_scale = scales[j];
                }
            }
            b.scales = [0; 12];
            if max_scale != 0.0 {
                let iscale = -32.0 / max_scale;
                for j in 0..QK_K / 16 {
                    let mut q = nearest_int(iscale * scales[j]) as i8;
                    q = q.clamp(-32, 31) + 32;
                    if j < 8 {
                        b.scales[j] = q as u8 & 0xF;
                    } else {
                        b.scales[j - 8] |= (q as u8 & 0xF) << 4;
                    }
                    q >>= 4;
                    b.scales[j % 4 + 8] |= (q as u8) << (2 * (j / 4));
                }
                b.d = f16_to_le(1.0 / iscale);
            } else {
                b.d = f16_to_le(0.0);
            }
            for j in 0..QK_K / 16 {
                let sc = if j < 8 {
                    b.scales[j] & 0xF
                } else {
                    b.scales[j - 8] >> 4
                };
                let sc = (sc | (((b.scales[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) as i32 - 32;
                let d = f16_le(b.d) * sc as f32;
                if d == 0.0 {
                    continue;
                }
                for ii in 0..16 {
                    let q = nearest_int(x[16 * j + ii] / d).clamp(-4, 3);
                    l[16 * j + ii] = (q + 4) as i8;
                }
            }
            b.hmask = [0; QK_K / 8];
            let mut m = 0;
            let mut hm = 1u8;
            for j in 0..QK_K {
                if l[j] > 3 {
                    b.hmask[m] |= hm;
                    l[j] -= 4;
                }
                m += 1;
                if m == QK_K / 8 {
                    m = 0;
                    hm <<= 1;
                }
            }
            for n in 0..QK_K / 128 {
                let j = 128 * n;
                for i in 0..32 {
                    b.qs[j / 4 + i] = l[j + i] as u8
                        | ((l[j + i + 32] as u8) << 2)
                        | ((l[j + i + 64] as u8) << 4)
                        | ((l[j + i + 96] as u8) << 6);
                }
            }
        }
    }

    /// Port of `ggml_vec_dot_q3_K_q8_K_generic` (ggml-cpu/quants.c).
    pub fn vec_dot(x: &[BlockQ3_K], y: &[BlockQ8_K]) -> f32 {
        let mut aux8 = [0i8; QK_K];
        let mut sums = [0f32; 8];
        for (xb, yb) in x.iter().zip(y) {
            unpack(xb, &mut aux8);
            let scales = unpack_scales_q3k(&xb.scales);
            let mut aux32 = [0i32; 8];
            for j in 0..QK_K / 16 {
                let scale = scales[j] as i32 - 32;
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

    /// Port of `ggml_vec_dot_q3_K_q8_K` (ggml-cpu/arch/x86/quants.c, AVX2 branch).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn vec_dot(x: &[BlockQ3_K], y: &[BlockQ8_K]) -> f32 {
        let m3 = _mm256_set1_epi8(3);
        let mone = _mm256_set1_epi8(1);
        let m32 = _mm_set1_epi8(32);
        let mut acc = _mm256_setzero_ps();
        for (xb, yb) in x.iter().zip(y) {
            let d = yb.d() * h2f(xb.d);
            let sc = unpack_scales_q3k(&xb.scales);
            // SAFETY: 16 bytes of `sc`, 32 of `hmask`.
            let (mut scales128, hbits) =
                unsafe { (load128(sc.as_ptr()), load256(xb.hmask.as_ptr())) };
            scales128 = _mm_sub_epi8(scales128, m32);
            let all_scales = _mm256_cvtepi8_epi16(scales128);
            let l_scales = _mm256_extracti128_si256::<0>(all_scales);
            let h_scales = _mm256_extracti128_si256::<1>(all_scales);
            let scales = [
                _mm256_set_m128i(l_scales, l_scales),
                _mm256_set_m128i(h_scales, h_scales),
            ];

            let mut sumi = _mm256_setzero_si256();
            let mut bit = 0i32;
            for (j, scj) in scales.iter().enumerate() {
                // SAFETY: 32 bytes at 32j < 64 in `qs`; 128 bytes at 128j < 256 in the Q8_K quants.
                let (q3bits, q8_0, q8_1, q8_2, q8_3) = unsafe {
                    let q8 = yb.qs.as_ptr().add(128 * j);
                    (
                        load256(xb.qs.as_ptr().add(32 * j)),
                        load256(q8),
                        load256(q8.add(32)),
                        load256(q8.add(64)),
                        load256(q8.add(96)),
                    )
                };
                // High part: 4 where the high bit is clear (ggml subtracts it after maddubs).
                let hpart = |b: i32| {
                    let cnt = _mm_cvtsi32_si128(b);
                    let mask = _mm256_sll_epi16(mone, cnt);
                    _mm256_slli_epi16::<2>(_mm256_srl_epi16(_mm256_andnot_si256(hbits, mask), cnt))
                };
                let q3l_0 = _mm256_and_si256(q3bits, m3);
                let q3h_0 = hpart(bit);
                let q3l_1 = _mm256_and_si256(_mm256_srli_epi16::<2>(q3bits), m3);
                let q3h_1 = hpart(bit + 1);
                let q3l_2 = _mm256_and_si256(_mm256_srli_epi16::<4>(q3bits), m3);
                let q3h_2 = hpart(bit + 2);
                let q3l_3 = _mm256_and_si256(_mm256_srli_epi16::<6>(q3bits), m3);
                let q3h_3 = hpart(bit + 3);
                bit += 4;

                let q8s_0 = _mm256_maddubs_epi16(q3h_0, q8_0);
                let q8s_1 = _mm256_maddubs_epi16(q3h_1, q8_1);
                let q8s_2 = _mm256_maddubs_epi16(q3h_2, q8_2);
                let q8s_3 = _mm256_maddubs_epi16(q3h_3, q8_3);

                let mut p16_0 = _mm256_sub_epi16(_mm256_maddubs_epi16(q3l_0, q8_0), q8s_0);
                let mut p16_1 = _mm256_sub_epi16(_mm256_maddubs_epi16(q3l_1, q8_1), q8s_1);
                let mut p16_2 = _mm256_sub_epi16(_mm256_maddubs_epi16(q3l_2, q8_2), q8s_2);
                let mut p16_3 = _mm256_sub_epi16(_mm256_maddubs_epi16(q3l_3, q8_3), q8s_3);

                p16_0 =
                    _mm256_madd_epi16(_mm256_shuffle_epi8(*scj, get_scale_shuffle_q3k(0)), p16_0);
                p16_1 =
                    _mm256_madd_epi16(_mm256_shuffle_epi8(*scj, get_scale_shuffle_q3k(1)), p16_1);
                p16_2 =
                    _mm256_madd_epi16(_mm256_shuffle_epi8(*scj, get_scale_shuffle_q3k(2)), p16_2);
                p16_3 =
                    _mm256_madd_epi16(_mm256_shuffle_epi8(*scj, get_scale_shuffle_q3k(3)), p16_3);

                p16_0 = _mm256_add_epi32(p16_0, p16_1);
                p16_2 = _mm256_add_epi32(p16_2, p16_3);
                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p16_0, p16_2));
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

    /// Bit-identical twin of the AVX2 `ggml_vec_dot_q3_K_q8_K` (ggml-cpu/arch/x86/quants.c; see
    /// `avx2::vec_dot`): signed 3-bit values, lane k of each 32-value group holding values
    /// 4k..4k+4 scaled in i32, one fused multiply-add per super-block.
    pub fn vec_dot(x: &[BlockQ3_K], y: &[BlockQ8_K]) -> f32 {
        let m3 = u16x8_splat(0x0303);
        let four = i8x16_splat(4);
        let zero = i8x16_splat(0);
        let mut acc = Acc8::zero();
        for (xb, yb) in x.iter().zip(y) {
            let d = yb.d() * f16_le(xb.d);
            let sc = unpack_scales_q3k(&xb.scales);
            let (mut lo, mut hi) = (i32x4_splat(0), i32x4_splat(0));
            for half in 0..2 {
                // SAFETY: 16 bytes at 16 * half < 32 in `hmask`.
                let hm = unsafe { load(xb.hmask.as_ptr().add(16 * half)) };
                let mut s = i32x4_splat(0);
                for n in 0..QK_K / 128 {
                    // SAFETY: 16 bytes at 32n + 16 * half < 64 in `qs`.
                    let q = unsafe { load(xb.qs.as_ptr().add(32 * n + 16 * half)) };
                    for k in 0..4u32 {
                        // 4 is subtracted where the high bit is clear.
                        let m = i8x16_splat((1u8 << (4 * n as u32 + k)) as i8);
                        let sub = v128_and(i8x16_eq(v128_and(hm, m), zero), four);
                        let v = i8x16_sub(v128_and(u16x8_shr(q, 2 * k), m3), sub);
                        let g = 8 * n + 2 * k as usize + half;
                        // SAFETY: 16 bytes at 16g < 256 in the Q8_K quants.
                        let yv = unsafe { load(yb.qs.as_ptr().add(16 * g)) };
                        let scale = i32x4_splat(sc[g] as i32 - 32);
                        s = i32x4_add(s, i32x4_mul(dot4_i8(v, yv), scale));
                    }
                }
                if half == 0 {
                    lo = s;
                } else {
                    hi = s;
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

    /// Port of `ggml_vec_dot_q3_K_q8_K` (ggml-cpu/arch/arm/quants.c, `__ARM_NEON` branch).
    #[target_feature(enable = "neon")]
    pub fn vec_dot(x: &[BlockQ3_K], y: &[BlockQ8_K]) -> f32 {
        let m3b = vdupq_n_u8(0x3);
        let m0 = vdupq_n_u8(1);
        let m1 = vdupq_n_u8(2);
        let m2 = vdupq_n_u8(4);
        let m3 = vdupq_n_u8(8);
        let mut sum = 0.0f32;
        for (xb, yb) in x.iter().zip(y) {
            let d = yb.d() * h2f(xb.d);
            let scale = unpack_scales_q3k(&xb.scales).map(|s| s.wrapping_sub(32) as i32);
            let (q3, q8) = (xb.qs.as_ptr(), yb.qs.as_ptr());
            // SAFETY: `hmask` is 32 bytes.
            let mut qh = unsafe { [ld_u8(xb.hmask.as_ptr()), ld_u8(xb.hmask.as_ptr().add(16))] };
            let mut isum = 0i32;
            for j in 0..QK_K / 128 {
                // SAFETY: 32 bytes at 32j < 64 in `qs`; 128 bytes at 128j < 256 in the Q8_K quants.
                let (b, y) = unsafe {
                    (
                        [ld_u8(q3.add(32 * j)), ld_u8(q3.add(32 * j + 16))],
                        [0, 1, 2, 3, 4, 5, 6, 7].map(|k| ld_s8(q8.add(128 * j + 16 * k))),
                    )
                };
                // A clear high bit means "minus 4": `(m & !qh)` moved to the value 4.
                let h = [
                    vshlq_n_u8::<2>(vbicq_u8(m0, qh[0])),
                    vshlq_n_u8::<2>(vbicq_u8(m0, qh[1])),
                    vshlq_n_u8::<1>(vbicq_u8(m1, qh[0])),
                    vshlq_n_u8::<1>(vbicq_u8(m1, qh[1])),
                    vbicq_u8(m2, qh[0]),
                    vbicq_u8(m2, qh[1]),
                    vshrq_n_u8::<1>(vbicq_u8(m3, qh[0])),
                    vshrq_n_u8::<1>(vbicq_u8(m3, qh[1])),
                ];
                let lo = [
                    vandq_u8(b[0], m3b),
                    vandq_u8(b[1], m3b),
                    vandq_u8(vshrq_n_u8::<2>(b[0]), m3b),
                    vandq_u8(vshrq_n_u8::<2>(b[1]), m3b),
                    vandq_u8(vshrq_n_u8::<4>(b[0]), m3b),
                    vandq_u8(vshrq_n_u8::<4>(b[1]), m3b),
                    vandq_u8(vshrq_n_u8::<6>(b[0]), m3b),
                    vandq_u8(vshrq_n_u8::<6>(b[1]), m3b),
                ];
                for k in 0..8 {
                    let q = vsubq_s8(vreinterpretq_s8_u8(lo[k]), vreinterpretq_s8_u8(h[k]));
                    isum += vaddvq_s32(dot_i8(vdupq_n_s32(0), q, y[k])) * scale[8 * j + k];
                }
                if j == 0 {
                    qh = [vshrq_n_u8::<4>(qh[0]), vshrq_n_u8::<4>(qh[1])];
                }
            }
            sum += d * isum as f32;
        }
        sum
    }
}
