//! Q4_1: blocks of 32 values, `x = d * q + m` with 4-bit `q`, f16 scale `d` and f16 min `m`.

use super::util::{Pod, f16_le, f16_to_le};
use super::{BlockQ8_1, GgmlType, QuantBlock};

/// ggml's `block_q4_1`: f16 scale, f16 min, 16 bytes of nibbles (value j low, j+16 high).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockQ4_1 {
    /// Scale (f16).
    pub d: [u8; 2],
    /// Minimum (f16).
    pub m: [u8; 2],
    /// Quants, two per byte.
    pub qs: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);
// SAFETY: byte arrays only.
unsafe impl Pod for BlockQ4_1 {}
impl super::sealed::Sealed for BlockQ4_1 {}

impl QuantBlock for BlockQ4_1 {
    const TYPE: GgmlType = GgmlType::Q4_1;
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

    /// Port of `dequantize_row_q4_1` (ggml-quants.c).
    pub fn dequantize(x: &[BlockQ4_1], y: &mut [f32]) {
        for (b, y) in x.iter().zip(y.chunks_exact_mut(32)) {
            let d = f16_le(b.d);
            let m = f16_le(b.m);
            for j in 0..16 {
                let x0 = (b.qs[j] & 0x0F) as i32;
                let x1 = (b.qs[j] >> 4) as i32;
                y[j] = x0 as f32 * d + m;
                y[j + 16] = x1 as f32 * d + m;
            }
        }
    }

    /// Port of `quantize_row_q4_1_ref` (ggml-quants.c).
    pub fn quantize(x: &[f32], y: &mut [BlockQ4_1]) {
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
            let d = (max - min) / 15.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            b.d = f16_to_le(d);
            b.m = f16_to_le(min);
            for j in 0..16 {
                let x0 = (x[j] - min) * id;
                let x1 = (x[16 + j] - min) * id;
                let xi0 = ((x0 + 0.5) as i8).min(15) as u8;
                let xi1 = ((x1 + 0.5) as i8).min(15) as u8;
                b.qs[j] = xi0 | (xi1 << 4);
            }
        }
    }

    /// Port of `ggml_vec_dot_q4_1_q8_1_generic` (ggml-cpu/quants.c).
    pub fn vec_dot(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
        let mut sumf = 0.0f32;
        for (xb, yb) in x.iter().zip(y) {
            let mut sumi0 = 0i32;
            let mut sumi1 = 0i32;
            for j in 0..16 {
                let v0 = (xb.qs[j] & 0x0F) as i32;
                let v1 = (xb.qs[j] >> 4) as i32;
                sumi0 += v0 * yb.qs[j] as i32;
                sumi1 += v1 * yb.qs[j + 16] as i32;
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

    /// Port of `ggml_vec_dot_q4_1_q8_1` (ggml-cpu/arch/x86/quants.c, AVX2 branch).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn vec_dot(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        let mut summs = 0.0f32;
        for (xb, yb) in x.iter().zip(y) {
            // SAFETY: `d, m` and `d, s` are a block's first 4 bytes.
            let ((d0, m0), (d1, s1)) = unsafe {
                (
                    h2f_pair((xb as *const BlockQ4_1).cast()),
                    h2f_pair((yb as *const BlockQ8_1).cast()),
                )
            };
            summs = m0.mul_add(s1, summs);
            let d0d1 = _mm256_mul_ps(_mm256_set1_ps(d0), _mm256_set1_ps(d1));
            let qx = bytes_from_nibbles_32(&xb.qs);
            // SAFETY: `qs` is 32 bytes.
            let qy = unsafe { load256(yb.qs.as_ptr()) };
            let xy = mul_sum_us8_pairs_float(qx, qy);
            acc = _mm256_fmadd_ps(d0d1, xy, acc);
        }
        hsum_float_8(acc) + summs
    }

    /// Four rows against `T` activation rows: each (row, token) result is [`vec_dot`]'s bit for
    /// bit; the rows and tokens are only interleaved (independent FMA chains, four weight streams
    /// read at once, each block decoded once for all tokens), with the weights prefetched
    /// `PREFETCH_AHEAD` bytes ahead.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn rows<const T: usize>(x: [&[BlockQ4_1]; 4], y: [&[BlockQ8_1]; T]) -> [[f32; 4]; T] {
        // SAFETY: AVX2, FMA and F16C are enabled here.
        unsafe { rows_impl::<T, false>(x, y) }
    }

    /// [`rows`] with AVX-512 VNNI sums: `vpdpbusd` of the nibbles with the activations leaves
    /// the lanes `mul_sum_us8_pairs_float` converts (its i16 pair sums, at most 2·15·127, never
    /// saturate), so the results are [`vec_dot`]'s bit for bit.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA, F16C and AVX-512 F/VL/VNNI.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
    pub unsafe fn vec_dot_x4_vnni<const T: usize>(
        x: [&[BlockQ4_1]; 4],
        y: [&[BlockQ8_1]; T],
    ) -> [[f32; 4]; T] {
        // SAFETY: all of `rows_impl`'s features are enabled here.
        unsafe { rows_impl::<T, true>(x, y) }
    }

    /// The body of [`rows`] and [`vec_dot_x4_vnni`].
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C, and AVX-512 F/VL/VNNI if `VNNI`; only call from
    /// functions that enable them.
    #[inline(always)]
    unsafe fn rows_impl<const T: usize, const VNNI: bool>(
        x: [&[BlockQ4_1]; 4],
        y: [&[BlockQ8_1]; T],
    ) -> [[f32; 4]; T] {
        // SAFETY: the caller runs this where its features are enabled; the loads read within
        // the blocks (`d, m`/`d, s` are their first 4 bytes, `qs` 16 or 32 bytes).
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); 4]; T];
            let mut summs = [[0.0f32; 4]; T];
            let nb = x
                .iter()
                .map(|r| r.len())
                .chain(y.iter().map(|r| r.len()))
                .min()
                .unwrap_or(0);
            for i in 0..nb {
                let (mut d1, mut s1, mut qy) =
                    ([0.0f32; T], [0.0f32; T], [_mm256_setzero_si256(); T]);
                for t in 0..T {
                    let yb = &y[t][i];
                    (d1[t], s1[t]) = h2f_pair((yb as *const BlockQ8_1).cast());
                    qy[t] = load256(yb.qs.as_ptr());
                }
                for j in 0..4 {
                    let xb = &x[j][i];
                    _mm_prefetch::<_MM_HINT_T0>(
                        (xb as *const BlockQ4_1)
                            .cast::<i8>()
                            .wrapping_add(PREFETCH_AHEAD),
                    );
                    let (d0, m0) = h2f_pair((xb as *const BlockQ4_1).cast());
                    let qx = bytes_from_nibbles_32(&xb.qs);
                    for t in 0..T {
                        summs[t][j] = m0.mul_add(s1[t], summs[t][j]);
                        let d0d1 = _mm256_mul_ps(_mm256_set1_ps(d0), _mm256_set1_ps(d1[t]));
                        let xy = if VNNI {
                            let zero = _mm256_setzero_si256();
                            _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(zero, qx, qy[t]))
                        } else {
                            mul_sum_us8_pairs_float(qx, qy[t])
                        };
                        acc[t][j] = _mm256_fmadd_ps(d0d1, xy, acc[t][j]);
                    }
                }
            }
            let mut out = [[0.0f32; 4]; T];
            for t in 0..T {
                for j in 0..4 {
                    out[t][j] = hsum_float_8(acc[t][j]) + summs[t][j];
                }
            }
            out
        }
    }

    /// Four rows, one activation row: [`vec_dot`] of each, bit for bit (see `rows`).
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn vec_dot_x4(x: [&[BlockQ4_1]; 4], y: &[BlockQ8_1]) -> [f32; 4] {
        rows(x, [y])[0]
    }

    /// Four rows, two activation rows (prefill): [`vec_dot`] of each pair, bit for bit.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn vec_dot_x4t2(x: [&[BlockQ4_1]; 4], y: [&[BlockQ8_1]; 2]) -> [[f32; 4]; 2] {
        rows(x, y)
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub(crate) mod simd128 {
    use super::super::util::fma_f32;
    use super::super::wasm::*;
    use super::*;
    use core::arch::wasm32::*;

    /// Bit-identical twin of the AVX2 `ggml_vec_dot_q4_1_q8_1` (ggml-cpu/arch/x86/quants.c; see
    /// `avx2::vec_dot`): eight lanes of four values, one fused multiply-add per block, the
    /// `m * s` terms summed with scalar fused multiply-adds.
    pub fn vec_dot(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
        let mut acc = Acc8::zero();
        let mut summs = 0.0f32;
        for (xb, yb) in x.iter().zip(y) {
            summs = fma_f32(f16_le(xb.m), f16_le(yb.s), summs);
            // SAFETY: `qs` of Q4_1 is 16 bytes, `qs` of Q8_1 is 32 bytes.
            let (raw, y0, y1) = unsafe {
                (
                    load(xb.qs.as_ptr()),
                    load(yb.qs.as_ptr()),
                    load(yb.qs.as_ptr().add(16)),
                )
            };
            let (lo, hi) = dot4_nibbles(raw, y0, y1);
            acc.fmadd_i32::<false>(f16_le(xb.d) * f16_le(yb.d), lo, hi);
        }
        acc.hsum() + summs
    }
    /// [`vec_dot`] of four rows with the same activations, interleaved: each row's operations
    /// and their order are [`vec_dot`]'s (so are the results, bit for bit). The rows' scales are
    /// converted four at once and their `m * s` terms summed in one vector; the four chains of
    /// fused multiply-adds overlap.
    pub fn vec_dot_x4(x: [&[BlockQ4_1]; 4], y: &[BlockQ8_1]) -> [f32; 4] {
        let mut acc = [Acc8::zero(); 4];
        // Lane j: row j's `summs`. Sums of products of halves are multiples of 2^-48, never
        // f32-subnormal: no TINY steps.
        let mut summs = Acc4::zero();
        let nb = y
            .len()
            .min(x[0].len())
            .min(x[1].len())
            .min(x[2].len())
            .min(x[3].len());
        for i in 0..nb {
            let yb = &y[i];
            // SAFETY: `qs` of the activation block is 32 bytes.
            let (y0, y1) = unsafe { (load(yb.qs.as_ptr()), load(yb.qs.as_ptr().add(16))) };
            let m = f16x4_le([x[0][i].m, x[1][i].m, x[2][i].m, x[3][i].m]);
            summs.fmadd_f32::<false>(m, f32x4_splat(f16_le(yb.s)));
            let mut d = [0.0f32; 4];
            let dv = f32x4_mul(
                f16x4_le([x[0][i].d, x[1][i].d, x[2][i].d, x[3][i].d]),
                f32x4_splat(f16_le(yb.d)),
            );
            // SAFETY: 16 bytes into [f32; 4].
            unsafe { v128_store(d.as_mut_ptr().cast(), dv) };
            for j in 0..4 {
                // SAFETY: `qs` of Q4_1 is 16 bytes.
                let raw = unsafe { load(x[j][i].qs.as_ptr()) };
                let (lo, hi) = dot4_nibbles(raw, y0, y1);
                acc[j].fmadd_i32::<false>(d[j], lo, hi);
            }
        }
        let summs = summs.lanes();
        [0, 1, 2, 3].map(|j| acc[j].hsum() + summs[j])
    }
}

#[cfg(target_arch = "aarch64")]
pub(crate) mod neon {
    use super::super::neon::*;
    use super::*;
    use core::arch::aarch64::*;

    /// Port of `ggml_vec_dot_q4_1_q8_1` (ggml-cpu/arch/arm/quants.c, `__ARM_NEON` branch).
    #[target_feature(enable = "neon")]
    pub fn vec_dot(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
        // ggml adds the two blocks' `m * s` first, then into the running sum.
        let mut summs = 0.0f32;
        for (xp, yp) in x.chunks_exact(2).zip(y.chunks_exact(2)) {
            summs += h2f(xp[0].m) * h2f(yp[0].s) + h2f(xp[1].m) * h2f(yp[1].s);
        }
        let (sumf, done) = q8_pairs(
            x,
            y,
            |xb| {
                let (l, h) = nibbles(&xb.qs);
                (vreinterpretq_s8_u8(l), vreinterpretq_s8_u8(h))
            },
            |yb| &yb.qs,
            |xb, yb| h2f(xb.d) * h2f(yb.d),
        );
        sumf + summs + scalar::vec_dot(&x[done..], &y[done..])
    }
}
