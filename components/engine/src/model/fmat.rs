//! F32 and F16 matrix products summed in the order of the kernels llama.cpp's x86 CPU backend
//! runs for them when built for AVX-512 (as the reference build is), so that float-weight models
//! agree with llama.cpp to the last bit rather than to the f32 rounding of a different sum order
//! (which the f16 KV cache and f16 activations downstream turn into visible differences).
//!
//! - Two or more activation rows, a row length that is a multiple of 16 and a row count that is
//!   a multiple of 4 (`tinyBLAS::matmul` declines other shapes): llamafile's tinyBLAS
//!   (`llamafile_sgemm` → `tinyBLAS<16, __m512, __m512, T, T, float>::gemm_bloc`): 16 lanes,
//!   value `i` fused-multiply-added into lane `i % 16`, then `_mm512_reduce_add_ps` (ops'
//!   `reduce16`).
//! - Otherwise `ggml_vec_dot_f32` / `ggml_vec_dot_f16` (ggml-cpu/vec.cpp with the AVX-512
//!   mappings of simd-mappings.h; on AVX512-FP16 the F16 dot still accumulates in f32): four
//!   accumulators of 16 lanes over steps of 64, combined `(a0 + a2) + (a1 + a3)`, reduced, then
//!   the tail values (F32: into the f32 sum, fused as GCC contracts it; F16: in f64).
//!
//! F16 activations are the F16-rounded input (`Acts` converts them as ggml does); products of two
//! f16 values are exact in f32, so their fused and unfused sums agree.
//!
//! On x86_64 with AVX2+FMA+F16C the 16 lanes are two 8-lane registers with real FMAs; elsewhere
//! a scalar version with `ops::fma`.

use super::ops::{fma, reduce16};
use crate::quant::{GgmlType, VecDotFn};

/// The dot product llama.cpp uses for a `ty` matrix of `m` rows of `k` values times `n`
/// activation rows, if it is one emulated here.
pub(crate) fn dot_fn(ty: GgmlType, m: usize, k: usize, n: usize) -> Option<VecDotFn> {
    let tiny = n >= 2 && k.is_multiple_of(16) && m.is_multiple_of(4);
    #[cfg(target_arch = "x86_64")]
    if crate::quant::Backend::Avx2.is_available() {
        return match (ty, tiny) {
            (GgmlType::F32, true) => Some(avx2::tiny_f32),
            (GgmlType::F32, false) => Some(avx2::vec_f32),
            (GgmlType::F16, true) => Some(avx2::tiny_f16),
            (GgmlType::F16, false) => Some(avx2::vec_f16),
            _ => None,
        };
    }
    match (ty, tiny) {
        (GgmlType::F32, true) => Some(scalar::tiny_f32),
        (GgmlType::F32, false) => Some(scalar::vec_f32),
        (GgmlType::F16, true) => Some(scalar::tiny_f16),
        (GgmlType::F16, false) => Some(scalar::vec_f16),
        _ => None,
    }
}

/// Whether `w` and `a` both hold exactly `n` values of `size` bytes (the `VecDotFn` contract:
/// NaN rather than a panic otherwise).
#[inline]
fn lengths_ok(n: usize, w: &[u8], a: &[u8], size: usize) -> bool {
    n.checked_mul(size)
        .is_some_and(|b| w.len() == b && a.len() == b)
}

pub(crate) mod scalar {
    use super::*;

    #[inline(always)]
    fn f32_at(b: &[u8], i: usize) -> f32 {
        f32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
    }

    #[inline(always)]
    fn f16_at(b: &[u8], i: usize) -> f32 {
        half::f16::from_le_bytes([b[2 * i], b[2 * i + 1]]).to_f32()
    }

    /// tinyBLAS order: lane `i % 16` accumulates value `i`.
    #[inline(always)]
    fn tiny(n: usize, at: impl Fn(usize) -> (f32, f32)) -> f32 {
        let mut acc = [0f32; 16];
        for i in 0..n {
            let (x, y) = at(i);
            acc[i % 16] = fma(x, y, acc[i % 16]);
        }
        reduce16(&acc)
    }

    /// `ggml_vec_dot_*` order over the first `n & !63` values; returns the reduced sum.
    #[inline(always)]
    fn vec_body(np: usize, at: &impl Fn(usize) -> (f32, f32)) -> f32 {
        let mut acc = [[0f32; 16]; 4];
        for i in 0..np {
            let (x, y) = at(i);
            let a = &mut acc[(i % 64) / 16][i % 16];
            *a = fma(x, y, *a);
        }
        let mut v = [0f32; 16];
        for l in 0..16 {
            v[l] = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]);
        }
        reduce16(&v)
    }

    pub fn tiny_f32(n: usize, w: &[u8], a: &[u8]) -> f32 {
        if !lengths_ok(n, w, a, 4) {
            return f32::NAN;
        }
        tiny(n, |i| (f32_at(w, i), f32_at(a, i)))
    }

    pub fn tiny_f16(n: usize, w: &[u8], a: &[u8]) -> f32 {
        if !lengths_ok(n, w, a, 2) {
            return f32::NAN;
        }
        tiny(n, |i| (f16_at(w, i), f16_at(a, i)))
    }

    pub fn vec_f32(n: usize, w: &[u8], a: &[u8]) -> f32 {
        if !lengths_ok(n, w, a, 4) {
            return f32::NAN;
        }
        let at = |i| (f32_at(w, i), f32_at(a, i));
        let np = n & !63;
        let mut sum = vec_body(np, &at);
        for i in np..n {
            let (x, y) = at(i);
            sum = fma(x, y, sum);
        }
        sum
    }

    pub fn vec_f16(n: usize, w: &[u8], a: &[u8]) -> f32 {
        if !lengths_ok(n, w, a, 2) {
            return f32::NAN;
        }
        let at = |i| (f16_at(w, i), f16_at(a, i));
        let np = n & !63;
        let mut sum = f64::from(vec_body(np, &at));
        for i in np..n {
            let (x, y) = at(i);
            sum += f64::from(x * y);
        }
        sum as f32
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use super::lengths_ok;
    use core::arch::x86_64::*;

    /// `_mm512_reduce_add_ps` of the 16 lanes `lo ‖ hi` (GCC's order, as ops' `reduce16`).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn reduce16(lo: __m256, hi: __m256) -> f32 {
        let t8 = _mm256_add_ps(hi, lo);
        let t4 = _mm_add_ps(_mm256_extractf128_ps(t8, 1), _mm256_castps256_ps128(t8));
        let mut v = [0f32; 4];
        // SAFETY: v has room for 4 floats; storeu is unaligned.
        unsafe { _mm_storeu_ps(v.as_mut_ptr(), t4) };
        (v[0] + v[2]) + (v[1] + v[3])
    }

    /// 8 values at `p + i` as f32 (`T` is f32, or f16 converted exactly).
    trait Load {
        const SIZE: usize;
        /// # Safety
        /// `p` must point to at least `i + 8` values.
        unsafe fn load8(p: *const u8, i: usize) -> __m256;
    }

    struct F32;
    struct F16;

    impl Load for F32 {
        const SIZE: usize = 4;
        #[inline(always)]
        unsafe fn load8(p: *const u8, i: usize) -> __m256 {
            // SAFETY: the caller guarantees 8 f32 at value i; loadu is unaligned.
            unsafe { _mm256_loadu_ps(p.add(4 * i).cast::<f32>()) }
        }
    }

    impl Load for F16 {
        const SIZE: usize = 2;
        #[inline(always)]
        unsafe fn load8(p: *const u8, i: usize) -> __m256 {
            // SAFETY: the caller guarantees 8 f16 at value i; loadu is unaligned. The caller's
            // target features include f16c.
            unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.add(2 * i).cast::<__m128i>())) }
        }
    }

    /// # Safety
    /// AVX2, FMA and F16C must be available; `w` and `a` hold `n` values, `n % 16 == 0`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn tiny<T: Load>(n: usize, w: &[u8], a: &[u8]) -> f32 {
        let (wp, ap) = (w.as_ptr(), a.as_ptr());
        let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        while i < n {
            // SAFETY: i + 16 <= n values in both rows.
            unsafe {
                lo = _mm256_fmadd_ps(T::load8(wp, i), T::load8(ap, i), lo);
                hi = _mm256_fmadd_ps(T::load8(wp, i + 8), T::load8(ap, i + 8), hi);
            }
            i += 16;
        }
        reduce16(lo, hi)
    }

    /// The first `n & !63` values in `ggml_vec_dot_*` order, reduced.
    ///
    /// # Safety
    /// AVX2, FMA and F16C must be available; `w` and `a` hold at least `np` values, `np % 64 == 0`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn vec_body<T: Load>(np: usize, w: &[u8], a: &[u8]) -> f32 {
        let (wp, ap) = (w.as_ptr(), a.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 8]; // [lo, hi] of 4 accumulators
        let mut i = 0;
        while i < np {
            for (j, s) in acc.iter_mut().enumerate() {
                // SAFETY: i + 8j + 8 <= np values in both rows.
                unsafe {
                    *s = _mm256_fmadd_ps(T::load8(wp, i + 8 * j), T::load8(ap, i + 8 * j), *s)
                };
            }
            i += 64;
        }
        let lo = _mm256_add_ps(_mm256_add_ps(acc[0], acc[4]), _mm256_add_ps(acc[2], acc[6]));
        let hi = _mm256_add_ps(_mm256_add_ps(acc[1], acc[5]), _mm256_add_ps(acc[3], acc[7]));
        reduce16(lo, hi)
    }

    fn f32_at(b: &[u8], i: usize) -> f32 {
        f32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
    }

    fn f16_at(b: &[u8], i: usize) -> f32 {
        half::f16::from_le_bytes([b[2 * i], b[2 * i + 1]]).to_f32()
    }

    // The entries below are only handed out by `dot_fn` after `Backend::Avx2.is_available()`
    // (AVX2, FMA and F16C).

    pub fn tiny_f32(n: usize, w: &[u8], a: &[u8]) -> f32 {
        if !lengths_ok(n, w, a, F32::SIZE) || !n.is_multiple_of(16) {
            return f32::NAN;
        }
        // SAFETY: features checked by the caller (see above); lengths checked here.
        unsafe { tiny::<F32>(n, w, a) }
    }

    pub fn tiny_f16(n: usize, w: &[u8], a: &[u8]) -> f32 {
        if !lengths_ok(n, w, a, F16::SIZE) || !n.is_multiple_of(16) {
            return f32::NAN;
        }
        // SAFETY: as above.
        unsafe { tiny::<F16>(n, w, a) }
    }

    pub fn vec_f32(n: usize, w: &[u8], a: &[u8]) -> f32 {
        if !lengths_ok(n, w, a, F32::SIZE) {
            return f32::NAN;
        }
        let np = n & !63;
        // SAFETY: as above.
        let mut sum = unsafe { vec_body::<F32>(np, w, a) };
        for i in np..n {
            sum = f32_at(w, i).mul_add(f32_at(a, i), sum);
        }
        sum
    }

    pub fn vec_f16(n: usize, w: &[u8], a: &[u8]) -> f32 {
        if !lengths_ok(n, w, a, F16::SIZE) {
            return f32::NAN;
        }
        let np = n & !63;
        // SAFETY: as above.
        let mut sum = f64::from(unsafe { vec_body::<F16>(np, w, a) });
        for i in np..n {
            sum += f64::from(f16_at(w, i) * f16_at(a, i));
        }
        sum as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
        // xorshift: deterministic values of mixed sign and magnitude
        let mut s = seed | 1;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 4.0
        };
        (
            (0..n).map(|_| next()).collect(),
            (0..n).map(|_| next()).collect(),
        )
    }

    fn bytes(ty: GgmlType, v: &[f32]) -> Vec<u8> {
        match ty {
            GgmlType::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            _ => v
                .iter()
                .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
                .collect(),
        }
    }

    /// The order written out plainly, with exact fused multiply-adds.
    fn reference(ty: GgmlType, tiny: bool, w: &[f32], a: &[f32]) -> f32 {
        let r = |x: f32| match ty {
            GgmlType::F32 => x,
            _ => half::f16::from_f32(x).to_f32(),
        };
        let n = w.len();
        if tiny {
            let mut acc = [0f32; 16];
            for i in 0..n {
                acc[i % 16] = r(w[i]).mul_add(r(a[i]), acc[i % 16]);
            }
            return reduce16(&acc);
        }
        let np = n & !63;
        let mut acc = [[0f32; 16]; 4];
        for i in 0..np {
            let s = &mut acc[(i % 64) / 16][i % 16];
            *s = r(w[i]).mul_add(r(a[i]), *s);
        }
        let v: [f32; 16] =
            std::array::from_fn(|l| (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]));
        let s = reduce16(&v);
        if ty == GgmlType::F32 {
            (np..n).fold(s, |s, i| w[i].mul_add(a[i], s))
        } else {
            (np..n).fold(f64::from(s), |s, i| s + f64::from(r(w[i]) * r(a[i]))) as f32
        }
    }

    #[test]
    fn kernels_follow_llama_cpp_order() {
        for ty in [GgmlType::F32, GgmlType::F16] {
            for n in [16, 64, 96, 100, 128, 144, 2048, 4160] {
                let (w, a) = rows(n, n as u64 * 7 + 3);
                let (wb, ab) = (bytes(ty, &w), bytes(ty, &a));
                for tiny in [true, false] {
                    if tiny && !n.is_multiple_of(16) {
                        continue;
                    }
                    let want = reference(ty, tiny, &w, &a);
                    let kernels: [VecDotFn; 2] = match (ty, tiny) {
                        (GgmlType::F32, true) => [scalar::tiny_f32, dot_fn(ty, 4, n, 2).unwrap()],
                        (GgmlType::F32, false) => [scalar::vec_f32, dot_fn(ty, 4, n, 1).unwrap()],
                        (_, true) => [scalar::tiny_f16, dot_fn(ty, 4, n, 2).unwrap()],
                        (_, false) => [scalar::vec_f16, dot_fn(ty, 4, n, 1).unwrap()],
                    };
                    for k in kernels {
                        let got = k(n, &wb, &ab);
                        assert_eq!(got.to_bits(), want.to_bits(), "{ty:?} n={n} tiny={tiny}");
                    }
                }
            }
        }
    }

    #[test]
    fn tinyblas_only_for_shapes_it_takes() {
        // Rows whose two summation orders round differently.
        let (w, a, tiny, vec) = (1..200)
            .map(|seed| {
                let (w, a) = rows(1024, seed);
                let tiny = reference(GgmlType::F32, true, &w, &a);
                let vec = reference(GgmlType::F32, false, &w, &a);
                (w, a, tiny, vec)
            })
            .find(|(_, _, tiny, vec)| tiny != vec)
            .unwrap();
        let (wb, ab) = (bytes(GgmlType::F32, &w), bytes(GgmlType::F32, &a));
        let got = |m, n| dot_fn(GgmlType::F32, m, 1024, n).unwrap()(1024, &wb, &ab).to_bits();
        assert_eq!(got(8, 2), tiny.to_bits());
        assert_eq!(got(8, 1), vec.to_bits());
        assert_eq!(got(289, 80), vec.to_bits());
    }

    #[test]
    fn bad_lengths_give_nan() {
        let w = vec![0u8; 64];
        for ty in [GgmlType::F32, GgmlType::F16] {
            for n in [1, 2] {
                let f = dot_fn(ty, 4, 16, n).unwrap();
                assert!(f(16, &w, &w[..60]).is_nan());
            }
        }
    }
}
