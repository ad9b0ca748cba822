//! NEON helpers shared by the aarch64 kernels: ports of the helpers of
//! ggml-cpu/ggml-cpu-impl.h and ggml-cpu/arch/arm/quants.c that the kernels use.
//!
//! Only baseline NEON (every aarch64 CPU has it): `ggml_vdotq_s32` is its non-`dotprod`
//! fallback, which gives the same integer sums as `sdot` with a different grouping into lanes.
//! The `dotprod` intrinsics are not stable in Rust yet.

use core::arch::aarch64::*;

/// Port of the non-`__ARM_FEATURE_DOTPROD` `ggml_vdotq_s32`: `acc` plus the sums of the
/// products of `a` and `b` in groups of four bytes (lane k holds bytes 2k, 2k+1, 8+2k, 9+2k).
#[inline]
#[target_feature(enable = "neon")]
pub(crate) fn dot_i8(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let p0 = vmull_s8(vget_low_s8(a), vget_low_s8(b));
    let p1 = vmull_s8(vget_high_s8(a), vget_high_s8(b));
    vaddq_s32(acc, vaddq_s32(vpaddlq_s16(p0), vpaddlq_s16(p1)))
}

/// `Σ a·b` over 32 byte pairs (two [`dot_i8`] from zero): what the kernels scale per group.
#[inline]
#[target_feature(enable = "neon")]
pub(crate) fn dot2_i8(a0: int8x16_t, b0: int8x16_t, a1: int8x16_t, b1: int8x16_t) -> int32x4_t {
    dot_i8(dot_i8(vdupq_n_s32(0), a0, b0), a1, b1)
}

/// 16 bytes at `p`.
///
/// # Safety
/// `p` must point to 16 readable bytes.
#[inline]
#[target_feature(enable = "neon")]
pub(crate) unsafe fn ld_u8(p: *const u8) -> uint8x16_t {
    // SAFETY: the caller's; `vld1q_u8` has no alignment requirement.
    unsafe { vld1q_u8(p) }
}

/// 16 signed bytes at `p`.
///
/// # Safety
/// `p` must point to 16 readable bytes.
#[inline]
#[target_feature(enable = "neon")]
pub(crate) unsafe fn ld_s8(p: *const i8) -> int8x16_t {
    // SAFETY: the caller's; `vld1q_s8` has no alignment requirement.
    unsafe { vld1q_s8(p) }
}

/// Eight little-endian i16 at `p` (the Q8_K `bsums`).
///
/// # Safety
/// `p` must point to 16 readable bytes.
#[inline]
#[target_feature(enable = "neon")]
pub(crate) unsafe fn ld_s16(p: *const u8) -> int16x8_t {
    // SAFETY: the caller's. Loaded as bytes since `p` may be odd; the target is little-endian.
    vreinterpretq_s16_u8(unsafe { vld1q_u8(p) })
}

/// IEEE half (little-endian bytes) -> f32 with one `fcvt`, as `GGML_CPU_FP16_TO_FP32` on ARM:
/// exact, the same value as `util::f16_le` (NaNs may come out quieted).
#[inline]
#[target_feature(enable = "neon")]
pub(crate) fn h2f(b: [u8; 2]) -> f32 {
    let r: f32;
    // SAFETY: `fcvt` only reads and writes the two registers.
    unsafe {
        core::arch::asm!(
            "fcvt {r:s}, {h:h}",
            h = in(vreg) i16::from_le_bytes(b),
            r = lateout(vreg) r,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    r
}

/// Four IEEE halves -> four f32 with one `fcvtl` (ggml's `vcvt_f32_f16`; the `float16x4_t`
/// intrinsics need the unstable `f16` type).
#[inline]
#[target_feature(enable = "neon")]
pub(crate) fn h2f_x4(h: uint16x4_t) -> float32x4_t {
    let r: float32x4_t;
    // SAFETY: `fcvtl` only reads and writes the two registers.
    unsafe {
        core::arch::asm!(
            "fcvtl {r:v}.4s, {h:v}.4h",
            h = in(vreg) h,
            r = lateout(vreg) r,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    r
}

/// ggml's `table_b2b_0` / `table_b2b_1`: byte i of entry b is `(bit i of b) << 4`, or with
/// `INVERT` `(!bit i of b) << 4`.
const fn b2b_table<const INVERT: bool>() -> [u64; 256] {
    let mut t = [0u64; 256];
    let mut b = 0;
    while b < 256 {
        let mut v = 0u64;
        let mut i = 0;
        while i < 8 {
            if ((b >> i) & 1 == 1) != INVERT {
                v |= 0x10 << (8 * i);
            }
            i += 1;
        }
        t[b] = v;
        b += 1;
    }
    t
}

/// `table_b2b_0`: `(b) << 4` per bit.
static TABLE_B2B_0: [u64; 256] = b2b_table::<false>();
/// `table_b2b_1`: `(!b) << 4` per bit.
static TABLE_B2B_1: [u64; 256] = b2b_table::<true>();

/// The 32 fifth bits `qh` of a Q5 block as 32 bytes of `bit << 4` (`INVERT`: `!bit << 4`),
/// values 0..16 then 16..32, via ggml's `table_b2b_*` lookups.
#[inline]
#[target_feature(enable = "neon")]
pub(crate) fn q5_high_bits<const INVERT: bool>(qh: [u8; 4]) -> (int8x16_t, int8x16_t) {
    let t = if INVERT { &TABLE_B2B_1 } else { &TABLE_B2B_0 };
    let [b0, b1, b2, b3] = qh.map(|b| t[b as usize]);
    let lo = vcombine_u64(vcreate_u64(b0), vcreate_u64(b1));
    let hi = vcombine_u64(vcreate_u64(b2), vcreate_u64(b3));
    (vreinterpretq_s8_u64(lo), vreinterpretq_s8_u64(hi))
}

/// `Σ_j a[j]·b[j]` of 16 i16 pairs given as two int16x8_t each (ggml's `vmull_s16` / `vaddq_s32`
/// pattern for the bsums · mins terms).
#[inline]
#[target_feature(enable = "neon")]
pub(crate) fn madd_i16(a: int16x8_t, b: int16x8_t) -> int32x4_t {
    vaddq_s32(
        vmull_s16(vget_low_s16(a), vget_low_s16(b)),
        vmull_s16(vget_high_s16(a), vget_high_s16(b)),
    )
}

/// The loop of ggml's NEON `ggml_vec_dot_{q4_0,q5_0,q8_0}_q8_0` and `_{q4_1,q5_1}_q8_1`: blocks
/// two at a time into two accumulators, `sumv += (f32) Σ qx·qy * d(x, y)` with `vmlaq_n_f32`.
/// `qx` decodes a weight block to signed bytes (values 0..16, then 16..32), `qy` gives an
/// activation block's 32 quants. Returns `vaddvq_f32(sumv0) + vaddvq_f32(sumv1)` and how many
/// blocks it did: all but the last of an odd count, which ggml leaves to its scalar tail.
#[inline]
#[target_feature(enable = "neon")]
pub(crate) fn q8_pairs<X, Y>(
    x: &[X],
    y: &[Y],
    qx: impl Fn(&X) -> (int8x16_t, int8x16_t),
    qy: impl Fn(&Y) -> &[i8; 32],
    d: impl Fn(&X, &Y) -> f32,
) -> (f32, usize) {
    let mut sumv = [vdupq_n_f32(0.0); 2];
    let mut done = 0;
    for (xp, yp) in x.chunks_exact(2).zip(y.chunks_exact(2)) {
        for k in 0..2 {
            let (l, h) = qx(&xp[k]);
            let q = qy(&yp[k]);
            // SAFETY: `q` is 32 bytes.
            let (yl, yh) = unsafe { (ld_s8(q.as_ptr()), ld_s8(q.as_ptr().add(16))) };
            let p = dot2_i8(l, yl, h, yh);
            sumv[k] = vmlaq_n_f32(sumv[k], vcvtq_f32_s32(p), d(&xp[k], &yp[k]));
        }
        done += 2;
    }
    (vaddvq_f32(sumv[0]) + vaddvq_f32(sumv[1]), done)
}

/// A 4-bit block's 16 bytes as (low nibbles, high nibbles): values 0..16 and 16..32.
#[inline]
#[target_feature(enable = "neon")]
pub(crate) fn nibbles(qs: &[u8; 16]) -> (uint8x16_t, uint8x16_t) {
    // SAFETY: `qs` is 16 bytes.
    let v = unsafe { ld_u8(qs.as_ptr()) };
    (vandq_u8(v, vdupq_n_u8(0x0F)), vshrq_n_u8::<4>(v))
}

/// The shared start of the Q4_K and Q5_K kernels (`ggml_vec_dot_q{4,5}_K_q8_K`, NEON): the
/// block's eight 6-bit scales, and `Σ min·Σ a` over its sub-blocks from the Q8_K block sums.
#[inline]
#[target_feature(enable = "neon")]
pub(crate) fn k4_scales_min_sum(scales: &[u8; 12], bsums: &[u8; 32]) -> ([u8; 8], i32) {
    // SAFETY: `bsums` is 32 bytes.
    let (b0, b1) = unsafe { (ld_s16(bsums.as_ptr()), ld_s16(bsums.as_ptr().add(16))) };
    // Sums of 32 quants, one per sub-block, against the 8 mins.
    let q8sums = vpaddq_s16(b0, b1);
    let (scales, mins) = super::k_common::unpack_scales_mins_k4(scales);
    let mins = vreinterpretq_s16_u16(vmovl_u8(vcreate_u8(u64::from_le_bytes(mins))));
    (scales, vaddvq_s32(madd_i16(q8sums, mins)))
}
