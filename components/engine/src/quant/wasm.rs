//! SIMD128 helpers shared by the wasm32 kernels.

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

/// Sums i8 x i8 products of two 16-lane vectors into 4 i32 lanes (each lane: 4 products).
#[inline(always)]
pub(crate) fn dot_i8x16(a: v128, b: v128) -> v128 {
    let lo = i32x4_dot_i16x8(i16x8_extend_low_i8x16(a), i16x8_extend_low_i8x16(b));
    let hi = i32x4_dot_i16x8(i16x8_extend_high_i8x16(a), i16x8_extend_high_i8x16(b));
    i32x4_add(lo, hi)
}

/// Horizontal sum of 4 i32 lanes.
#[inline(always)]
pub(crate) fn hsum_i32x4(v: v128) -> i32 {
    let v = i32x4_add(v, i32x4_shuffle::<2, 3, 0, 1>(v, v));
    let v = i32x4_add(v, i32x4_shuffle::<1, 0, 3, 2>(v, v));
    i32x4_extract_lane::<0>(v)
}

/// Horizontal sum of 4 f32 lanes.
#[inline(always)]
pub(crate) fn hsum_f32x4(v: v128) -> f32 {
    (f32x4_extract_lane::<0>(v) + f32x4_extract_lane::<1>(v))
        + (f32x4_extract_lane::<2>(v) + f32x4_extract_lane::<3>(v))
}

/// Spreads the 16 bits `bits` to 16 bytes: 0xFF where the bit is set, 0x00 elsewhere
/// (bit i -> byte i).
#[inline(always)]
pub(crate) fn bits_to_bytes16(bits: u16) -> v128 {
    let lo = (bits & 0xFF) as u8;
    let hi = (bits >> 8) as u8;
    let v = u8x16(
        lo, lo, lo, lo, lo, lo, lo, lo, hi, hi, hi, hi, hi, hi, hi, hi,
    );
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
