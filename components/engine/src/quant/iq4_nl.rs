//! IQ4_NL: blocks of 32 values, `x = d * kvalues[q]` with 4-bit indices into a fixed
//! non-linear table and an f16 scale. Also home of the quantizer shared with IQ4_XS.

use super::util::{KVALUES_IQ4NL, Pod, f16_le, f32_to_fp16, nearest_int};
use super::{BlockQ8_0, GgmlType, QuantBlock};

/// ggml's `block_iq4_nl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockIQ4_NL {
    /// Scale (f16).
    pub d: [u8; 2],
    /// Table indices (value j low nibble, j+16 high nibble).
    pub qs: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<BlockIQ4_NL>() == 18);
// SAFETY: byte arrays only.
unsafe impl Pod for BlockIQ4_NL {}
impl super::sealed::Sealed for BlockIQ4_NL {}

impl QuantBlock for BlockIQ4_NL {
    const TYPE: GgmlType = GgmlType::IQ4_NL;
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

/// Port of `best_index_int8` (ggml-quants.c): index of the table value nearest to `x`.
#[inline]
fn best_index_int8(val: &[i8; 16], x: f32) -> u8 {
    if x <= val[0] as f32 {
        return 0;
    }
    if x >= val[15] as f32 {
        return 15;
    }
    let (mut ml, mut mu) = (0usize, 15usize);
    while mu - ml > 1 {
        let mav = (ml + mu) / 2;
        if x < val[mav] as f32 {
            mu = mav;
        } else {
            ml = mav;
        }
    }
    if x - (val[mu - 1] as f32) < val[mu] as f32 - x {
        (mu - 1) as u8
    } else {
        mu as u8
    }
}

/// The outputs of [`quantize_iq4_nl_impl`] for one super-block.
pub(crate) struct Iq4Out<'a> {
    /// Super-block scale (f16 bits).
    pub dh: &'a mut u16,
    /// Packed indices, `super_block_size / 2` bytes.
    pub q4: &'a mut [u8],
    /// High 2 bits of the sub-block scales (IQ4_XS only).
    pub scales_h: &'a mut u16,
    /// Low 4 bits of the sub-block scales (IQ4_XS only; empty for IQ4_NL).
    pub scales_l: &'a mut [u8],
}

/// Port of `quantize_row_iq4_nl_impl` (ggml-quants.c) without importance weights:
/// quantizes `x` (one super-block of `x.len()` values, sub-blocks of 32) to table indices.
pub(crate) fn quantize_iq4_nl_impl(x: &[f32], out: Iq4Out<'_>, ntry: i32) {
    const BLOCK_SIZE: usize = 32;
    let values = &KVALUES_IQ4NL;
    let super_block_size = x.len();
    let nb = super_block_size / BLOCK_SIZE;
    let mut l = [0u8; 256];
    let l = &mut l[..super_block_size.min(256)];
    let mut scales = [0f32; 8];
    let mut weight = [0f32; BLOCK_SIZE];

    out.q4.fill(0);
    *out.dh = f32_to_fp16(0.0);

    let mut max_scale = 0.0f32;
    let mut amax_scale = 0.0f32;
    for ib in 0..nb.min(8) {
        let xb = &x[ib * BLOCK_SIZE..(ib + 1) * BLOCK_SIZE];
        let lb = &mut l[ib * BLOCK_SIZE..(ib + 1) * BLOCK_SIZE];
        for (w, &v) in weight.iter_mut().zip(xb) {
            *w = v * v;
        }
        let mut amax = 0.0f32;
        let mut max = 0.0f32;
        for &v in xb {
            let ax = v.abs();
            if ax > amax {
                amax = ax;
                max = v;
            }
        }
        if amax < super::k_common::GROUP_MAX_EPS {
            scales[ib] = 0.0;
            continue;
        }
        let mut d = if ntry > 0 {
            -max / values[0] as f32
        } else {
            max / values[0] as f32
        };
        let mut id = 1.0 / d;
        let mut sumqx = 0.0f32;
        let mut sumq2 = 0.0f32;
        for j in 0..BLOCK_SIZE {
            let al = id * xb[j];
            let li = best_index_int8(values, al);
            lb[j] = li;
            let q = values[li as usize] as f32;
            let w = weight[j];
            sumqx += w * q * xb[j];
            sumq2 += w * q * q;
        }
        d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
        let mut best = d * sumqx;
        for itry in -ntry..=ntry {
            id = (itry as f32 + values[0] as f32) / max;
            sumqx = 0.0;
            sumq2 = 0.0;
            for j in 0..BLOCK_SIZE {
                let al = id * xb[j];
                let li = best_index_int8(values, al);
                let q = values[li as usize] as f32;
                let w = weight[j];
                sumqx += w * q * xb[j];
                sumq2 += w * q * q;
            }
            if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
                d = sumqx / sumq2;
                best = d * sumqx;
            }
        }
        scales[ib] = d;
        let abs_d = d.abs();
        if abs_d > amax_scale {
            amax_scale = abs_d;
            max_scale = d;
        }
    }

    if nb > 1 {
        *out.scales_h = 0;
        let d = -max_scale / 32.0;
        *out.dh = f32_to_fp16(d);
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        for ib in 0..nb.min(8) {
            let mut li = nearest_int(id * scales[ib]).clamp(-32, 31);
            let dl = d * li as f32;
            let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
            let lb = &mut l[ib * BLOCK_SIZE..(ib + 1) * BLOCK_SIZE];
            let xb = &x[ib * BLOCK_SIZE..(ib + 1) * BLOCK_SIZE];
            for (q, &v) in lb.iter_mut().zip(xb) {
                *q = best_index_int8(values, idl * v);
            }
            li += 32;
            let l_l = (li & 0xf) as u8;
            let l_h = (li >> 4) as u16;
            if let Some(sl) = out.scales_l.get_mut(ib / 2) {
                if ib % 2 == 0 {
                    *sl = l_l;
                } else {
                    *sl |= l_l << 4;
                }
            }
            *out.scales_h |= l_h << (2 * (ib % 8));
        }
    } else {
        *out.dh = f32_to_fp16(scales[0]);
        if ntry > 0 {
            let id = if scales[0] != 0.0 {
                1.0 / scales[0]
            } else {
                0.0
            };
            for (q, &v) in l.iter_mut().zip(x) {
                *q = best_index_int8(values, id * v);
            }
        }
    }

    for i in 0..super_block_size / 32 {
        for j in 0..16 {
            if let Some(b) = out.q4.get_mut(16 * i + j) {
                *b = l[32 * i + j] | (l[32 * i + 16 + j] << 4);
            }
        }
    }
}

pub(crate) mod scalar {
    use super::*;

    /// Port of `dequantize_row_iq4_nl` (ggml-quants.c).
    pub fn dequantize(x: &[BlockIQ4_NL], y: &mut [f32]) {
        for (b, y) in x.iter().zip(y.chunks_exact_mut(32)) {
            let d = f16_le(b.d);
            for j in 0..16 {
                y[j] = d * KVALUES_IQ4NL[(b.qs[j] & 0xf) as usize] as f32;
                y[j + 16] = d * KVALUES_IQ4NL[(b.qs[j] >> 4) as usize] as f32;
            }
        }
    }

    /// Port of `quantize_row_iq4_nl_ref` (ggml-quants.c; `ntry = -1`, no importance weights).
    pub fn quantize(x: &[f32], y: &mut [BlockIQ4_NL]) {
        for (x, b) in x.chunks_exact(32).zip(y.iter_mut()) {
            let mut dh = 0u16;
            let mut unused_h = 0u16;
            quantize_iq4_nl_impl(
                x,
                Iq4Out {
                    dh: &mut dh,
                    q4: &mut b.qs,
                    scales_h: &mut unused_h,
                    scales_l: &mut [],
                },
                -1,
            );
            b.d = dh.to_le_bytes();
        }
    }

    /// Port of `ggml_vec_dot_iq4_nl_q8_0_generic` (ggml-cpu/quants.c).
    pub fn vec_dot(x: &[BlockIQ4_NL], y: &[BlockQ8_0]) -> f32 {
        let mut sumf = 0.0f32;
        for (xb, yb) in x.iter().zip(y) {
            let d = f16_le(yb.d) * f16_le(xb.d);
            let mut sumi1 = 0i32;
            let mut sumi2 = 0i32;
            for j in 0..16 {
                sumi1 += yb.qs[j] as i32 * KVALUES_IQ4NL[(xb.qs[j] & 0xf) as usize] as i32;
                sumi2 += yb.qs[j + 16] as i32 * KVALUES_IQ4NL[(xb.qs[j] >> 4) as usize] as i32;
            }
            sumf += d * (sumi1 + sumi2) as f32;
        }
        sumf
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use super::super::x86::*;
    use super::*;
    use core::arch::x86_64::*;

    /// Port of `ggml_vec_dot_iq4_nl_q8_0` (ggml-cpu/arch/x86/quants.c, AVX2 branch): pairs of
    /// blocks in two accumulators, then an odd last block the scalar way.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn vec_dot(x: &[BlockIQ4_NL], y: &[BlockQ8_0]) -> f32 {
        let nb = x.len().min(y.len());
        // SAFETY: the table is 16 bytes.
        let values128 = unsafe { load128(KVALUES_IQ4NL.as_ptr()) };
        let m4b = _mm_set1_epi8(0x0f);
        let mone = _mm256_set1_epi16(1);
        let mut accum1 = _mm256_setzero_ps();
        let mut accum2 = _mm256_setzero_ps();
        let mut ib = 0;
        while ib + 1 < nb {
            let (x0, x1, y0, y1) = (&x[ib], &x[ib + 1], &y[ib], &y[ib + 1]);
            // SAFETY: 16 bytes of each `qs` (IQ4_NL), 32 of each `qs` (Q8_0).
            let (q4bits_1, q4bits_2, q8b_1, q8b_2) = unsafe {
                (
                    load128(x0.qs.as_ptr()),
                    load128(x1.qs.as_ptr()),
                    load256(y0.qs.as_ptr()),
                    load256(y1.qs.as_ptr()),
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
            let p_1 = _mm256_madd_epi16(p16_1, mone);
            let p_2 = _mm256_madd_epi16(p16_2, mone);
            accum1 = _mm256_fmadd_ps(
                _mm256_set1_ps(h2f_first(y0) * h2f_first(x0)),
                _mm256_cvtepi32_ps(p_1),
                accum1,
            );
            accum2 = _mm256_fmadd_ps(
                _mm256_set1_ps(h2f_first(y1) * h2f_first(x1)),
                _mm256_cvtepi32_ps(p_2),
                accum2,
            );
            ib += 2;
        }
        let mut sumf = hsum_float_8(_mm256_add_ps(accum1, accum2));
        if ib < nb {
            sumf += scalar::vec_dot(&x[ib..nb], &y[ib..nb]);
        }
        sumf
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub(crate) mod simd128 {
    use super::super::wasm::*;
    use super::*;
    use core::arch::wasm32::*;

    /// Bit-identical twin of the AVX2 `ggml_vec_dot_iq4_nl_q8_0` (ggml-cpu/arch/x86/quants.c;
    /// see `avx2::vec_dot`): table lookup with `i8x16_swizzle`, blocks alternating between two
    /// accumulators, an odd last block the scalar way.
    pub fn vec_dot(x: &[BlockIQ4_NL], y: &[BlockQ8_0]) -> f32 {
        let nb = x.len().min(y.len());
        // SAFETY: the table is 16 bytes.
        let values = unsafe { load(KVALUES_IQ4NL.as_ptr()) };
        let m4 = i8x16_splat(0x0F);
        let mut accum = [Acc8::zero(); 2];
        let block = |acc: &mut Acc8, xb: &BlockIQ4_NL, yb: &BlockQ8_0| {
            // SAFETY: `qs` of IQ4_NL is 16 bytes, `qs` of Q8_0 is 32 bytes.
            let (raw, y0, y1) = unsafe {
                (
                    load(xb.qs.as_ptr()),
                    load(yb.qs.as_ptr()),
                    load(yb.qs.as_ptr().add(16)),
                )
            };
            let lo = i8x16_swizzle(values, v128_and(raw, m4));
            let hi = i8x16_swizzle(values, u8x16_shr(raw, 4));
            let d = f16_le(yb.d) * f16_le(xb.d);
            acc.fmadd_i32::<false>(d, dot4_i8(lo, y0), dot4_i8(hi, y1));
        };
        let mut ib = 0;
        while ib + 1 < nb {
            block(&mut accum[0], &x[ib], &y[ib]);
            block(&mut accum[1], &x[ib + 1], &y[ib + 1]);
            ib += 2;
        }
        let (a1, a2) = (accum[0].lanes(), accum[1].lanes());
        let mut sumf = hsum_float_8(std::array::from_fn(|i| a1[i] + a2[i]));
        if ib < nb {
            sumf += scalar::vec_dot(&x[ib..nb], &y[ib..nb]);
        }
        sumf
    }
}

#[cfg(target_arch = "aarch64")]
pub(crate) mod neon {
    use super::super::neon::*;
    use super::*;
    use core::arch::aarch64::*;

    /// Port of `ggml_vec_dot_iq4_nl_q8_0` (ggml-cpu/arch/arm/quants.c, `__ARM_NEON` branch).
    #[target_feature(enable = "neon")]
    pub fn vec_dot(x: &[BlockIQ4_NL], y: &[BlockQ8_0]) -> f32 {
        let table = KVALUES_IQ4NL;
        // SAFETY: the table is 16 bytes.
        let values = unsafe { ld_s8(table.as_ptr()) };
        let mut sumf = 0.0f32;
        let mut done = 0;
        for (xp, yp) in x.chunks_exact(2).zip(y.chunks_exact(2)) {
            let prod = [0, 1].map(|k| {
                let (l, h) = nibbles(&xp[k].qs);
                let q = yp[k].qs.as_ptr();
                // SAFETY: the Q8_0 quants are 32 bytes.
                let (y0, y1) = unsafe { (ld_s8(q), ld_s8(q.add(16))) };
                vaddvq_s32(dot2_i8(
                    vqtbl1q_s8(values, l),
                    y0,
                    vqtbl1q_s8(values, h),
                    y1,
                )) as f32
            });
            sumf += h2f(xp[0].d) * h2f(yp[0].d) * prod[0] + h2f(xp[1].d) * h2f(yp[1].d) * prod[1];
            done += 2;
        }
        sumf + scalar::vec_dot(&x[done..], &y[done..])
    }
}
