//! Small helpers shared by the quant kernels: half-precision conversions, ggml's rounding trick
//! and the safe byte <-> block casts.

/// Marker for plain-old-data block types.
///
/// # Safety
/// Implementors must be `#[repr(C)]` structs made only of `u8`/`i8` arrays (or such structs):
/// alignment 1, no padding, every bit pattern valid. `cast_blocks` relies on that to turn any
/// byte slice into a block slice.
pub unsafe trait Pod: Copy + 'static {}

/// Views `bytes` as blocks. `None` when the length is not a whole number of blocks.
#[inline]
pub(crate) fn cast_blocks<B: Pod>(bytes: &[u8]) -> Option<&[B]> {
    const { assert!(align_of::<B>() == 1 && size_of::<B>() > 0) };
    let size = size_of::<B>();
    if !bytes.len().is_multiple_of(size) {
        return None;
    }
    // SAFETY: `B: Pod` has alignment 1 (asserted at compile time above), no padding and no invalid
    // bit patterns, and `bytes` holds exactly `len / size` of them.
    Some(unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<B>(), bytes.len() / size) })
}

/// Mutable form of [`cast_blocks`].
#[inline]
pub(crate) fn cast_blocks_mut<B: Pod>(bytes: &mut [u8]) -> Option<&mut [B]> {
    const { assert!(align_of::<B>() == 1 && size_of::<B>() > 0) };
    let size = size_of::<B>();
    if !bytes.len().is_multiple_of(size) {
        return None;
    }
    // SAFETY: as in `cast_blocks`; the exclusive borrow of `bytes` is moved into the result.
    Some(unsafe {
        std::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast::<B>(), bytes.len() / size)
    })
}

/// The bytes of a block slice (for tests, benches and writers).
#[inline]
pub(crate) fn blocks_as_bytes<B: Pod>(blocks: &[B]) -> &[u8] {
    // SAFETY: `B: Pod` has no padding, so every byte of the slice is initialised.
    unsafe { std::slice::from_raw_parts(blocks.as_ptr().cast::<u8>(), size_of_val(blocks)) }
}

/// IEEE half -> f32. Port of `ggml_compute_fp16_to_fp32` (ggml-impl.h); exact for every input.
#[inline(always)]
pub(crate) fn fp16_to_f32(h: u16) -> f32 {
    let w = (h as u32) << 16;
    let sign = w & 0x8000_0000;
    let two_w = w.wrapping_add(w);

    let exp_offset: u32 = 0xE0 << 23;
    let exp_scale = f32::from_bits(0x0780_0000); // 0x1.0p-112f
    let normalized = f32::from_bits((two_w >> 4) + exp_offset) * exp_scale;

    let magic_mask: u32 = 126 << 23;
    let denormalized = f32::from_bits((two_w >> 17) | magic_mask) - 0.5;

    let denormalized_cutoff: u32 = 1 << 27;
    let bits = if two_w < denormalized_cutoff {
        denormalized.to_bits()
    } else {
        normalized.to_bits()
    };
    f32::from_bits(sign | bits)
}

/// f32 -> IEEE half, round to nearest even. Port of `ggml_compute_fp32_to_fp16` (ggml-impl.h).
#[inline(always)]
pub(crate) fn f32_to_fp16(f: f32) -> u16 {
    let scale_to_inf = f32::from_bits(0x7780_0000); // 0x1.0p+112f
    let scale_to_zero = f32::from_bits(0x0880_0000); // 0x1.0p-110f
    let mut base = (f.abs() * scale_to_inf) * scale_to_zero;

    let w = f.to_bits();
    let shl1_w = w.wrapping_add(w);
    let sign = w & 0x8000_0000;
    let mut bias = shl1_w & 0xFF00_0000;
    if bias < 0x7100_0000 {
        bias = 0x7100_0000;
    }

    base += f32::from_bits((bias >> 1) + 0x0780_0000);
    let bits = base.to_bits();
    let exp_bits = (bits >> 13) & 0x0000_7C00;
    let mantissa_bits = bits & 0x0000_0FFF;
    let nonsign = exp_bits + mantissa_bits;
    ((sign >> 16)
        | if shl1_w > 0xFF00_0000 {
            0x7E00
        } else {
            nonsign
        }) as u16
}

/// bfloat16 -> f32. Port of `ggml_compute_bf16_to_fp32` (ggml-impl.h).
#[inline(always)]
pub(crate) fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// f32 -> bfloat16, round to nearest even, NaNs made quiet. Port of `ggml_compute_fp32_to_bf16`.
#[inline(always)]
pub(crate) fn f32_to_bf16(f: f32) -> u16 {
    let u = f.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    (u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

/// Reads a little-endian half from a block field.
#[inline(always)]
pub(crate) fn f16_le(b: [u8; 2]) -> f32 {
    fp16_to_f32(u16::from_le_bytes(b))
}

/// Writes a half into a block field (little-endian, as GGUF stores it).
#[inline(always)]
pub(crate) fn f16_to_le(f: f32) -> [u8; 2] {
    f32_to_fp16(f).to_le_bytes()
}

/// Round to nearest, ties to even, for |f| <= 4194303. Port of ggml's `nearest_int`
/// (ggml-quants.c), bit for bit, including what it returns outside that range.
#[inline(always)]
pub(crate) fn nearest_int(f: f32) -> i32 {
    let val = f + 12_582_912.0;
    let i = val.to_bits() as i32;
    (i & 0x007f_ffff) - 0x0040_0000
}

/// `_mm256_cvtps_epi32` on one lane after rounding: out-of-range and NaN give `i32::MIN`.
/// Used by the activation quantizers so the scalar path matches the SIMD ones bit for bit.
#[inline(always)]
pub(crate) fn cvt_f32_i32(f: f32) -> i32 {
    if f.is_nan() || !(-2_147_483_648.0..2_147_483_648.0).contains(&f) {
        i32::MIN
    } else {
        f as i32
    }
}

/// Round half to even and convert, exactly as `_mm256_round_ps` + `_mm256_cvtps_epi32` do
/// (NaN and out-of-range give `i32::MIN`). Finite activations take the fast `nearest_int` path,
/// which avoids a `roundevenf` libcall on x86 without SSE4.1.
#[inline(always)]
pub(crate) fn round_act(f: f32) -> i32 {
    if f.abs() <= 4_194_303.0 {
        nearest_int(f)
    } else {
        cvt_f32_i32(f.round_ties_even())
    }
}

/// `a * b + c` rounded once, as the FMA instructions of x86 compute it (`_mm256_fmadd_ps`,
/// `fmaf`), on every target; wasm has no FMA instruction.
///
/// The product of two f32 is exact in f64, so `p + c` in f64 is the exact result rounded once;
/// converting that to f32 rounds a second time, which only goes wrong when the f64 sum lands
/// exactly halfway between two f32 values ([`f32_tie`]): then the sign of the f64 rounding
/// error, found exactly with Knuth's TwoSum, says which way the true result lies.
#[cfg(not(all(target_arch = "wasm32", target_feature = "relaxed-simd")))]
#[inline(always)]
pub(crate) fn fma_f32(a: f32, b: f32, c: f32) -> f32 {
    let (p, c) = (f64::from(a) * f64::from(b), f64::from(c));
    let s = p + c;
    // Fast test: the low 29 bits of the f64 significand are 1 followed by zeros in every f32
    // tie of the normal range (and at the overflow threshold); f32-subnormal sums go the slow way.
    let bits = s.to_bits();
    let tiny = (bits & 0x7fff_ffff_ffff_ffff).wrapping_sub(1) < (897u64 << 52) - 1;
    if bits & 0x1fff_ffff != 0x1000_0000 && !tiny {
        return s as f32;
    }
    fma_tie(p, c, s)
}

/// [`fma_f32`] in the relaxed-simd build: one `f32x4.relaxed_madd`, fused wherever the host
/// fuses it (see `quant::wasm`).
#[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
#[inline(always)]
pub(crate) fn fma_f32(a: f32, b: f32, c: f32) -> f32 {
    use core::arch::wasm32::*;
    f32x4_extract_lane::<0>(f32x4_relaxed_madd(
        f32x4_splat(a),
        f32x4_splat(b),
        f32x4_splat(c),
    ))
}

/// The slow path of [`fma_f32`]: `s = p + c` rounded to f64 may be an f32 tie.
#[cfg(not(all(target_arch = "wasm32", target_feature = "relaxed-simd")))]
#[cold]
#[inline(never)]
pub(crate) fn fma_tie(p: f64, c: f64, s: f64) -> f32 {
    if !f32_tie(s) {
        return s as f32;
    }
    // TwoSum: the exact error of `s = p + c`.
    let bb = s - p;
    let err = (p - (s - bb)) + (c - bb);
    if err == 0.0 {
        // An exact tie: the conversion's ties-to-even is the single rounding.
        return s as f32;
    }
    // Move `s` one f64 step towards the exact result: no f32 tie lies that close.
    let bits = s.to_bits();
    let away = (err > 0.0) == (s > 0.0);
    f64::from_bits(if away { bits + 1 } else { bits - 1 }) as f32
}

/// Whether the finite `s` lies exactly halfway between two neighbouring f32 values (or at the
/// threshold from which f32 rounds to infinity).
#[cfg(not(all(target_arch = "wasm32", target_feature = "relaxed-simd")))]
fn f32_tie(s: f64) -> bool {
    let r = s as f32;
    if !s.is_finite() || f64::from(r) == s {
        return false;
    }
    if r.is_infinite() {
        // 2^128 - 2^103: halfway between f32::MAX and 2^128.
        return s.abs() == f64::from_bits(0x47ef_ffff_f000_0000);
    }
    let other = if f64::from(r) < s {
        r.next_up()
    } else {
        r.next_down()
    };
    // `other` is infinite only when `r` is f32::MAX and `s` is below the threshold above.
    other.is_finite() && (f64::from(r) + f64::from(other)) * 0.5 == s
}

/// Saturating i32 -> i8, as the `packs` instructions do.
#[inline(always)]
pub(crate) fn sat_i8(v: i32) -> i8 {
    v.clamp(i8::MIN as i32, i8::MAX as i32) as i8
}

/// ggml's `kvalues_iq4nl` (ggml-common.h): the 16 non-linear levels of IQ4_NL / IQ4_XS.
pub(crate) const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fp16_roundtrip_matches_half_crate() {
        for h in 0..=u16::MAX {
            let a = fp16_to_f32(h);
            let b = half::f16::from_bits(h).to_f32();
            if a.is_nan() {
                assert!(b.is_nan());
            } else {
                assert_eq!(a.to_bits(), b.to_bits(), "h={h:#06x}");
                assert_eq!(f32_to_fp16(a), h, "h={h:#06x}");
            }
        }
        // Rounding of values between halves: ties to even, like the half crate.
        let mut x = 1.0e-8f32;
        while x < 7.0e4 {
            assert_eq!(f32_to_fp16(x), half::f16::from_f32(x).to_bits(), "x={x}");
            assert_eq!(f32_to_fp16(-x), half::f16::from_f32(-x).to_bits(), "x=-{x}");
            x *= 1.000_37;
        }
    }

    #[test]
    fn nearest_int_is_round_half_even() {
        for (f, want) in [
            (0.5f32, 0),
            (1.5, 2),
            (2.5, 2),
            (-0.5, 0),
            (-1.5, -2),
            (3.49, 3),
        ] {
            assert_eq!(nearest_int(f), want, "{f}");
            assert_eq!(f.round_ties_even() as i32, want);
        }
    }

    #[test]
    fn round_act_matches_cvtps() {
        let mut x = -300.0f32;
        while x < 300.0 {
            assert_eq!(round_act(x), x.round_ties_even() as i32, "{x}");
            x += 0.125;
        }
        for x in [
            4_194_303.5f32,
            4_194_304.5,
            1e9,
            -1e9,
            3e9,
            -3e9,
            f32::INFINITY,
            f32::NAN,
        ] {
            let want = if x.is_nan() || x.abs() >= 2_147_483_648.0 {
                i32::MIN
            } else {
                x.round_ties_even() as i32
            };
            assert_eq!(round_act(x), want, "{x}");
        }
    }

    /// The double-rounding cases of the f64 shortcut, in the normal and the subnormal range.
    #[test]
    fn fma_f32_rounds_once() {
        let naive = |a: f32, b: f32, c: f32| (f64::from(a) * f64::from(b) + f64::from(c)) as f32;
        // (1 + 2^-23) - (1 - 2^-23)·2^-24·(1 + 2^-23) = 1 + 2^-24 + 2^-70: just above the tie
        // between 1 and 1 + 2^-23, which the f64 sum lands on.
        let up = f32::from_bits(0x3f80_0001);
        let a = -f32::from_bits(0x337f_fffe);
        assert_eq!(naive(a, up, up), 1.0);
        assert_eq!(fma_f32(a, up, up), up);
        assert_eq!(fma_f32(-a, -up, up), up);
        assert_eq!(fma_f32(a, -up, -up), -up);
        // k·2^-149 + 2^-150·(1 - 2^-46), k odd: just below the tie between the subnormals k and
        // k + 1, which the f64 sum lands on.
        let k = 4_194_303u32;
        let (a, b) = (
            f32::from_bits((51 << 23) | 0x7f_fffe),
            f32::from_bits((52 << 23) | 1),
        );
        let c = f32::from_bits(k);
        assert_eq!(naive(a, b, c).to_bits(), k + 1);
        assert_eq!(fma_f32(a, b, c).to_bits(), k);
        // Exact ties round to even; MAX + 2^103 is the tie with 2^128 (overflow).
        assert_eq!(fma_f32(f32::from_bits(0x3380_0000), 1.0, 1.0), 1.0);
        let max = f32::MAX;
        assert_eq!(
            fma_f32(max, 1.0, f32::from_bits(0x7300_0000)),
            f32::INFINITY
        );
        assert_eq!(
            fma_f32(max, 1.0, f32::from_bits(0x7300_0000).next_down()),
            max
        );
        assert!(fma_f32(f32::NAN, 1.0, 1.0).is_nan());
        assert_eq!(fma_f32(f32::INFINITY, 2.0, 1.0), f32::INFINITY);
    }

    /// Against the platform's fused multiply-add (hardware or a correct libm) on random and
    /// on constructed near-tie operands.
    #[test]
    fn fma_f32_matches_mul_add() {
        let mut s = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (s >> 32) as u32
        };
        for i in 0..300_000 {
            let a = f32::from_bits((next() & 0x8fff_ffff) | 0x3000_0000);
            let b = f32::from_bits((next() & 0x8fff_ffff) | 0x3000_0000);
            let c = if i % 2 == 0 {
                f32::from_bits((next() & 0x8fff_ffff) | 0x3000_0000)
            } else {
                // Cancels most of the product: many near-ties.
                -((a * b) + f32::from_bits((next() & 0x807f_ffff) | 0x2000_0000))
            };
            assert_eq!(
                fma_f32(a, b, c).to_bits(),
                a.mul_add(b, c).to_bits(),
                "{a:e} {b:e} {c:e}"
            );
        }
    }

    #[test]
    fn bf16_conversion() {
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
        assert_eq!(bf16_to_f32(0x3f80), 1.0);
        // 1 + 2^-8 is halfway between two bf16 values: ties to even.
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82);
        assert!(bf16_to_f32(f32_to_bf16(f32::NAN)).is_nan());
    }
}
