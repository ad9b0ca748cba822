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
