//! Q8_0: blocks of 32 values, `x = d * q` with `q` in i8 and an f16 scale. Also the activation
//! type of Q4_0, Q5_0, Q8_0 and IQ4_NL.

use super::util::{Pod, f16_le, f16_to_le, round_act, sat_i8};
use super::{Backend, GgmlType, QuantBlock};

/// ggml's `block_q8_0`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockQ8_0 {
    /// Scale (f16).
    pub d: [u8; 2],
    /// Quants.
    pub qs: [i8; 32],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);
// SAFETY: byte arrays only.
unsafe impl Pod for BlockQ8_0 {}
impl super::sealed::Sealed for BlockQ8_0 {}

impl QuantBlock for BlockQ8_0 {
    const TYPE: GgmlType = GgmlType::Q8_0;
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

/// The activation quantizer on `backend` (llama.cpp's x86 `quantize_row_q8_0`). All backends
/// write the same bytes. The caller checks lengths and availability.
pub(crate) fn quantize_act(backend: Backend, src: &[f32], dst: &mut [BlockQ8_0]) {
    match backend {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `quantize_row_with` checked that AVX2 is available.
        Backend::Avx2 => unsafe { avx2::quantize_act(src, dst) },
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        Backend::Simd128 => simd128::quantize_act(src, dst),
        _ => scalar::quantize_act(src, dst),
    }
}

pub(crate) mod scalar {
    use super::*;

    /// Port of `dequantize_row_q8_0` (ggml-quants.c).
    pub fn dequantize(x: &[BlockQ8_0], y: &mut [f32]) {
        for (b, y) in x.iter().zip(y.chunks_exact_mut(32)) {
            let d = f16_le(b.d);
            for (yj, &q) in y.iter_mut().zip(&b.qs) {
                *yj = q as f32 * d;
            }
        }
    }

    /// Port of `quantize_row_q8_0_ref` (ggml-quants.c): `id = 1/d`, round half away from zero.
    pub fn quantize(x: &[f32], y: &mut [BlockQ8_0]) {
        for (x, b) in x.chunks_exact(32).zip(y.iter_mut()) {
            let mut amax = 0.0f32;
            for &v in x {
                let a = v.abs();
                amax = if amax > a { amax } else { a };
            }
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            b.d = f16_to_le(d);
            for (q, &v) in b.qs.iter_mut().zip(x) {
                *q = (v * id).round() as i8;
            }
        }
    }

    /// Scalar twin of llama.cpp's x86 `quantize_row_q8_0` (ggml-cpu/arch/x86/quants.c):
    /// `id = 127/amax`, round half to even, saturate. Bit-identical to the SIMD versions.
    pub fn quantize_act(x: &[f32], y: &mut [BlockQ8_0]) {
        for (x, b) in x.chunks_exact(32).zip(y.iter_mut()) {
            let mut amax = 0.0f32;
            for &v in x {
                amax = amax.max(v.abs());
            }
            let d = amax / 127.0;
            b.d = f16_to_le(d);
            let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
            for (q, &v) in b.qs.iter_mut().zip(x) {
                *q = sat_i8(round_act(v * id));
            }
        }
    }

    /// Port of `ggml_vec_dot_q8_0_q8_0_generic` (ggml-cpu/quants.c).
    pub fn vec_dot(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
        let mut sumf = 0.0f32;
        for (xb, yb) in x.iter().zip(y) {
            let mut sumi = 0i32;
            for j in 0..32 {
                sumi += xb.qs[j] as i32 * yb.qs[j] as i32;
            }
            sumf += sumi as f32 * (f16_le(xb.d) * f16_le(yb.d));
        }
        sumf
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use super::super::x86::*;
    use super::*;
    use core::arch::x86_64::*;

    /// Loads 32 floats, returns them and their max |x| (the AVX part of ggml's x86
    /// `quantize_row_q8_0/q8_1`).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) fn load_block_amax(x: &[f32; 32]) -> ([__m256; 4], f32) {
        let p = x.as_ptr();
        // SAFETY: 32 floats.
        let v = unsafe {
            [
                _mm256_loadu_ps(p),
                _mm256_loadu_ps(p.add(8)),
                _mm256_loadu_ps(p.add(16)),
                _mm256_loadu_ps(p.add(24)),
            ]
        };
        let sign_bit = _mm256_set1_ps(-0.0);
        let mut max_abs = _mm256_andnot_ps(sign_bit, v[0]);
        max_abs = _mm256_max_ps(max_abs, _mm256_andnot_ps(sign_bit, v[1]));
        max_abs = _mm256_max_ps(max_abs, _mm256_andnot_ps(sign_bit, v[2]));
        max_abs = _mm256_max_ps(max_abs, _mm256_andnot_ps(sign_bit, v[3]));
        let mut max4 = _mm_max_ps(
            _mm256_extractf128_ps(max_abs, 1),
            _mm256_castps256_ps128(max_abs),
        );
        max4 = _mm_max_ps(max4, _mm_movehl_ps(max4, max4));
        max4 = _mm_max_ss(max4, _mm_movehdup_ps(max4));
        (v, _mm_cvtss_f32(max4))
    }

    /// Scales, rounds to nearest even and converts 32 floats to i32 (ggml's x86 q8 quantizers).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) fn round_to_i32(v: [__m256; 4], id: f32) -> [__m256i; 4] {
        let mul = _mm256_set1_ps(id);
        let r = |x: __m256| {
            _mm256_cvtps_epi32(_mm256_round_ps::<
                { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
            >(_mm256_mul_ps(x, mul)))
        };
        [r(v[0]), r(v[1]), r(v[2]), r(v[3])]
    }

    /// Packs 32 i32 to 32 i8 with saturation, in order, and stores them.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) fn pack_store(i: [__m256i; 4], qs: &mut [i8; 32]) {
        let i0 = _mm256_packs_epi32(i[0], i[1]);
        let i2 = _mm256_packs_epi32(i[2], i[3]);
        let i0 = _mm256_packs_epi16(i0, i2);
        // The packs work per 128-bit lane; this permutation restores the order.
        let perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        let i0 = _mm256_permutevar8x32_epi32(i0, perm);
        // SAFETY: `qs` is 32 bytes.
        unsafe { _mm256_storeu_si256(qs.as_mut_ptr().cast(), i0) };
    }

    /// Port of the AVX2 branch of `quantize_row_q8_0` (ggml-cpu/arch/x86/quants.c).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn quantize_act(x: &[f32], y: &mut [BlockQ8_0]) {
        for (x, b) in x.chunks_exact(32).zip(y.iter_mut()) {
            let Ok(x) = <&[f32; 32]>::try_from(x) else {
                continue;
            };
            let (v, max_scalar) = load_block_amax(x);
            let d = max_scalar / 127.0;
            b.d = f16_to_le(d);
            let id = if max_scalar != 0.0 {
                127.0 / max_scalar
            } else {
                0.0
            };
            pack_store(round_to_i32(v, id), &mut b.qs);
        }
    }

    /// Port of `ggml_vec_dot_q8_0_q8_0` (ggml-cpu/arch/x86/quants.c, AVX2 branch).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn vec_dot(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        for (xb, yb) in x.iter().zip(y) {
            let d = _mm256_set1_ps(h2f_first(xb) * h2f_first(yb));
            // SAFETY: `qs` is 32 bytes.
            let (qx, qy) = unsafe { (load256(xb.qs.as_ptr()), load256(yb.qs.as_ptr())) };
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
    pub unsafe fn vec_dot_x4(x: [&[BlockQ8_0]; 4], y: &[BlockQ8_0]) -> [f32; 4] {
        rows_q8_0::<_, 1, 0>(x, [y], |xb| qu(xb))[0]
    }

    /// Four rows, two activation rows (prefill): [`vec_dot`] of each pair, bit for bit.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn vec_dot_x4t2(x: [&[BlockQ8_0]; 4], y: [&[BlockQ8_0]; 2]) -> [[f32; 4]; 2] {
        rows_q8_0::<_, 2, 0>(x, y, |xb| qu(xb))
    }

    /// This block's values as `u` with `qx = u - 0` (see [`rows_q8_0`]).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn qu(xb: &BlockQ8_0) -> __m256i {
        // SAFETY: `qs` is 32 bytes.
        unsafe { load256(xb.qs.as_ptr()) }
    }

    /// [`vec_dot`] of four rows with `T` activation rows, AVX-512 VNNI sums, bit for bit.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA, F16C and AVX-512 F/VL/VNNI.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
    pub unsafe fn vec_dot_x4_vnni<const T: usize>(
        x: [&[BlockQ8_0]; 4],
        y: [&[BlockQ8_0]; T],
    ) -> [[f32; 4]; T] {
        rows_q8_0_vnni::<_, T, 0>(x, y, |xb| qu(xb))
    }

    /// [`vec_dot`] of four rows with eight activation rows whose block scales are `dy`
    /// (512-bit VNNI, see [`rows_q8_0_x4t8`]), bit for bit.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA, F16C and AVX-512 F/BW/VL/VNNI.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub unsafe fn vec_dot_x4t8_vnni(
        x: [&[BlockQ8_0]; 4],
        y: [&[BlockQ8_0]; 8],
        dy: [&[f32]; 8],
    ) -> [[f32; 4]; 8] {
        // SAFETY: the features are enabled here; `qs` is 32 bytes.
        unsafe {
            rows_q8_0_x4t8(x, y, dy, |a, b| {
                _mm512_inserti64x4::<1>(
                    _mm512_castsi256_si512(load256(a.qs.as_ptr())),
                    load256(b.qs.as_ptr()),
                )
            })
        }
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub(crate) mod simd128 {
    use super::super::wasm::*;
    use super::*;
    use core::arch::wasm32::*;

    /// Loads 32 floats and their max |x|.
    #[inline(always)]
    pub(crate) fn load_block_amax(x: &[f32; 32]) -> ([v128; 8], f32) {
        let mut v = [f32x4_splat(0.0); 8];
        for (j, vj) in v.iter_mut().enumerate() {
            // SAFETY: 4 floats at 4j < 32.
            *vj = unsafe { load(x.as_ptr().add(4 * j)) };
        }
        let mut m = f32x4_abs(v[0]);
        for vj in &v[1..] {
            m = f32x4_max(m, f32x4_abs(*vj));
        }
        let m = f32x4_max(m, i32x4_shuffle::<2, 3, 0, 1>(m, m));
        let m = f32x4_max(m, i32x4_shuffle::<1, 0, 3, 2>(m, m));
        (v, f32x4_extract_lane::<0>(m))
    }

    /// Scales by `id`, rounds half to even and narrows 32 floats to i8 with saturation; also
    /// returns the (wrapping) i32 sum of the rounded values.
    #[inline(always)]
    pub(crate) fn round_pack(v: [v128; 8], id: f32, qs: &mut [i8; 32]) -> i32 {
        let mul = f32x4_splat(id);
        let mut i = [i32x4_splat(0); 8];
        let mut sum = i32x4_splat(0);
        for (ij, vj) in i.iter_mut().zip(v) {
            // |v * id| <= 127 (+ rounding) for finite input, well inside nearest_i32x4's range.
            *ij = nearest_i32x4(f32x4_mul(vj, mul));
            sum = i32x4_add(sum, *ij);
        }
        let a = i8x16_narrow_i16x8(
            i16x8_narrow_i32x4(i[0], i[1]),
            i16x8_narrow_i32x4(i[2], i[3]),
        );
        let b = i8x16_narrow_i16x8(
            i16x8_narrow_i32x4(i[4], i[5]),
            i16x8_narrow_i32x4(i[6], i[7]),
        );
        // SAFETY: `qs` is 32 bytes; v128_store is unaligned.
        unsafe {
            v128_store(qs.as_mut_ptr().cast(), a);
            v128_store(qs.as_mut_ptr().add(16).cast(), b);
        }
        hsum_i32x4(sum)
    }

    /// SIMD128 twin of llama.cpp's x86 `quantize_row_q8_0` (same bytes as `scalar::quantize_act`;
    /// llama.cpp's own wasm version truncates instead of rounding, which we do not copy).
    pub fn quantize_act(x: &[f32], y: &mut [BlockQ8_0]) {
        for (x, b) in x.chunks_exact(32).zip(y.iter_mut()) {
            let Ok(x) = <&[f32; 32]>::try_from(x) else {
                continue;
            };
            let (v, amax) = load_block_amax(x);
            let d = amax / 127.0;
            b.d = f16_to_le(d);
            let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
            round_pack(v, id, &mut b.qs);
        }
    }

    /// Bit-identical twin of the AVX2 `ggml_vec_dot_q8_0_q8_0` (ggml-cpu/arch/x86/quants.c; see
    /// `avx2::vec_dot`): eight lanes of four values, one fused multiply-add per block.
    pub fn vec_dot(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
        let mut acc = Acc8::zero();
        for (xb, yb) in x.iter().zip(y) {
            // SAFETY: `qs` is 32 bytes.
            let (x0, x1, y0, y1) = unsafe {
                (
                    load(xb.qs.as_ptr()),
                    load(xb.qs.as_ptr().add(16)),
                    load(yb.qs.as_ptr()),
                    load(yb.qs.as_ptr().add(16)),
                )
            };
            let d = f16_le(xb.d) * f16_le(yb.d);
            acc.fmadd_i32::<false>(d, dot4_i8(x0, y0), dot4_i8(x1, y1));
        }
        acc.hsum()
    }
    /// [`vec_dot`] of four rows with the same activations, bit for bit (see `rows_q8_0`).
    pub fn vec_dot_x4(x: [&[BlockQ8_0]; 4], y: &[BlockQ8_0]) -> [f32; 4] {
        rows_q8_0::<_, 0>(
            x,
            y,
            |xb| xb.d,
            |xb| {
                // SAFETY: `qs` is 32 bytes.
                unsafe { (load(xb.qs.as_ptr()), load(xb.qs.as_ptr().add(16))) }
            },
        )
    }
}

#[cfg(target_arch = "aarch64")]
pub(crate) mod neon {
    use super::super::neon::*;
    use super::*;

    /// Port of `ggml_vec_dot_q8_0_q8_0` (ggml-cpu/arch/arm/quants.c, `__ARM_NEON` branch).
    #[target_feature(enable = "neon")]
    pub fn vec_dot(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
        let (sumf, done) = q8_pairs(
            x,
            y,
            // SAFETY: `qs` is 32 bytes.
            |xb| unsafe { (ld_s8(xb.qs.as_ptr()), ld_s8(xb.qs.as_ptr().add(16))) },
            |yb| &yb.qs,
            |xb, yb| h2f(xb.d) * h2f(yb.d),
        );
        sumf + scalar::vec_dot(&x[done..], &y[done..])
    }
}
