//! The float types F32, F16 and BF16 as one-value "blocks", so they share the quant API.
//! Their dot products pair with themselves, as in llama.cpp (`vec_dot_type` F32/F16/BF16).

use super::util::{Pod, bf16_to_f32, f32_to_bf16, f32_to_fp16, fp16_to_f32};
use super::{GgmlType, QuantBlock};

/// One f32 (little-endian).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockF32(pub [u8; 4]);
const _: () = assert!(std::mem::size_of::<BlockF32>() == 4);

/// One IEEE half (little-endian).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockF16(pub [u8; 2]);
const _: () = assert!(std::mem::size_of::<BlockF16>() == 2);

/// One bfloat16 (little-endian).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockBF16(pub [u8; 2]);
const _: () = assert!(std::mem::size_of::<BlockBF16>() == 2);

// SAFETY: byte arrays only.
unsafe impl Pod for BlockF32 {}
// SAFETY: byte arrays only.
unsafe impl Pod for BlockF16 {}
// SAFETY: byte arrays only.
unsafe impl Pod for BlockBF16 {}
impl super::sealed::Sealed for BlockF32 {}
impl super::sealed::Sealed for BlockF16 {}
impl super::sealed::Sealed for BlockBF16 {}

impl BlockF32 {
    #[inline(always)]
    fn get(self) -> f32 {
        f32::from_le_bytes(self.0)
    }
}
impl BlockF16 {
    #[inline(always)]
    fn get(self) -> f32 {
        fp16_to_f32(u16::from_le_bytes(self.0))
    }
}
impl BlockBF16 {
    #[inline(always)]
    fn get(self) -> f32 {
        bf16_to_f32(u16::from_le_bytes(self.0))
    }
}

impl QuantBlock for BlockF32 {
    const TYPE: GgmlType = GgmlType::F32;
    const BLOCK_SIZE: usize = 1;
    type VecDot = BlockF32;

    fn dequantize(blocks: &[Self], dst: &mut [f32]) {
        for (d, b) in dst.iter_mut().zip(blocks) {
            *d = b.get();
        }
    }

    fn quantize(src: &[f32], dst: &mut [Self]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = BlockF32(s.to_le_bytes());
        }
    }

    fn vec_dot(w: &[Self], a: &[Self]) -> f32 {
        scalar::f32(w, a)
    }
}

impl QuantBlock for BlockF16 {
    const TYPE: GgmlType = GgmlType::F16;
    const BLOCK_SIZE: usize = 1;
    type VecDot = BlockF16;

    fn dequantize(blocks: &[Self], dst: &mut [f32]) {
        for (d, b) in dst.iter_mut().zip(blocks) {
            *d = b.get();
        }
    }

    /// `ggml_cpu_fp32_to_fp16`: round to nearest even.
    fn quantize(src: &[f32], dst: &mut [Self]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = BlockF16(f32_to_fp16(s).to_le_bytes());
        }
    }

    fn vec_dot(w: &[Self], a: &[Self]) -> f32 {
        scalar::f16(w, a)
    }
}

impl QuantBlock for BlockBF16 {
    const TYPE: GgmlType = GgmlType::BF16;
    const BLOCK_SIZE: usize = 1;
    type VecDot = BlockBF16;

    fn dequantize(blocks: &[Self], dst: &mut [f32]) {
        for (d, b) in dst.iter_mut().zip(blocks) {
            *d = b.get();
        }
    }

    /// `ggml_cpu_fp32_to_bf16`: round to nearest even, NaNs quiet.
    fn quantize(src: &[f32], dst: &mut [Self]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = BlockBF16(f32_to_bf16(s).to_le_bytes());
        }
    }

    fn vec_dot(w: &[Self], a: &[Self]) -> f32 {
        scalar::bf16(w, a)
    }
}

/// Scalar references: the non-SIMD branches of `ggml_vec_dot_f32/f16/bf16` (ggml-cpu/vec.cpp),
/// which accumulate in f64 (`ggml_float`).
pub(crate) mod scalar {
    use super::{BlockBF16, BlockF16, BlockF32};

    pub fn f32(x: &[BlockF32], y: &[BlockF32]) -> f32 {
        let mut sumf = 0.0f64;
        for (a, b) in x.iter().zip(y) {
            sumf += (a.get() * b.get()) as f64;
        }
        sumf as f32
    }

    pub fn f16(x: &[BlockF16], y: &[BlockF16]) -> f32 {
        let mut sumf = 0.0f64;
        for (a, b) in x.iter().zip(y) {
            sumf += (a.get() * b.get()) as f64;
        }
        sumf as f32
    }

    pub fn bf16(x: &[BlockBF16], y: &[BlockBF16]) -> f32 {
        let mut sumf = 0.0f64;
        for (a, b) in x.iter().zip(y) {
            sumf += (a.get() * b.get()) as f64;
        }
        sumf as f32
    }
}

/// AVX2 ports of the `GGML_SIMD` branches of `ggml_vec_dot_f32/f16/bf16` (ggml-cpu/vec.cpp):
/// four 8-lane accumulators over steps of 32 values, then the leftovers one by one.
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use super::super::x86::{hsum_float_8, load128};
    use super::{BlockBF16, BlockF16, BlockF32};
    use core::arch::x86_64::*;

    /// `GGML_F32x8_REDUCE` of four accumulators (hadd-based, as in simd-mappings.h).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn reduce4(s: [__m256; 4]) -> f32 {
        let a = _mm256_add_ps(s[0], s[2]);
        let b = _mm256_add_ps(s[1], s[3]);
        let x = _mm256_add_ps(a, b);
        let t0 = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
        let t1 = _mm_hadd_ps(t0, t0);
        _mm_cvtss_f32(_mm_hadd_ps(t1, t1))
    }

    pub mod f32 {
        use super::*;

        /// Port of `ggml_vec_dot_f32` (AVX path).
        ///
        /// # Safety
        /// The CPU must support AVX2 and FMA.
        #[target_feature(enable = "avx2,fma")]
        pub unsafe fn vec_dot(x: &[BlockF32], y: &[BlockF32]) -> f32 {
            let n = x.len().min(y.len());
            let np = n & !31;
            let (xp, yp) = (x.as_ptr().cast::<f32>(), y.as_ptr().cast::<f32>());
            let mut sum = [_mm256_setzero_ps(); 4];
            let mut i = 0;
            while i < np {
                for (j, s) in sum.iter_mut().enumerate() {
                    // SAFETY: i + 8j + 8 <= np <= n values in both slices; loadu is unaligned.
                    let (ax, ay) = unsafe {
                        (
                            _mm256_loadu_ps(xp.add(i + 8 * j)),
                            _mm256_loadu_ps(yp.add(i + 8 * j)),
                        )
                    };
                    *s = _mm256_fmadd_ps(ax, ay, *s);
                }
                i += 32;
            }
            let mut sumf = reduce4(sum);
            for k in np..n {
                sumf += x[k].get() * y[k].get();
            }
            sumf
        }
    }

    pub mod f16 {
        use super::*;

        /// Port of `ggml_vec_dot_f16` (AVX2 + F16C path; the sum is kept in f64 after the reduce).
        ///
        /// # Safety
        /// The CPU must support AVX2, FMA and F16C.
        #[target_feature(enable = "avx2,fma,f16c")]
        pub unsafe fn vec_dot(x: &[BlockF16], y: &[BlockF16]) -> f32 {
            let n = x.len().min(y.len());
            let np = n & !31;
            let mut sum = [_mm256_setzero_ps(); 4];
            let mut i = 0;
            while i < np {
                for (j, s) in sum.iter_mut().enumerate() {
                    // SAFETY: 8 halves = 16 bytes at i + 8j, within the first np values.
                    let (hx, hy) = unsafe {
                        (
                            load128(x.as_ptr().add(i + 8 * j)),
                            load128(y.as_ptr().add(i + 8 * j)),
                        )
                    };
                    *s = _mm256_fmadd_ps(_mm256_cvtph_ps(hx), _mm256_cvtph_ps(hy), *s);
                }
                i += 32;
            }
            let mut sumf = reduce4(sum) as f64;
            for k in np..n {
                sumf += (x[k].get() * y[k].get()) as f64;
            }
            sumf as f32
        }
    }

    pub mod bf16 {
        use super::*;

        #[inline]
        #[target_feature(enable = "avx2,fma")]
        fn load(p: &[BlockBF16]) -> __m256 {
            // SAFETY: callers pass at least 8 values (16 bytes).
            let h = unsafe { load128(p.as_ptr()) };
            _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
        }

        /// Port of `ggml_vec_dot_bf16` (AVX2 path: separate multiply and add, f64 leftovers).
        ///
        /// # Safety
        /// The CPU must support AVX2 and FMA.
        #[target_feature(enable = "avx2,fma")]
        pub unsafe fn vec_dot(x: &[BlockBF16], y: &[BlockBF16]) -> f32 {
            let n = x.len().min(y.len());
            let mut c = [_mm256_setzero_ps(); 4];
            let mut i = 0;
            while i + 32 <= n {
                for (j, cj) in c.iter_mut().enumerate() {
                    let o = i + 8 * j;
                    *cj = _mm256_add_ps(_mm256_mul_ps(load(&x[o..o + 8]), load(&y[o..o + 8])), *cj);
                }
                i += 32;
            }
            let c1 = _mm256_add_ps(_mm256_add_ps(c[0], c[2]), _mm256_add_ps(c[1], c[3]));
            let mut sumf = hsum_float_8(c1) as f64;
            for k in i..n {
                sumf += (x[k].get() * y[k].get()) as f64;
            }
            sumf as f32
        }
    }
}

/// SIMD128 versions of the float dot products, bit-identical to the AVX2 ones above: four
/// emulated `__m256` accumulators, fused multiply-adds rounded once, the same reductions.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub(crate) mod simd128 {
    use super::super::wasm::{Acc8, f16x4_to_f32x4, hsum_float_8, load};
    use super::{BlockBF16, BlockF16, BlockF32};
    use core::arch::wasm32::*;

    /// `GGML_F32x8_REDUCE` of four accumulators (hadd-based, as in simd-mappings.h; see
    /// `avx2::reduce4`).
    fn reduce4(s: [[f32; 8]; 4]) -> f32 {
        let x: [f32; 8] = std::array::from_fn(|i| (s[0][i] + s[2][i]) + (s[1][i] + s[3][i]));
        let t0: [f32; 4] = std::array::from_fn(|i| x[i] + x[4 + i]);
        (t0[0] + t0[1]) + (t0[2] + t0[3])
    }

    pub mod f32 {
        use super::*;

        /// Bit-identical twin of the AVX `ggml_vec_dot_f32` (see `avx2::f32::vec_dot`).
        pub fn vec_dot(x: &[BlockF32], y: &[BlockF32]) -> f32 {
            let n = x.len().min(y.len());
            let np = n & !31;
            let (xp, yp) = (x.as_ptr(), y.as_ptr());
            let mut sum = [Acc8::zero(); 4];
            let mut i = 0;
            while i < np {
                for (j, s) in sum.iter_mut().enumerate() {
                    let o = i + 8 * j;
                    // SAFETY: 8 values at o < np <= n are in bounds of both slices.
                    let (a, b) = unsafe {
                        (
                            [load(xp.add(o)), load(xp.add(o + 4))],
                            [load(yp.add(o)), load(yp.add(o + 4))],
                        )
                    };
                    s.fmadd_f32(a, b);
                }
                i += 32;
            }
            let mut sumf = reduce4(sum.map(Acc8::lanes));
            for k in np..n {
                sumf += x[k].get() * y[k].get();
            }
            sumf
        }
    }

    pub mod f16 {
        use super::*;

        /// Bit-identical twin of the AVX2 + F16C `ggml_vec_dot_f16` (see `avx2::f16::vec_dot`;
        /// the halves are widened with the lane-wise form of ggml's fp16 -> fp32 conversion).
        pub fn vec_dot(x: &[BlockF16], y: &[BlockF16]) -> f32 {
            let n = x.len().min(y.len());
            let np = n & !31;
            let widen = |h: v128| {
                [
                    f16x4_to_f32x4(u32x4_extend_low_u16x8(h)),
                    f16x4_to_f32x4(u32x4_extend_high_u16x8(h)),
                ]
            };
            let mut sum = [Acc8::zero(); 4];
            let mut i = 0;
            while i < np {
                for (j, s) in sum.iter_mut().enumerate() {
                    // SAFETY: 8 halves (16 bytes) at i + 8j < np are in bounds.
                    let (a, b) = unsafe {
                        (
                            load(x.as_ptr().add(i + 8 * j)),
                            load(y.as_ptr().add(i + 8 * j)),
                        )
                    };
                    s.fmadd_f32(widen(a), widen(b));
                }
                i += 32;
            }
            let mut sumf = reduce4(sum.map(Acc8::lanes)) as f64;
            for k in np..n {
                sumf += (x[k].get() * y[k].get()) as f64;
            }
            sumf as f32
        }
    }

    pub mod bf16 {
        use super::*;

        /// Bit-identical twin of the AVX2 `ggml_vec_dot_bf16` (see `avx2::bf16::vec_dot`: separate
        /// multiply and add, so plain f32x4 arithmetic on the eight lanes of each accumulator).
        pub fn vec_dot(x: &[BlockBF16], y: &[BlockBF16]) -> f32 {
            let n = x.len().min(y.len());
            let widen = |h: v128| {
                [
                    i32x4_shl(u32x4_extend_low_u16x8(h), 16),
                    i32x4_shl(u32x4_extend_high_u16x8(h), 16),
                ]
            };
            let mut c = [[f32x4_splat(0.0); 2]; 4];
            let mut i = 0;
            while i + 32 <= n {
                for (j, cj) in c.iter_mut().enumerate() {
                    // SAFETY: 8 values (16 bytes) at i + 8j, i + 32 <= n, are in bounds.
                    let (a, b) = unsafe {
                        (
                            widen(load(x.as_ptr().add(i + 8 * j))),
                            widen(load(y.as_ptr().add(i + 8 * j))),
                        )
                    };
                    for h in 0..2 {
                        cj[h] = f32x4_add(f32x4_mul(a[h], b[h]), cj[h]);
                    }
                }
                i += 32;
            }
            let lanes = |v: [v128; 2]| -> [f32; 8] {
                let mut out = [0.0; 8];
                // SAFETY: 32 bytes of f32 lanes into 8 f32.
                unsafe {
                    v128_store(out.as_mut_ptr().cast(), v[0]);
                    v128_store(out.as_mut_ptr().add(4).cast(), v[1]);
                }
                out
            };
            let c = c.map(lanes);
            let c1: [f32; 8] = std::array::from_fn(|k| (c[0][k] + c[2][k]) + (c[1][k] + c[3][k]));
            let mut sumf = hsum_float_8(c1) as f64;
            for k in i..n {
                sumf += (x[k].get() * y[k].get()) as f64;
            }
            sumf as f32
        }
    }
}

/// NEON ports of the `GGML_SIMD` branches of `ggml_vec_dot_f32/f16` (ggml-cpu/vec.cpp with
/// simd-mappings.h's `__ARM_NEON` mappings): four 4-lane accumulators over steps of 16 values,
/// `GGML_F32x4_REDUCE`, then the leftovers one by one. F16 takes the path for CPUs without FP16
/// vector arithmetic (`GGML_F32Cx4`: widen to f32, then f32 FMAs). BF16 has no NEON branch in
/// ggml without the BF16 extension; it stays scalar, as there.
#[cfg(target_arch = "aarch64")]
pub(crate) mod neon {
    use super::super::neon::h2f_x4;
    use super::{BlockF16, BlockF32};
    use core::arch::aarch64::*;

    /// `GGML_F32x4_REDUCE` of four accumulators: pairwise halving, then `vaddvq_f32`.
    #[inline]
    #[target_feature(enable = "neon")]
    fn reduce4(s: [float32x4_t; 4]) -> f32 {
        let a = vaddq_f32(s[0], s[2]);
        let b = vaddq_f32(s[1], s[3]);
        vaddvq_f32(vaddq_f32(a, b))
    }

    pub mod f32 {
        use super::*;

        /// Port of `ggml_vec_dot_f32` (NEON path).
        #[target_feature(enable = "neon")]
        pub fn vec_dot(x: &[BlockF32], y: &[BlockF32]) -> f32 {
            let n = x.len().min(y.len());
            let np = n & !15;
            let (xp, yp) = (x.as_ptr().cast::<u8>(), y.as_ptr().cast::<u8>());
            let mut sum = [vdupq_n_f32(0.0); 4];
            let mut i = 0;
            while i < np {
                for (j, s) in sum.iter_mut().enumerate() {
                    // SAFETY: i + 4j + 4 <= np <= n values in both slices. Loaded as bytes: the
                    // blocks have alignment 1.
                    let (ax, ay) = unsafe {
                        (
                            vreinterpretq_f32_u8(vld1q_u8(xp.add(4 * (i + 4 * j)))),
                            vreinterpretq_f32_u8(vld1q_u8(yp.add(4 * (i + 4 * j)))),
                        )
                    };
                    *s = vfmaq_f32(*s, ax, ay);
                }
                i += 16;
            }
            let mut sumf = reduce4(sum);
            for k in np..n {
                sumf += x[k].get() * y[k].get();
            }
            sumf
        }
    }

    pub mod f16 {
        use super::*;

        /// Port of `ggml_vec_dot_f16` (NEON path without FP16 vector arithmetic; the sum is
        /// kept in f64 after the reduce).
        #[target_feature(enable = "neon")]
        pub fn vec_dot(x: &[BlockF16], y: &[BlockF16]) -> f32 {
            let n = x.len().min(y.len());
            let np = n & !15;
            let (xp, yp) = (x.as_ptr().cast::<u8>(), y.as_ptr().cast::<u8>());
            let mut sum = [vdupq_n_f32(0.0); 4];
            let mut i = 0;
            while i < np {
                for (j, s) in sum.iter_mut().enumerate() {
                    // SAFETY: 4 halves (8 bytes) at i + 4j < np are in bounds of both slices.
                    // Loaded as bytes: the blocks have alignment 1.
                    let (hx, hy) = unsafe {
                        (
                            vreinterpret_u16_u8(vld1_u8(xp.add(2 * (i + 4 * j)))),
                            vreinterpret_u16_u8(vld1_u8(yp.add(2 * (i + 4 * j)))),
                        )
                    };
                    *s = vfmaq_f32(*s, h2f_x4(hx), h2f_x4(hy));
                }
                i += 16;
            }
            let mut sumf = reduce4(sum) as f64;
            for k in np..n {
                sumf += (x[k].get() * y[k].get()) as f64;
            }
            sumf as f32
        }
    }
}
