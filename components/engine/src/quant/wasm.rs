//! SIMD128 helpers shared by the wasm32 kernels.
//!
//! The kernels compute exactly what the AVX2 kernels of `x86.rs` and the type files compute (and
//! so what llama.cpp's x86 build computes), bit for bit: the integer sums are grouped into the
//! same eight 32-bit lanes as AVX2's `maddubs`/`madd` leave them ([`dot4_u8i8`], [`dot4_i8`]),
//! and the f32 accumulators are emulated lane for lane ([`Acc8`], [`Acc4`]), with
//! `_mm256_fmadd_ps` rounded once ([`fma_lanes`]) and `hsum_float_8`'s order of additions.
//!
//! With `relaxed-simd` (the optional build, `-C target-feature=+simd128,+relaxed-simd`) the
//! accumulators are plain f32x4 lanes and each `_mm256_fmadd_ps` is one `f32x4.relaxed_madd`:
//! the same bits wherever the host fuses it (wasmtime on any CPU with FMA, or everywhere with
//! `relaxed_simd_deterministic`, which `chord` sets; V8 on x86 with FMA), within the f64 error
//! budgets of the tests elsewhere.

#[cfg(not(target_feature = "relaxed-simd"))]
use super::util::fma_f32;
use core::arch::wasm32::*;

/// Unaligned 16-byte load.
///
/// # Safety
/// `p` must point to 16 readable bytes.
#[inline(always)]
pub(crate) unsafe fn load<T>(p: *const T) -> v128 {
    // SAFETY: the caller guarantees 16 readable bytes; `v128_load` reads unaligned.
    unsafe { v128_load(p.cast()) }
}

/// Horizontal sum of 4 i32 lanes.
#[inline(always)]
pub(crate) fn hsum_i32x4(v: v128) -> i32 {
    let v = i32x4_add(v, i32x4_shuffle::<2, 3, 0, 1>(v, v));
    let v = i32x4_add(v, i32x4_shuffle::<1, 0, 3, 2>(v, v));
    i32x4_extract_lane::<0>(v)
}

/// Spreads the 16 bits `bits` to 16 bytes: 0xFF where the bit is set, 0x00 elsewhere
/// (bit i -> byte i).
#[inline(always)]
pub(crate) fn bits_to_bytes16(bits: u16) -> v128 {
    // One splat and one byte shuffle (byte 0 to lanes 0..8, byte 1 to 8..16): building the
    // vector lane by lane costs sixteen inserts.
    let v = u16x8_splat(bits);
    let v = i8x16_shuffle::<0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1>(v, v);
    let mask = u8x16(1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128);
    i8x16_eq(v128_and(v, mask), mask)
}

/// Round half to even and convert to i32, for lanes with |v| <= 4194303 (ggml's `nearest_int`
/// trick: adding 1.5 * 2^23 leaves the rounded integer in the low mantissa bits). Cheaper than
/// `f32x4_nearest` + `i32x4_trunc_sat_f32x4`, which has no single x86 instruction.
#[inline(always)]
pub(crate) fn nearest_i32x4(v: v128) -> v128 {
    i32x4_sub(
        f32x4_add(v, f32x4_splat(12_582_912.0)),
        i32x4_splat(0x4B40_0000),
    )
}

/// Four IEEE halves (zero-extended in u32 lanes) to f32: the lane-wise form of
/// `ggml_compute_fp16_to_fp32` (same operations as `util::fp16_to_f32`, so the same bits).
#[inline(always)]
pub(crate) fn f16x4_to_f32x4(h: v128) -> v128 {
    let w = i32x4_shl(h, 16);
    let sign = v128_and(w, u32x4_splat(0x8000_0000));
    let two_w = i32x4_add(w, w);
    let normalized = f32x4_mul(
        i32x4_add(u32x4_shr(two_w, 4), u32x4_splat(0xE0 << 23)),
        f32x4_splat(f32::from_bits(0x0780_0000)),
    );
    let denormalized = f32x4_sub(
        v128_or(u32x4_shr(two_w, 17), u32x4_splat(126 << 23)),
        f32x4_splat(0.5),
    );
    let is_denormal = u32x4_lt(two_w, u32x4_splat(1 << 27));
    v128_or(sign, v128_bitselect(denormalized, normalized, is_denormal))
}

/// Four little-endian halves (one per row of a four-row kernel) to f32x4, converted at once.
#[inline(always)]
pub(crate) fn f16x4_le(h: [[u8; 2]; 4]) -> v128 {
    f16x4_to_f32x4(u32x4(
        u16::from_le_bytes(h[0]).into(),
        u16::from_le_bytes(h[1]).into(),
        u16::from_le_bytes(h[2]).into(),
        u16::from_le_bytes(h[3]).into(),
    ))
}

/// The 32-bit lanes that `_mm256_madd_epi16(_mm256_maddubs_epi16(a, b), 1)` (x86's
/// `mul_sum_us8_pairs_float` before the conversion) leaves for one 128-bit half: lane k =
/// `Σ_{t<4} a[4k+t]·b[4k+t]`, `a` unsigned bytes, `b` signed bytes. AVX2's pairwise i16 sums
/// would saturate past 2^15; the kernels only use this where they cannot.
#[cfg(not(target_feature = "relaxed-simd"))]
#[inline(always)]
pub(crate) fn dot4_u8i8(a: v128, b: v128) -> v128 {
    let m = u16x8_splat(0x00FF);
    // i16 lane j of a byte vector holds bytes 2j (low) and 2j+1 (high): the even bytes
    // in one vector, the odd ones in another, so that `dot_i16x8` adds bytes 4k, 4k+2 and
    // 4k+1, 4k+3.
    let (ae, ao) = (v128_and(a, m), u16x8_shr(a, 8));
    let (be, bo) = split_i8(b);
    i32x4_add(i32x4_dot_i16x8(ae, be), i32x4_dot_i16x8(ao, bo))
}

/// [`dot4_u8i8`] as one `i32x4.relaxed_dot_i8x16_i7x16_add`: exact for `a` below 128 (its
/// callers' values are 0..64), where every lowering of the instruction agrees.
#[cfg(target_feature = "relaxed-simd")]
#[inline(always)]
pub(crate) fn dot4_u8i8(a: v128, b: v128) -> v128 {
    i32x4_relaxed_dot_i8x16_i7x16_add(b, a, i32x4_splat(0))
}

/// [`dot4_u8i8`] for signed `a` (x86's `mul_sum_i8_pairs_float` and `mul_add_epi8`, which move
/// the sign of `a` onto `b`). The products are exact; x86's sign trick differs only for
/// `a = b = -128`, which the activation quantizers never produce (they give -127..=127).
#[inline(always)]
pub(crate) fn dot4_i8(a: v128, b: v128) -> v128 {
    let (ae, ao) = split_i8(a);
    let (be, bo) = split_i8(b);
    i32x4_add(i32x4_dot_i16x8(ae, be), i32x4_dot_i16x8(ao, bo))
}

/// Sign-extends the even and the odd bytes of `b` into two i16x8.
#[inline(always)]
fn split_i8(b: v128) -> (v128, v128) {
    (i16x8_shr(i16x8_shl(b, 8), 8), i16x8_shr(b, 8))
}

/// [`dot4_u8i8`] of the low nibbles of `raw` with `y0` and of its high nibbles with `y1`: the
/// 32 values of a 4-bit block (values 0..16 in the low nibbles, 16..32 in the high ones) with
/// their activations.
#[cfg(not(target_feature = "relaxed-simd"))]
#[inline(always)]
pub(crate) fn dot4_nibbles(raw: v128, y0: v128, y1: v128) -> (v128, v128) {
    let m = u16x8_splat(0x000F);
    let (le, lo) = (v128_and(raw, m), v128_and(u16x8_shr(raw, 8), m));
    let (he, ho) = (v128_and(u16x8_shr(raw, 4), m), u16x8_shr(raw, 12));
    let (y0e, y0o) = split_i8(y0);
    let (y1e, y1o) = split_i8(y1);
    (
        i32x4_add(i32x4_dot_i16x8(le, y0e), i32x4_dot_i16x8(lo, y0o)),
        i32x4_add(i32x4_dot_i16x8(he, y1e), i32x4_dot_i16x8(ho, y1o)),
    )
}

/// [`dot4_nibbles`] with relaxed SIMD: nibbles are below 128, so the relaxed dot is exact.
#[cfg(target_feature = "relaxed-simd")]
#[inline(always)]
pub(crate) fn dot4_nibbles(raw: v128, y0: v128, y1: v128) -> (v128, v128) {
    let lo = v128_and(raw, u8x16_splat(0x0F));
    let hi = u8x16_shr(raw, 4);
    (dot4_u8i8(lo, y0), dot4_u8i8(hi, y1))
}

/// Four f32 lanes as two f64x2 (lanes 0, 1 and 2, 3), exactly.
#[cfg(not(target_feature = "relaxed-simd"))]
#[inline(always)]
pub(crate) fn widen(f: v128) -> [v128; 2] {
    [
        f64x2_promote_low_f32x4(f),
        f64x2_promote_low_f32x4(i32x4_shuffle::<2, 3, 2, 3>(f, f)),
    ]
}

/// `a * b + c` rounded once to f32, lane-wise (`_mm256_fmadd_ps`), on `2N` lanes held as f64x2
/// whose values are all f32 values. As in [`fma_f32`]: the f64 product is exact and the f64 sum
/// rounds once; its conversion to f32 is a second rounding only where the sum is an f32 tie (a
/// fixed bit pattern in the low 29 bits: common with quantized data, e.g. 1 in 4 blocks), and
/// such lanes are corrected with TwoSum, vectorized. `TINY` sends steps with sums below 2^-126
/// to [`fma_f32`] lane by lane (f32 subnormals have other ties);
/// kernels whose values are all multiples of 2^-48 (products of f16 scales and integers) leave
/// it off.
#[cfg(not(target_feature = "relaxed-simd"))]
#[inline(always)]
pub(crate) fn fma_lanes<const N: usize, const TINY: bool>(
    a: [v128; N],
    b: [v128; N],
    c: [v128; N],
) -> [v128; N] {
    const { assert!(N.is_multiple_of(2)) };
    let mut s = c;
    for i in 0..N {
        s[i] = f64x2_add(f64x2_mul(a[i], b[i]), c[i]);
    }
    if TINY {
        // f32-subnormal sums have other ties: those steps go the slow way.
        let mut flag = i32x4_splat(0);
        for i in (0..N).step_by(2) {
            let hi = i32x4_shuffle::<1, 3, 5, 7>(s[i], s[i + 1]);
            let e = i32x4_sub(v128_and(hi, i32x4_splat(0x7fff_ffff)), i32x4_splat(1));
            flag = v128_or(flag, u32x4_lt(e, u32x4_splat((897 << 20) - 1)));
        }
        if v128_any_true(flag) {
            return fma_lanes_slow(a, b, c);
        }
    }
    for i in 0..N {
        // A lane whose f64 sum is an f32 tie (low 29 bits of the significand 1 then zeros, in
        // the normal range) is moved one f64 step towards the exact sum, whose error TwoSum gives
        // exactly (as `fma_tie` does, here on every lane at once, without a branch): no other
        // f32 tie lies that close, so the conversion below then rounds once, correctly.
        let tie = i64x2_eq(
            v128_and(s[i], i64x2_splat(0x1fff_ffff)),
            i64x2_splat(0x1000_0000),
        );
        if !v128_any_true(tie) {
            continue;
        }
        let p = f64x2_mul(a[i], b[i]);
        let bb = f64x2_sub(s[i], p);
        let err = f64x2_add(f64x2_sub(p, f64x2_sub(s[i], bb)), f64x2_sub(c[i], bb));
        let zero = f64x2_splat(0.0);
        // Away from zero when the error has the sign of the sum.
        let away = v128_not(v128_xor(f64x2_gt(err, zero), f64x2_gt(s[i], zero)));
        let step = v128_bitselect(i64x2_splat(1), i64x2_splat(-1), away);
        let step = v128_and(step, v128_and(tie, v128_not(f64x2_eq(err, zero))));
        s[i] = i64x2_add(s[i], step);
    }
    for x in &mut s {
        *x = f64x2_promote_low_f32x4(f32x4_demote_f64x2_zero(*x));
    }
    s
}

#[cfg(not(target_feature = "relaxed-simd"))]
#[cold]
#[inline(never)]
fn fma_lanes_slow<const N: usize>(a: [v128; N], b: [v128; N], c: [v128; N]) -> [v128; N] {
    let mut r = c;
    for i in 0..N {
        let f = |x: v128, l: usize| {
            (if l == 0 {
                f64x2_extract_lane::<0>(x)
            } else {
                f64x2_extract_lane::<1>(x)
            }) as f32
        };
        let lane = |l| f64::from(fma_f32(f(a[i], l), f(b[i], l), f(c[i], l)));
        r[i] = f64x2(lane(0), lane(1));
    }
    r
}

/// The f32 values of `N` f64x2 lanes, in order.
#[cfg(not(target_feature = "relaxed-simd"))]
#[inline(always)]
fn lanes_of<const N: usize, const M: usize>(v: [v128; N]) -> [f32; M] {
    let mut out = [0.0f32; M];
    for (i, x) in v.iter().enumerate() {
        out[2 * i] = f64x2_extract_lane::<0>(*x) as f32;
        out[2 * i + 1] = f64x2_extract_lane::<1>(*x) as f32;
    }
    out
}

#[cfg(not(target_feature = "relaxed-simd"))]
mod acc {
    use super::*;

    /// An AVX `__m256` of f32 accumulators, emulated exactly: lanes 0..8 in four f64x2.
    #[derive(Clone, Copy)]
    pub(crate) struct Acc8([v128; 4]);

    impl Acc8 {
        /// `_mm256_setzero_ps()`.
        #[inline(always)]
        pub(crate) fn zero() -> Acc8 {
            Acc8([f64x2_splat(0.0); 4])
        }

        /// `acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(q), acc)` with the i32 lanes
        /// 0..4 in `q0` and 4..8 in `q1`.
        #[inline(always)]
        pub(crate) fn fmadd_i32<const TINY: bool>(&mut self, d: f32, q0: v128, q1: v128) {
            let d = f64x2_splat(f64::from(d));
            let (b0, b1) = (
                widen(f32x4_convert_i32x4(q0)),
                widen(f32x4_convert_i32x4(q1)),
            );
            self.0 = fma_lanes::<4, TINY>([d; 4], [b0[0], b0[1], b1[0], b1[1]], self.0);
        }

        /// `acc = _mm256_fmadd_ps(a, b, acc)` for f32 vectors given as lanes 0..4 and 4..8.
        #[inline(always)]
        pub(crate) fn fmadd_f32(&mut self, a: [v128; 2], b: [v128; 2]) {
            let (a0, a1, b0, b1) = (widen(a[0]), widen(a[1]), widen(b[0]), widen(b[1]));
            self.0 = fma_lanes::<4, true>(
                [a0[0], a0[1], a1[0], a1[1]],
                [b0[0], b0[1], b1[0], b1[1]],
                self.0,
            );
        }

        /// The eight lanes.
        #[inline(always)]
        pub(crate) fn lanes(self) -> [f32; 8] {
            lanes_of(self.0)
        }

        /// Port of `hsum_float_8` (ggml-cpu/arch/x86/quants.c): its exact order of additions.
        #[inline(always)]
        pub(crate) fn hsum(self) -> f32 {
            hsum_float_8(self.lanes())
        }
    }

    /// An SSE `__m128` of f32 accumulators, emulated exactly like [`Acc8`].
    #[derive(Clone, Copy)]
    pub(crate) struct Acc4([v128; 2]);

    impl Acc4 {
        /// `_mm_setzero_ps()`.
        #[inline(always)]
        pub(crate) fn zero() -> Acc4 {
            Acc4([f64x2_splat(0.0); 2])
        }

        /// `acc = _mm_fmadd_ps(_mm_set1_ps(d), _mm_cvtepi32_ps(q), acc)`.
        #[inline(always)]
        pub(crate) fn fmadd_i32<const TINY: bool>(&mut self, d: f32, q: v128) {
            let d = f64x2_splat(f64::from(d));
            self.0 = fma_lanes::<2, TINY>([d; 2], widen(f32x4_convert_i32x4(q)), self.0);
        }

        /// `acc = _mm_fmadd_ps(a, b, acc)`; `TINY` as in [`fma_lanes`].
        #[inline(always)]
        pub(crate) fn fmadd_f32<const TINY: bool>(&mut self, a: v128, b: v128) {
            self.0 = fma_lanes::<2, TINY>(widen(a), widen(b), self.0);
        }

        /// The four lanes.
        #[inline(always)]
        pub(crate) fn lanes(self) -> [f32; 4] {
            lanes_of(self.0)
        }
    }
}

#[cfg(target_feature = "relaxed-simd")]
mod acc {
    use super::*;

    /// An AVX `__m256` of f32 accumulators: lanes 0..4 and 4..8 as two f32x4.
    #[derive(Clone, Copy)]
    pub(crate) struct Acc8([v128; 2]);

    impl Acc8 {
        /// `_mm256_setzero_ps()`.
        #[inline(always)]
        pub(crate) fn zero() -> Acc8 {
            Acc8([f32x4_splat(0.0); 2])
        }

        /// `acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(q), acc)` with the i32
        /// lanes 0..4 in `q0` and 4..8 in `q1`. `TINY` is for the exact build's emulation only.
        #[inline(always)]
        pub(crate) fn fmadd_i32<const TINY: bool>(&mut self, d: f32, q0: v128, q1: v128) {
            let d = f32x4_splat(d);
            self.0[0] = f32x4_relaxed_madd(d, f32x4_convert_i32x4(q0), self.0[0]);
            self.0[1] = f32x4_relaxed_madd(d, f32x4_convert_i32x4(q1), self.0[1]);
        }

        /// `acc = _mm256_fmadd_ps(a, b, acc)` for f32 vectors given as lanes 0..4 and 4..8.
        #[inline(always)]
        pub(crate) fn fmadd_f32(&mut self, a: [v128; 2], b: [v128; 2]) {
            self.0[0] = f32x4_relaxed_madd(a[0], b[0], self.0[0]);
            self.0[1] = f32x4_relaxed_madd(a[1], b[1], self.0[1]);
        }

        /// The eight lanes.
        #[inline(always)]
        pub(crate) fn lanes(self) -> [f32; 8] {
            let mut out = [0.0f32; 8];
            // SAFETY: two 16-byte stores into 32 bytes.
            unsafe {
                v128_store(out.as_mut_ptr().cast(), self.0[0]);
                v128_store(out.as_mut_ptr().add(4).cast(), self.0[1]);
            }
            out
        }

        /// Port of `hsum_float_8` (ggml-cpu/arch/x86/quants.c): its exact order of additions.
        #[inline(always)]
        pub(crate) fn hsum(self) -> f32 {
            let r = f32x4_add(self.0[1], self.0[0]);
            let r = f32x4_add(r, i32x4_shuffle::<2, 3, 2, 3>(r, r));
            f32x4_extract_lane::<0>(r) + f32x4_extract_lane::<1>(r)
        }
    }

    /// An SSE `__m128` of f32 accumulators.
    #[derive(Clone, Copy)]
    pub(crate) struct Acc4(v128);

    impl Acc4 {
        /// `_mm_setzero_ps()`.
        #[inline(always)]
        pub(crate) fn zero() -> Acc4 {
            Acc4(f32x4_splat(0.0))
        }

        /// `acc = _mm_fmadd_ps(_mm_set1_ps(d), _mm_cvtepi32_ps(q), acc)`.
        #[inline(always)]
        pub(crate) fn fmadd_i32<const TINY: bool>(&mut self, d: f32, q: v128) {
            self.0 = f32x4_relaxed_madd(f32x4_splat(d), f32x4_convert_i32x4(q), self.0);
        }

        /// `acc = _mm_fmadd_ps(a, b, acc)`.
        #[inline(always)]
        pub(crate) fn fmadd_f32<const TINY: bool>(&mut self, a: v128, b: v128) {
            self.0 = f32x4_relaxed_madd(a, b, self.0);
        }

        /// The four lanes.
        #[inline(always)]
        pub(crate) fn lanes(self) -> [f32; 4] {
            let mut out = [0.0f32; 4];
            // SAFETY: one 16-byte store into 16 bytes.
            unsafe { v128_store(out.as_mut_ptr().cast(), self.0) };
            out
        }
    }
}

pub(crate) use acc::{Acc4, Acc8};

/// `hsum_float_8` on eight f32 lanes: high half plus low half, then lanes 0 + 2 and 1 + 3.
#[inline(always)]
pub(crate) fn hsum_float_8(x: [f32; 8]) -> f32 {
    let r = [x[4] + x[0], x[5] + x[1], x[6] + x[2], x[7] + x[3]];
    (r[0] + r[2]) + (r[1] + r[3])
}

/// Four weight rows against one Q8_0 activation row, for the block types whose dot product with
/// Q8_0 is `d_x·d_y · Σ qx·qy` per block (the simd128 twins of `ggml_vec_dot_q{4_0,5_0,8_0}_q8_0`):
/// `d` reads the block's scale (a half), `qx` decodes its 32 values (values 0..16, 16..32) to
/// bytes `u` with `qx = u - OFF`: unsigned values below 128 for `OFF > 0` (Q4_0: 8, Q5_0: 16),
/// the signed values themselves for `OFF = 0` (Q8_0). Each row's result is the one-row kernel's
/// bit for bit: the integer lanes are the same exact sums; the rows are only interleaved, so the
/// four chains of fused multiply-adds overlap.
#[inline(always)]
pub(crate) fn rows_q8_0<B, const OFF: i8>(
    x: [&[B]; 4],
    y: &[super::q8_0::BlockQ8_0],
    d: impl Fn(&B) -> [u8; 2],
    qx: impl Fn(&B) -> (v128, v128),
) -> [f32; 4] {
    let mut acc = [Acc8::zero(); 4];
    let nb = x.iter().map(|r| r.len()).min().unwrap_or(0).min(y.len());
    for i in 0..nb {
        let yb = &y[i];
        // SAFETY: `qs` of Q8_0 is 32 bytes.
        let (y0, y1) = unsafe { (load(yb.qs.as_ptr()), load(yb.qs.as_ptr().add(16))) };
        let (c0, c1) = (offset_lanes::<OFF>(y0), offset_lanes::<OFF>(y1));
        // The four rows' scales converted at once; `dx * dy` per lane as the one-row kernel.
        let dx = f16x4_le([d(&x[0][i]), d(&x[1][i]), d(&x[2][i]), d(&x[3][i])]);
        let mut dd = [0.0f32; 4];
        // SAFETY: 16 bytes into [f32; 4].
        unsafe {
            v128_store(
                dd.as_mut_ptr().cast(),
                f32x4_mul(dx, f32x4_splat(super::util::f16_le(yb.d))),
            )
        };
        for j in 0..4 {
            let (lo, hi) = qx(&x[j][i]);
            let (s0, s1) = (dot4_off::<OFF>(lo, y0, c0), dot4_off::<OFF>(hi, y1, c1));
            acc[j].fmadd_i32::<false>(dd[j], s0, s1);
        }
    }
    [acc[0].hsum(), acc[1].hsum(), acc[2].hsum(), acc[3].hsum()]
}

/// What [`dot4_off`] needs of the activations, once per block: `-OFF · Σ y` per lane with relaxed
/// SIMD (the offset's share of the dot product), nothing otherwise.
#[inline(always)]
fn offset_lanes<const OFF: i8>(y: v128) -> v128 {
    #[cfg(target_feature = "relaxed-simd")]
    if OFF != 0 {
        let sums = i32x4_relaxed_dot_i8x16_i7x16_add(y, i8x16_splat(1), i32x4_splat(0));
        return i32x4_mul(sums, i32x4_splat(-i32::from(OFF)));
    }
    let _ = y;
    i32x4_splat(0)
}

/// [`dot4_i8`] of `u - OFF` and `y` (see [`rows_q8_0`]); `c` from [`offset_lanes`]. With relaxed
/// SIMD, `OFF > 0` dots the unsigned values and adds the offset's share (exact under every
/// lowering of the relaxed dot: `u < 128`).
#[inline(always)]
fn dot4_off<const OFF: i8>(u: v128, y: v128, c: v128) -> v128 {
    #[cfg(target_feature = "relaxed-simd")]
    {
        if OFF != 0 {
            i32x4_relaxed_dot_i8x16_i7x16_add(y, u, c)
        } else {
            // Q8_0 weights may be -128, whose magnitude is not a 7-bit operand (lowerings that
            // read it as signed would differ): the exact i16 products.
            let _ = c;
            dot4_i8(u, y)
        }
    }
    #[cfg(not(target_feature = "relaxed-simd"))]
    {
        let _ = c;
        if OFF != 0 {
            dot4_i8(i8x16_sub(u, i8x16_splat(OFF)), y)
        } else {
            dot4_i8(u, y)
        }
    }
}
