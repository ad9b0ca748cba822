//! AVX2 helpers shared by the x86_64 kernels: ports of the static inline helpers at the top of
//! ggml-cpu/arch/x86/quants.c (without the AVX-512 VNNI variants, which give the same integers).

use core::arch::x86_64::*;

use super::q8_0::BlockQ8_0;

/// Unaligned 32-byte load.
///
/// # Safety
/// `p` must point to 32 readable bytes.
#[inline(always)]
pub(crate) unsafe fn load256<T>(p: *const T) -> __m256i {
    // SAFETY: the caller guarantees 32 readable bytes; loadu has no alignment requirement.
    unsafe { _mm256_loadu_si256(p.cast()) }
}

/// Unaligned 16-byte load.
///
/// # Safety
/// `p` must point to 16 readable bytes.
#[inline(always)]
pub(crate) unsafe fn load128<T>(p: *const T) -> __m128i {
    // SAFETY: the caller guarantees 16 readable bytes; loadu has no alignment requirement.
    unsafe { _mm_loadu_si128(p.cast()) }
}

/// Port of `hsum_float_8`: horizontal sum of 8 floats, in ggml's order.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) fn hsum_float_8(x: __m256) -> f32 {
    let mut res = _mm256_extractf128_ps(x, 1);
    res = _mm_add_ps(res, _mm256_castps256_ps128(x));
    res = _mm_add_ps(res, _mm_movehl_ps(res, res));
    res = _mm_add_ss(res, _mm_movehdup_ps(res));
    _mm_cvtss_f32(res)
}

/// IEEE half (little-endian bytes) -> f32 with F16C, as ggml's `GGML_CPU_FP16_TO_FP32` on x86:
/// exact, the same value as `util::f16_le`, in one instruction instead of a dozen.
///
/// The conversion is written in `asm!` on purpose: as an intrinsic, LLVM sees that only lane 0
/// is used and loads the half with a `vpinsrw` that merges into whatever register is at hand,
/// often a loop's accumulator, so every block waits for the previous one (measured: kernels
/// 2.5-3x slower). Here the whole input register is used, so it is built from zero.
#[inline]
#[target_feature(enable = "avx2,f16c")]
pub(crate) fn h2f(b: [u8; 2]) -> f32 {
    let v = _mm_cvtsi32_si128(i32::from(u16::from_le_bytes(b)));
    let r: __m128;
    // SAFETY: `vcvtph2ps` only reads and writes the two registers; F16C is enabled.
    unsafe {
        std::arch::asm!(
            "vcvtph2ps {r}, {v}",
            v = in(xmm_reg) v,
            r = lateout(xmm_reg) r,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    _mm_cvtss_f32(r)
}

/// The two IEEE halves at `p` and `p + 2` as f32 (a block's `d` and `m`, or `d` and `s`), with
/// one zero-extending 32-bit load.
///
/// # Safety
/// `p` must be valid for reading 4 bytes.
#[inline]
#[target_feature(enable = "avx2,f16c")]
pub(crate) unsafe fn h2f_pair(p: *const u8) -> (f32, f32) {
    // SAFETY: the caller's.
    let v = _mm_cvtph_ps(unsafe { _mm_loadu_si32(p) });
    (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_movehdup_ps(v)))
}

/// The IEEE half in the first two bytes of block `b` (its `d`) as f32.
#[inline]
#[target_feature(enable = "avx2,f16c")]
pub(crate) fn h2f_first<B>(b: &B) -> f32 {
    const { assert!(std::mem::size_of::<B>() >= 2) };
    // SAFETY: `b` is at least 2 bytes.
    let h = unsafe { std::ptr::read_unaligned((b as *const B).cast::<[u8; 2]>()) };
    h2f(h)
}

/// How far ahead of a weight stream the multi-row kernels prefetch, in bytes (tuned on
/// SmolLM2 Q4_1 decode at one thread: none 41 tok/s, 1 KiB 55, 2 KiB 63, 3 KiB 56-68, noisy).
pub(crate) const PREFETCH_AHEAD: usize = 2048;

/// Port of `hsum_i32_8`: horizontal sum of 8 i32.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) fn hsum_i32_8(a: __m256i) -> i32 {
    let sum128 = _mm_add_epi32(_mm256_castsi256_si128(a), _mm256_extractf128_si256(a, 1));
    let hi64 = _mm_unpackhi_epi64(sum128, sum128);
    let sum64 = _mm_add_epi32(hi64, sum128);
    let hi32 = _mm_shuffle_epi32(sum64, 0b10_11_00_01); // _MM_SHUFFLE(2, 3, 0, 1)
    _mm_cvtsi128_si32(_mm_add_epi32(sum64, hi32))
}

/// Port of `mul_add_epi8`: pairwise i8*i8 products summed to i16.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) fn mul_add_epi8(x: __m256i, y: __m256i) -> __m256i {
    let ax = _mm256_sign_epi8(x, x);
    let sy = _mm256_sign_epi8(y, x);
    _mm256_maddubs_epi16(ax, sy)
}

/// Port of `bytes_from_bits_32`: spreads 32 bits to 32 bytes of 0x00 / 0xFF.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) fn bytes_from_bits_32(x: &[u8; 4]) -> __m256i {
    let x32 = i32::from_le_bytes(*x);
    let shuf_mask = _mm256_set_epi64x(
        0x0303030303030303,
        0x0202020202020202,
        0x0101010101010101,
        0x0000000000000000,
    );
    let mut bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(x32), shuf_mask);
    let bit_mask = _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe);
    bytes = _mm256_or_si256(bytes, bit_mask);
    _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1))
}

/// Port of `bytes_from_nibbles_32`: 32 nibbles to 32 bytes in [0, 15], low nibbles first.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) fn bytes_from_nibbles_32(rsi: &[u8; 16]) -> __m256i {
    // SAFETY: `rsi` is 16 bytes.
    let tmp = unsafe { load128(rsi.as_ptr()) };
    let bytes = _mm256_set_m128i(_mm_srli_epi16(tmp, 4), tmp);
    _mm256_and_si256(_mm256_set1_epi8(0xF), bytes)
}

/// Port of `sum_i16_pairs_float`.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) fn sum_i16_pairs_float(x: __m256i) -> __m256 {
    let summed_pairs = _mm256_madd_epi16(_mm256_set1_epi16(1), x);
    _mm256_cvtepi32_ps(summed_pairs)
}

/// Port of `mul_sum_us8_pairs_float`: u8 * i8, summed in groups of 4, as floats.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) fn mul_sum_us8_pairs_float(ax: __m256i, sy: __m256i) -> __m256 {
    let dot = _mm256_maddubs_epi16(ax, sy);
    sum_i16_pairs_float(dot)
}

/// Port of `mul_sum_i8_pairs_float`: i8 * i8, summed in groups of 4, as floats.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) fn mul_sum_i8_pairs_float(x: __m256i, y: __m256i) -> __m256 {
    let ax = _mm256_sign_epi8(x, x);
    let sy = _mm256_sign_epi8(y, x);
    mul_sum_us8_pairs_float(ax, sy)
}

/// `k_shuffle` of ggml's `get_scale_shuffle_q3k`.
static K_SHUFFLE_Q3K: [u8; 128] = [
    0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2,
    3, //
    4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6,
    7, //
    8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11,
    10, 11, 10, 11, //
    12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 14, 15, 14, 15, 14, 15, 14, 15,
    14, 15, 14, 15, 14, 15, 14, 15,
];

/// Port of `get_scale_shuffle_q3k` (`i` in 0..4).
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) fn get_scale_shuffle_q3k(i: usize) -> __m256i {
    let i = i & 3;
    // SAFETY: `32 * i + 32 <= 128`.
    unsafe { load256(K_SHUFFLE_Q3K.as_ptr().add(32 * i)) }
}

/// Port of `get_scale_shuffle_k4` (`i` in 0..8): broadcasts the 16-bit scale `i`.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) fn get_scale_shuffle_k4(i: usize) -> __m256i {
    let i = (i & 7) as i8;
    _mm256_set1_epi16(i16::from_le_bytes([(2 * i) as u8, (2 * i + 1) as u8]))
}

/// Port of `get_scale_shuffle` (`i` in 0..8): bytes `2i` (x8) then `2i+1` (x8).
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) fn get_scale_shuffle(i: usize) -> __m128i {
    let i = (i & 7) as i8;
    _mm_set_epi64x(
        i64::from_ne_bytes([(2 * i + 1) as u8; 8]),
        i64::from_ne_bytes([(2 * i) as u8; 8]),
    )
}

/// Four weight rows against `T` Q8_0 activation rows, for the block types whose dot product with
/// Q8_0 is ggml's `d_x·d_y · Σ qx·qy` per block (`ggml_vec_dot_q{4_0,5_0,8_0}_q8_0`, AVX2
/// branch): `d` is the block's first field and `qu` decodes its 32 values to bytes `u` with
/// `qx = u - OFF`: unsigned for `OFF > 0` (Q4_0: 8, Q5_0: 16), the signed values for `OFF = 0`
/// (Q8_0). Each (row, token) result is the one-row kernel's bit for bit: the rows and tokens are
/// only interleaved (independent FMA chains, four weight streams read at once, each block decoded
/// once for all `T` tokens), and the weights are prefetched [`PREFETCH_AHEAD`] bytes ahead.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn rows_q8_0<B, const T: usize, const OFF: i8>(
    x: [&[B]; 4],
    y: [&[BlockQ8_0]; T],
    qu: impl Fn(&B) -> __m256i,
) -> [[f32; 4]; T] {
    // SAFETY: AVX2, FMA and F16C are enabled here.
    unsafe { rows_q8_0_impl::<B, T, OFF, false>(x, y, qu) }
}

/// [`rows_q8_0`] with AVX-512 VNNI (256-bit, `vpdpbusd`) integer sums. Lane k of
/// `vpdpbusd(c, u, y)` is `Σ_{t<4} u[4k+t]·y[4k+t] + c[k]`: with `c = -OFF·Σ y` (per lane, once per
/// activation block) that is exactly the lane AVX2's `mul_sum_i8_pairs_float` converts; Q8_0
/// moves the sign of `x` onto `y` as that function does (its i16 pair sums never saturate:
/// activations are -127..=127). So each (row, token) result is [`rows_q8_0`]'s, bit for bit.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
pub(crate) fn rows_q8_0_vnni<B, const T: usize, const OFF: i8>(
    x: [&[B]; 4],
    y: [&[BlockQ8_0]; T],
    qu: impl Fn(&B) -> __m256i,
) -> [[f32; 4]; T] {
    // SAFETY: all of the body's features are enabled here.
    unsafe { rows_q8_0_impl::<B, T, OFF, true>(x, y, qu) }
}

/// The body of [`rows_q8_0`] and [`rows_q8_0_vnni`].
///
/// # Safety
/// Only call from functions that enable AVX2, FMA and F16C, and AVX-512 F/VL/VNNI if `VNNI`.
#[inline(always)]
unsafe fn rows_q8_0_impl<B, const T: usize, const OFF: i8, const VNNI: bool>(
    x: [&[B]; 4],
    y: [&[BlockQ8_0]; T],
    qu: impl Fn(&B) -> __m256i,
) -> [[f32; 4]; T] {
    // SAFETY: the caller enables the features; the loads read a Q8_0 block's 32 quants.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); 4]; T];
        let nb = x
            .iter()
            .map(|r| r.len())
            .chain(y.iter().map(|r| r.len()))
            .min()
            .unwrap_or(0);
        let zero = _mm256_setzero_si256();
        for i in 0..nb {
            let mut dy = [0.0f32; T];
            let mut qy = [zero; T];
            let mut c = [zero; T];
            for t in 0..T {
                dy[t] = h2f_first(&y[t][i]);
                qy[t] = load256(y[t][i].qs.as_ptr());
                if VNNI && OFF != 0 {
                    let sums = _mm256_dpbusd_epi32(zero, _mm256_set1_epi8(1), qy[t]);
                    c[t] = _mm256_mullo_epi32(sums, _mm256_set1_epi32(-i32::from(OFF)));
                }
            }
            for j in 0..4 {
                let xb = &x[j][i];
                _mm_prefetch::<_MM_HINT_T0>(
                    (xb as *const B).cast::<i8>().wrapping_add(PREFETCH_AHEAD),
                );
                let dx = h2f_first(xb);
                let u = qu(xb);
                for t in 0..T {
                    let p = if !VNNI {
                        let q = if OFF != 0 {
                            _mm256_sub_epi8(u, _mm256_set1_epi8(OFF))
                        } else {
                            u
                        };
                        mul_sum_i8_pairs_float(q, qy[t])
                    } else if OFF != 0 {
                        _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(c[t], u, qy[t]))
                    } else {
                        let (au, sy) = (_mm256_sign_epi8(u, u), _mm256_sign_epi8(qy[t], u));
                        _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(zero, au, sy))
                    };
                    acc[t][j] = _mm256_fmadd_ps(_mm256_set1_ps(dx * dy[t]), p, acc[t][j]);
                }
            }
        }
        acc.map(|a| [0, 1, 2, 3].map(|j| hsum_float_8(a[j])))
    }
}

/// Whether the AVX-512 VNNI kernels can run here: AVX2 is the backend in use (a forced scalar
/// backend stays scalar) and the CPU has AVX-512 F/BW/VL and VNNI. Not AMX: these VMs advertise
/// it but fault on it.
pub(crate) fn vnni_available() -> bool {
    super::Backend::best() == super::Backend::Avx2
        && std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && std::arch::is_x86_feature_detected!("avx512vnni")
}

/// Four weight rows against eight Q8_0 activation rows with 512-bit AVX-512 VNNI, for the same
/// block types as [`rows_q8_0`]; `dy[t][i]` is activation block `i`'s scale as f32 (converted once
/// per product by the caller, not once per weight row) and `q2` decodes two weight blocks to
/// their signed values `[first | second]`. Each result is [`rows_q8_0`]'s bit for bit: a zmm
/// holds two (row, token) pairs as its two 256-bit halves, and every lane goes through the same
/// operations as there (exact integer lane sum, conversion, `fma(dx·dy, sum, acc)`, then
/// `hsum_float_8`); only twice as many lanes per instruction. The lane sums come from
/// `vpdpbusd` with the activations as the unsigned side: `Σ (y + 128)·q - 128·Σ q = Σ y·q`, with
/// the correction per weight block, shared by all eight tokens.
///
/// # Safety
/// Only call from functions that enable AVX2, FMA, F16C and AVX-512 F/BW/VL/VNNI.
#[inline(always)]
pub(crate) unsafe fn rows_q8_0_x4t8<B>(
    x: [&[B]; 4],
    y: [&[BlockQ8_0]; 8],
    dy: [&[f32]; 8],
    q2: impl Fn(&B, &B) -> __m512i,
) -> [[f32; 4]; 8] {
    // SAFETY: the caller enables the features; the loads read a Q8_0 block's 32 quants.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); 2]; 8];
        let nb = x
            .iter()
            .map(|r| r.len())
            .chain(y.iter().map(|r| r.len()))
            .chain(dy.iter().map(|r| r.len()))
            .min()
            .unwrap_or(0);
        let zero = _mm512_setzero_si512();
        let bias = _mm512_set1_epi8(0x80u8 as i8);
        // Lanes 0..8 take element 0, lanes 8..16 element 1.
        let halves = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
        for i in 0..nb {
            let mut q = [zero; 2];
            let mut c = [zero; 2];
            let mut dx = [_mm512_setzero_ps(); 2];
            for p in 0..2 {
                let (a, b) = (&x[2 * p][i], &x[2 * p + 1][i]);
                for r in [a, b] {
                    _mm_prefetch::<_MM_HINT_T0>(
                        (r as *const B).cast::<i8>().wrapping_add(PREFETCH_AHEAD),
                    );
                }
                q[p] = q2(a, b);
                c[p] = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, bias, q[p]));
                let h = |r: &B| u32::from(std::ptr::read_unaligned((r as *const B).cast::<u16>()));
                let d = _mm_cvtph_ps(_mm_cvtsi32_si128((h(a) | h(b) << 16) as i32));
                dx[p] = _mm512_permutexvar_ps(halves, _mm512_castps128_ps512(d));
            }
            for t in 0..8 {
                let yq =
                    _mm512_xor_si512(_mm512_broadcast_i64x4(load256(y[t][i].qs.as_ptr())), bias);
                let d = _mm512_set1_ps(dy[t][i]);
                for p in 0..2 {
                    let s = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(c[p], yq, q[p]));
                    acc[t][p] = _mm512_fmadd_ps(_mm512_mul_ps(dx[p], d), s, acc[t][p]);
                }
            }
        }
        let mut out = [[0.0f32; 4]; 8];
        for t in 0..8 {
            for p in 0..2 {
                out[t][2 * p] = hsum_float_8(_mm512_castps512_ps256(acc[t][p]));
                let hi = _mm512_extractf64x4_pd::<1>(_mm512_castps_pd(acc[t][p]));
                out[t][2 * p + 1] = hsum_float_8(_mm256_castpd_ps(hi));
            }
        }
        out
    }
}

/// The 32 nibbles of each of two blocks as bytes `[lo a | hi a | lo b | hi b]` (values 0..16 then
/// 16..32 of each block, as `bytes_from_nibbles_32` orders them), for [`rows_q8_0_x4t8`].
#[inline]
#[target_feature(enable = "avx2,avx512f,avx512bw")]
pub(crate) fn nibbles_x2(a: &[u8; 16], b: &[u8; 16]) -> __m512i {
    // SAFETY: both are 16 bytes.
    let ab =
        unsafe { _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(load128(a)), load128(b)) };
    let ab = _mm512_castsi256_si512(ab);
    // 128-bit lanes [a, a, b, b]; the odd ones shifted down by a nibble.
    let z = _mm512_shuffle_i64x2::<0b01_01_00_00>(ab, ab);
    const S: i64 = 0x0004_0004_0004_0004;
    let shift = _mm512_set_epi64(S, S, 0, 0, S, S, 0, 0);
    _mm512_and_si512(_mm512_srlv_epi16(z, shift), _mm512_set1_epi8(0x0F))
}
