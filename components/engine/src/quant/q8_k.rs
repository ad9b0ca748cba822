//! Q8_K: super-blocks of 256 values, `x = d * q` with an f32 scale, plus the sums of each group
//! of 16 quants. The activation type of the k-quants and IQ4_XS.

use super::util::{Pod, nearest_int};
use super::{Backend, GgmlType, QK_K, QuantBlock};

/// ggml's `block_q8_K`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockQ8_K {
    /// Scale (f32, little-endian).
    pub d: [u8; 4],
    /// Quants.
    pub qs: [i8; QK_K],
    /// Sums of each 16 quants (i16, little-endian).
    pub bsums: [u8; 32],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_K>() == 292);
// SAFETY: byte arrays only.
unsafe impl Pod for BlockQ8_K {}
impl super::sealed::Sealed for BlockQ8_K {}

impl Default for BlockQ8_K {
    fn default() -> Self {
        BlockQ8_K {
            d: [0; 4],
            qs: [0; QK_K],
            bsums: [0; 32],
        }
    }
}

impl BlockQ8_K {
    /// The scale.
    #[inline(always)]
    pub fn d(&self) -> f32 {
        f32::from_le_bytes(self.d)
    }

    /// Sum of quants `16*j .. 16*j+16`.
    #[inline(always)]
    pub fn bsum(&self, j: usize) -> i16 {
        let j = j & 15;
        i16::from_le_bytes([self.bsums[2 * j], self.bsums[2 * j + 1]])
    }
}

impl QuantBlock for BlockQ8_K {
    const TYPE: GgmlType = GgmlType::Q8_K;
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

/// The activation quantizer on `backend` (`quantize_row_q8_K_ref`, which x86 llama.cpp uses).
/// All backends write the same bytes. The caller checks lengths and availability.
pub(crate) fn quantize_act(backend: Backend, src: &[f32], dst: &mut [BlockQ8_K]) {
    match backend {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `quantize_row_with` checked that AVX2 is available.
        Backend::Avx2 => unsafe { avx2::quantize_act(src, dst) },
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        Backend::Simd128 => simd128::quantize_act(src, dst),
        _ => scalar::quantize(src, dst),
    }
}

/// The value of largest magnitude (the first one on ties), as `quantize_row_q8_K_ref` picks it,
/// given that magnitude.
#[cfg(any(
    target_arch = "x86_64",
    all(target_arch = "wasm32", target_feature = "simd128")
))]
#[inline(always)]
fn signed_max(x: &[f32], amax: f32) -> f32 {
    x.iter().copied().find(|v| v.abs() == amax).unwrap_or(amax)
}

pub(crate) mod scalar {
    use super::*;

    /// Port of `dequantize_row_q8_K` (ggml-quants.c).
    pub fn dequantize(x: &[BlockQ8_K], y: &mut [f32]) {
        for (b, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
            let d = b.d();
            for (yj, &q) in y.iter_mut().zip(&b.qs) {
                *yj = d * q as f32;
            }
        }
    }

    /// Port of `quantize_row_q8_K_ref` (ggml-quants.c).
    pub fn quantize(x: &[f32], y: &mut [BlockQ8_K]) {
        for (x, b) in x.chunks_exact(QK_K).zip(y.iter_mut()) {
            let mut max = 0.0f32;
            let mut amax = 0.0f32;
            for &v in x {
                let ax = v.abs();
                if ax > amax {
                    amax = ax;
                    max = v;
                }
            }
            if amax == 0.0 {
                b.d = 0f32.to_le_bytes();
                b.qs = [0; QK_K];
                // ggml leaves bsums as they were; zero them so output never depends on old bytes.
                b.bsums = [0; 32];
                continue;
            }
            let iscale = -127.0 / max;
            for (q, &v) in b.qs.iter_mut().zip(x) {
                *q = nearest_int(iscale * v).min(127) as i8;
            }
            for j in 0..QK_K / 16 {
                let sum: i32 = b.qs[16 * j..16 * j + 16].iter().map(|&q| q as i32).sum();
                b.bsums[2 * j..2 * j + 2].copy_from_slice(&(sum as i16).to_le_bytes());
            }
            b.d = (1.0 / iscale).to_le_bytes();
        }
    }

    /// Integer dot product of two Q8_K rows (llama.cpp has none; used only for completeness).
    pub fn vec_dot(x: &[BlockQ8_K], y: &[BlockQ8_K]) -> f32 {
        let mut sumf = 0.0f32;
        for (xb, yb) in x.iter().zip(y) {
            let mut sumi = 0i32;
            for j in 0..QK_K {
                sumi += xb.qs[j] as i32 * yb.qs[j] as i32;
            }
            sumf += sumi as f32 * (xb.d() * yb.d());
        }
        sumf
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use super::super::x86::hsum_i32_8;
    use super::*;
    use core::arch::x86_64::*;

    /// AVX2 version of `quantize_row_q8_K_ref`, byte-identical to it (llama.cpp uses the
    /// scalar reference on x86).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn quantize_act(x: &[f32], y: &mut [BlockQ8_K]) {
        let sign_bit = _mm256_set1_ps(-0.0);
        for (x, b) in x.chunks_exact(QK_K).zip(y.iter_mut()) {
            let p = x.as_ptr();
            let mut m = _mm256_setzero_ps();
            for j in 0..QK_K / 8 {
                // SAFETY: 8 floats at 8j < 256.
                let v = unsafe { _mm256_loadu_ps(p.add(8 * j)) };
                m = _mm256_max_ps(m, _mm256_andnot_ps(sign_bit, v));
            }
            let mut m4 = _mm_max_ps(_mm256_extractf128_ps(m, 1), _mm256_castps256_ps128(m));
            m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
            m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
            let amax = _mm_cvtss_f32(m4);
            if amax == 0.0 {
                b.d = 0f32.to_le_bytes();
                b.qs = [0; QK_K];
                b.bsums = [0; 32];
                continue;
            }
            let iscale = -127.0 / signed_max(x, amax);
            let mul = _mm256_set1_ps(iscale);
            let max127 = _mm256_set1_epi32(127);
            let ones = _mm256_set1_epi16(1);
            let q = b.qs.as_mut_ptr();
            for j in 0..QK_K / 32 {
                let mut i = [_mm256_setzero_si256(); 4];
                for (k, ik) in i.iter_mut().enumerate() {
                    // SAFETY: 8 floats at 32j + 8k < 256.
                    let v = unsafe { _mm256_loadu_ps(p.add(32 * j + 8 * k)) };
                    let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                        _mm256_mul_ps(v, mul),
                    );
                    *ik = _mm256_min_epi32(_mm256_cvtps_epi32(r), max127);
                }
                let i01 = _mm256_packs_epi32(i[0], i[1]);
                let i23 = _mm256_packs_epi32(i[2], i[3]);
                let i8s = _mm256_packs_epi16(i01, i23);
                let i8s =
                    _mm256_permutevar8x32_epi32(i8s, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
                // SAFETY: 32 bytes at 32j < 256.
                unsafe { _mm256_storeu_si256(q.add(32 * j).cast(), i8s) };
                // Two group sums of 16: widen to i16 and add within each 128-bit half.
                let lo = _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm256_castsi256_si128(i8s)), ones);
                let hi =
                    _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm256_extracti128_si256(i8s, 1)), ones);
                let s0 = hsum_i32_8(lo) as i16;
                let s1 = hsum_i32_8(hi) as i16;
                b.bsums[4 * j..4 * j + 2].copy_from_slice(&s0.to_le_bytes());
                b.bsums[4 * j + 2..4 * j + 4].copy_from_slice(&s1.to_le_bytes());
            }
            b.d = (1.0 / iscale).to_le_bytes();
        }
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub(crate) mod simd128 {
    use super::super::wasm::{hsum_i32x4, load};
    use super::*;
    use core::arch::wasm32::*;

    /// SIMD128 version of `quantize_row_q8_K_ref`, byte-identical to it (after llama.cpp's wasm
    /// `quantize_row_q8_K`, but picking the signed maximum the way the reference does).
    pub fn quantize_act(x: &[f32], y: &mut [BlockQ8_K]) {
        for (x, b) in x.chunks_exact(QK_K).zip(y.iter_mut()) {
            let p = x.as_ptr();
            let mut m = f32x4_splat(0.0);
            for j in 0..QK_K / 4 {
                // SAFETY: 4 floats at 4j < 256.
                m = f32x4_max(m, f32x4_abs(unsafe { load(p.add(4 * j)) }));
            }
            let m = f32x4_max(m, i32x4_shuffle::<2, 3, 0, 1>(m, m));
            let m = f32x4_max(m, i32x4_shuffle::<1, 0, 3, 2>(m, m));
            let amax = f32x4_extract_lane::<0>(m);
            if amax == 0.0 {
                b.d = 0f32.to_le_bytes();
                b.qs = [0; QK_K];
                b.bsums = [0; 32];
                continue;
            }
            let iscale = -127.0 / signed_max(x, amax);
            let mul = f32x4_splat(iscale);
            let max127 = i32x4_splat(127);
            for j in 0..QK_K / 16 {
                let mut i = [i32x4_splat(0); 4];
                for (k, ik) in i.iter_mut().enumerate() {
                    // SAFETY: 4 floats at 16j + 4k < 256.
                    let v = unsafe { load(p.add(16 * j + 4 * k)) };
                    *ik = i32x4_min(
                        i32x4_trunc_sat_f32x4(f32x4_nearest(f32x4_mul(v, mul))),
                        max127,
                    );
                }
                let q8 = i8x16_narrow_i16x8(
                    i16x8_narrow_i32x4(i[0], i[1]),
                    i16x8_narrow_i32x4(i[2], i[3]),
                );
                // SAFETY: 16 bytes at 16j < 256.
                unsafe { v128_store(b.qs.as_mut_ptr().add(16 * j).cast(), q8) };
                let s = i32x4_add(i32x4_add(i[0], i[1]), i32x4_add(i[2], i[3]));
                let s = hsum_i32x4(s) as i16;
                b.bsums[2 * j..2 * j + 2].copy_from_slice(&s.to_le_bytes());
            }
            b.d = (1.0 / iscale).to_le_bytes();
        }
    }
}
