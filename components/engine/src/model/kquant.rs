//! K-quant matrix products with the floating-point structure of the kernels llama.cpp's x86 CPU
//! backend actually runs for them, so that results agree with llama.cpp bit for bit.
//!
//! For Q4_K/Q5_K/Q6_K weights llama.cpp does not always use the `vec_dot` kernels
//! (`quant::vec_dot_fn` ports those): Q4_K matrices whose row count is a multiple of 8 are
//! repacked at load (`ggml/src/ggml-cpu/repack.cpp`, `q4_K_8x8_q8_K`), and batches of 8 or more
//! rows of the other K-quants go through the tiled matmul (`ggml-cpu/tiled/`). Both compute the
//! same exact integer sums per 256-value super-block but combine them in floating point
//! differently, and once activations are requantized downstream a last-bit difference grows into
//! visible logit differences. The integer sums here are plain scalar code; only the float
//! epilogues are llama.cpp's:
//!
//! - repack (`ggml_gemm/gemv_q4_K_8x8_q8_K`): `acc = fma(S, d·d8, acc)`,
//!   `accm = fma(M, dmin·d8, accm)` over super-blocks, result `acc - accm`;
//! - tiled (AVX-512 VNNI microtile): `r = S·d` (minus `dmin·M`, fused), `out += r·d8` per
//!   super-block.
//!
//! `S = Σ_sub scale·Σ q·a` and `M = Σ_sub min·Σ a` are exact integers.

use super::ops::fma;
use super::weights::Matrix;
use crate::quant::GgmlType;
use crate::{Error, Result};

/// Values per super-block.
const QK_K: usize = 256;
/// Bytes of a Q8_K block: d (f32), 256 i8 quants, 16 i16 sums of 16.
const Q8K_BYTES: usize = 4 + QK_K + 32;

/// Which llama.cpp kernel computes `w · x` for `n` activation rows, if it is one emulated here.
pub(crate) fn path(w: &Matrix, n: usize) -> Option<Path> {
    match w.ty {
        GgmlType::Q4_K if w.n_rows.is_multiple_of(8) => Some(Path::Repack),
        GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K if n >= 8 => Some(Path::Tiled),
        _ => None,
    }
}

/// See the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Path {
    Repack,
    Tiled,
}

/// One weight super-block decoded to integers.
#[repr(C, align(64))]
struct Block {
    /// The unsigned quant codes (Q6_K: 0..63, value `code - 32`; Q4_K/Q5_K: 0..31), laid out as
    /// the Q8_K activations they multiply.
    q: [u8; QK_K],
    /// Sub-block scales per 4-value lane of `q` (lane `i` covers `q[4i..4i + 4]`) as i16 in the
    /// low half of an i32, for the AVX-512 sums.
    lane_scales: [i32; QK_K / 4],
    /// Sub-block scales (16 for Q6_K, 8 for Q4_K/Q5_K).
    scales: [i32; 16],
    /// Per 16 values (a Q8_K `bsums` entry): Q6_K its sub-block's scale, Q4_K/Q5_K its
    /// sub-block's min.
    per16: [i16; 16],
    /// Sub-block mins (Q4_K/Q5_K).
    mins: [i32; 8],
    d: f32,
    dmin: f32,
}

impl Block {
    fn new() -> Block {
        Block {
            q: [0; QK_K],
            lane_scales: [0; QK_K / 4],
            scales: [0; 16],
            per16: [0; 16],
            mins: [0; 8],
            d: 0.0,
            dmin: 0.0,
        }
    }

    /// Decodes `b` (one block of `ty`), as ggml's `dequantize_row_*` reads it; `LANES`: also the
    /// per-lane tables of the AVX-512 sums.
    #[inline(always)]
    fn decode<const LANES: bool>(&mut self, ty: GgmlType, b: &[u8]) {
        let f16 = |i: usize| half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32();
        match ty {
            GgmlType::Q4_K | GgmlType::Q5_K => {
                self.d = f16(0);
                self.dmin = f16(2);
                let sc = &b[4..16];
                for j in 0..8 {
                    // get_scale_min_k4
                    let (s, m) = if j < 4 {
                        (sc[j] & 63, sc[j + 4] & 63)
                    } else {
                        (
                            (sc[j + 4] & 0xF) | ((sc[j - 4] >> 6) << 4),
                            (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4),
                        )
                    };
                    self.scales[j] = i32::from(s);
                    self.mins[j] = i32::from(m);
                }
                let (qh, qs) = if ty == GgmlType::Q5_K {
                    (Some(&b[16..48]), &b[48..176])
                } else {
                    (None, &b[16..144])
                };
                for c in 0..4 {
                    for l in 0..32 {
                        let v = qs[32 * c + l];
                        let (mut lo, mut hi) = (v & 0xF, v >> 4);
                        if let Some(qh) = qh {
                            lo += ((qh[l] >> (2 * c)) & 1) << 4;
                            hi += ((qh[l] >> (2 * c + 1)) & 1) << 4;
                        }
                        self.q[64 * c + l] = lo;
                        self.q[64 * c + 32 + l] = hi;
                    }
                }
            }
            GgmlType::Q6_K => {
                let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
                self.d = f16(208);
                for (s, &v) in self.scales.iter_mut().zip(sc) {
                    *s = i32::from(v as i8);
                }
                for n in 0..2 {
                    let (ql, qh) = (&ql[64 * n..], &qh[32 * n..]);
                    let y = &mut self.q[128 * n..];
                    for l in 0..32 {
                        y[l] = (ql[l] & 0xF) | ((qh[l] & 3) << 4);
                        y[l + 32] = (ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4);
                        y[l + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
                        y[l + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
                    }
                }
            }
            _ => unreachable!("kquant::Block::decode of {ty:?}"),
        }
        if LANES {
            let (n_sub, per) = if ty == GgmlType::Q6_K {
                (16, 4)
            } else {
                (8, 8)
            };
            for sb in 0..n_sub {
                // The scale as an i16 in the low half, zeros above: the form `vpmaddwd` needs.
                let sc = i32::from(self.scales[sb] as i16 as u16);
                self.lane_scales[per * sb..per * (sb + 1)].fill(sc);
            }
            for (i, v) in self.per16.iter_mut().enumerate() {
                // Scales are 6-bit (Q4_K/Q5_K, and their mins) or i8 (Q6_K): they fit.
                *v = if ty == GgmlType::Q6_K {
                    self.scales[i] as i16
                } else {
                    self.mins[i / 2] as i16
                };
            }
        }
    }

    /// This block's exact integer sums with one Q8_K block `a`, per 64 values (four groups:
    /// Q4_K/Q5_K sub-blocks 2g, 2g+1; Q6_K sub-blocks 4g..4g+4): `s[g] = Σ_sb scale·Σ q·a` and
    /// (Q4_K, Q5_K) `m[g] = Σ_sb min·Σ a`. Q6_K's values are `code - 32`: its sums are
    /// `scale·(Σ code·a - 32·Σ a)`, the same integers.
    #[inline(always)]
    fn group_sums<const AVX2: bool>(
        &self,
        ty: GgmlType,
        a: &[u8],
        s: &mut [i32; 4],
        m: &mut [i32; 4],
    ) {
        let qs = &a[4..4 + QK_K];
        let bsum = |i: usize| {
            i32::from(i16::from_le_bytes([
                a[4 + QK_K + 2 * i],
                a[5 + QK_K + 2 * i],
            ]))
        };
        for g in 0..4 {
            if ty == GgmlType::Q6_K {
                s[g] = (4 * g..4 * g + 4)
                    .map(|sb| {
                        let d = dot_u8i8::<16, AVX2>(&self.q[16 * sb..], &qs[16 * sb..]);
                        self.scales[sb] * (d - 32 * bsum(sb))
                    })
                    .sum();
                m[g] = 0;
            } else {
                s[g] = (2 * g..2 * g + 2)
                    .map(|sb| {
                        self.scales[sb] * dot_u8i8::<32, AVX2>(&self.q[32 * sb..], &qs[32 * sb..])
                    })
                    .sum();
                m[g] = (2 * g..2 * g + 2)
                    .map(|sb| self.mins[sb] * (bsum(2 * sb) + bsum(2 * sb + 1)))
                    .sum();
            }
        }
    }

    /// [`Block::group_sums`] with AVX-512 VNNI: one `vpdpbusd` per 64 values (unsigned codes
    /// times signed activations, the same exact integers), the sub-block scales applied per lane
    /// (Q6_K, whose tiled path wants totals, also gets correct group sums);
    /// `GROUPS: false` leaves the total in `s[0]` and `m[0]` (the other entries zero).
    ///
    /// # Safety
    /// The CPU must support AVX-512 F/BW and VNNI; the block was decoded with `LANES`.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn group_sums_vnni<const GROUPS: bool>(
        &self,
        ty: GgmlType,
        a: &[u8],
        s: &mut [i32; 4],
        m: &mut [i32; 4],
    ) {
        use std::arch::x86_64::*;
        let a = &a[..Q8K_BYTES];
        // SAFETY: the loads read within `self.q` (256 bytes), `self.lane_scales` (64 i32),
        // `self.per16` (16 i16) and `a` (4 + 256 + 32 bytes); the caller vouches for the CPU.
        unsafe {
            let aq = a.as_ptr().add(4);
            // Per 4-value lane: its dot product (|dp| <= 4·63·127 < 2^15, so its low 16 bits
            // are the value as an i16) times the sub-block scale, by `vpmaddwd` (the scale's
            // high 16 bits are zero): exact, cheaper than `vpmulld`.
            let mut v = [_mm512_setzero_si512(); 4];
            for (g, vg) in v.iter_mut().enumerate() {
                let w = _mm512_loadu_si512(self.q.as_ptr().add(64 * g).cast());
                let x = _mm512_loadu_si512(aq.add(64 * g).cast());
                let dp = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, x);
                let sc = _mm512_loadu_si512(self.lane_scales.as_ptr().add(16 * g).cast());
                *vg = _mm512_madd_epi16(dp, sc);
            }
            // Per 16 values: bsum times its sub-block's scale (Q6_K) or min, in pairs (8 lanes).
            let bs = _mm256_loadu_si256(aq.add(QK_K).cast());
            let per = _mm256_madd_epi16(bs, _mm256_loadu_si256(self.per16.as_ptr().cast()));
            let half = |z: __m512i| {
                _mm256_add_epi32(_mm512_castsi512_si256(z), _mm512_extracti64x4_epi64::<1>(z))
            };
            if GROUPS {
                // Four group sums at once: halves, then pairwise adds across the groups.
                let h01 = _mm256_hadd_epi32(half(v[0]), half(v[1]));
                let h23 = _mm256_hadd_epi32(half(v[2]), half(v[3]));
                let h = _mm256_hadd_epi32(h01, h23);
                let sg = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h));
                _mm_storeu_si128(s.as_mut_ptr().cast(), sg);
                // Groups g: `per` lanes 2g, 2g + 1.
                let p = _mm256_hadd_epi32(per, per);
                let mg =
                    _mm_unpacklo_epi64(_mm256_castsi256_si128(p), _mm256_extracti128_si256::<1>(p));
                _mm_storeu_si128(m.as_mut_ptr().cast(), mg);
                if ty == GgmlType::Q6_K {
                    // Q6_K's offset: 32 · Σ scale·bsum, per group.
                    let c = _mm_slli_epi32::<5>(mg);
                    _mm_storeu_si128(s.as_mut_ptr().cast(), _mm_sub_epi32(sg, c));
                    *m = [0; 4];
                }
            } else {
                // Both totals at once: lane 0 the scaled sums, lane 1 the `per` sum.
                let t = half(_mm512_add_epi32(
                    _mm512_add_epi32(v[0], v[1]),
                    _mm512_add_epi32(v[2], v[3]),
                ));
                let h = _mm256_hadd_epi32(t, per);
                let h = _mm256_hadd_epi32(h, h);
                let r = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h));
                let (st, pt) = (_mm_cvtsi128_si32(r), _mm_extract_epi32::<1>(r));
                if ty == GgmlType::Q6_K {
                    *s = [st - 32 * pt, 0, 0, 0];
                    *m = [0; 4];
                } else {
                    *s = [st, 0, 0, 0];
                    *m = [pt, 0, 0, 0];
                }
            }
        }
    }
}

/// `Σ w[i]·x[i]` over `N` unsigned codes `w` (below 64) and signed bytes `x` (as stored in a Q8_K
/// block), exactly (so with SIMD, summed in any order, it is the same integer).
#[inline(always)]
fn dot_u8i8<const N: usize, const AVX2: bool>(w: &[u8], x: &[u8]) -> i32 {
    let (w, x) = (&w[..N], &x[..N]);
    #[cfg(target_arch = "x86_64")]
    if AVX2 && N.is_multiple_of(16) {
        use std::arch::x86_64::*;
        // SAFETY: `AVX2` is set only inside `matmul_avx2`, which runs only where AVX2 is; the
        // loads read 16 of the N bytes at offsets below N.
        unsafe {
            let mut acc = _mm256_setzero_si256();
            for i in (0..N).step_by(16) {
                let wv = _mm256_cvtepu8_epi16(_mm_loadu_si128(w.as_ptr().add(i).cast()));
                let xv = _mm256_cvtepi8_epi16(_mm_loadu_si128(x.as_ptr().add(i).cast()));
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(wv, xv));
            }
            let h = _mm_add_epi32(
                _mm256_castsi256_si128(acc),
                _mm256_extracti128_si256::<1>(acc),
            );
            let h = _mm_add_epi32(h, _mm_unpackhi_epi64(h, h));
            let h = _mm_add_epi32(h, _mm_shuffle_epi32::<1>(h));
            return _mm_cvtsi128_si32(h);
        }
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    if N.is_multiple_of(16) {
        use crate::quant::wasm::{dot4_u8i8, hsum_i32x4, load};
        use core::arch::wasm32::*;
        let mut acc = i32x4_splat(0);
        for i in (0..N).step_by(16) {
            // SAFETY: 16 of the N bytes at offset i < N of both slices.
            let (wv, xv) = unsafe { (load(w.as_ptr().add(i)), load(x.as_ptr().add(i))) };
            // Codes below 64: exact (and one relaxed dot in the relaxed-simd build).
            acc = i32x4_add(acc, dot4_u8i8(wv, xv));
        }
        return hsum_i32x4(acc);
    }
    let mut acc = 0i32;
    for i in 0..N {
        acc += i32::from(w[i]) * i32::from(x[i] as i8);
    }
    acc
}

/// `out[t][r - rows.start] = w[r] · x[t]` along `path` for the rows `rows`; `x` holds `n` Q8_K
/// rows of `w.n_cols` values; `tmp` has room for `n` values.
pub(crate) fn matmul(
    path: Path,
    w: &Matrix,
    x: &[u8],
    n: usize,
    rows: std::ops::Range<usize>,
    out: &mut [f32],
    tmp: &mut [f32],
) -> Result<()> {
    #[cfg(target_arch = "x86_64")]
    if crate::quant::vnni_available() {
        // SAFETY: checked just above.
        return unsafe { matmul_vnni(path, w, x, n, rows, out, tmp) };
    }
    #[cfg(target_arch = "x86_64")]
    if crate::quant::Backend::best() == crate::quant::Backend::Avx2 {
        // SAFETY: `best` is AVX2 only where the CPU has AVX2 and FMA.
        return unsafe { matmul_avx2(path, w, x, n, rows, out, tmp) };
    }
    matmul_impl::<false, false>(path, w, x, n, rows, out, tmp)
}

/// [`matmul`] compiled for AVX2: the integer sums vectorized, the FMAs single instructions.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn matmul_avx2(
    path: Path,
    w: &Matrix,
    x: &[u8],
    n: usize,
    rows: std::ops::Range<usize>,
    out: &mut [f32],
    tmp: &mut [f32],
) -> Result<()> {
    matmul_impl::<true, false>(path, w, x, n, rows, out, tmp)
}

/// [`matmul`] with AVX-512 VNNI integer sums ([`Block::group_sums_vnni`]).
///
/// # Safety
/// The CPU must support AVX2, FMA, AVX-512 F/BW and VNNI.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vnni")]
unsafe fn matmul_vnni(
    path: Path,
    w: &Matrix,
    x: &[u8],
    n: usize,
    rows: std::ops::Range<usize>,
    out: &mut [f32],
    tmp: &mut [f32],
) -> Result<()> {
    matmul_impl::<true, true>(path, w, x, n, rows, out, tmp)
}

/// `VNNI` (only ever set by [`matmul_vnni`]): the AVX-512 integer sums.
#[inline(always)]
fn matmul_impl<const AVX2: bool, const VNNI: bool>(
    path: Path,
    w: &Matrix,
    x: &[u8],
    n: usize,
    rows: std::ops::Range<usize>,
    out: &mut [f32],
    tmp: &mut [f32],
) -> Result<()> {
    let nb = w.n_cols / QK_K;
    let arow = nb * Q8K_BYTES;
    let bsize = w.ty.type_size();
    // Output rows are `m` apart.
    let (r0, m) = (rows.start, rows.len());
    if !w.n_cols.is_multiple_of(QK_K)
        || rows.end > w.n_rows
        || x.len() < n * arow
        || out.len() < n * m
        || tmp.len() < n
    {
        return Err(Error::InvalidArgument(format!(
            "K-quant matmul of {w:?} with {n} rows"
        )));
    }
    // The repacked kernel runs rows in groups of 4 through its gemm (one FMA per 64 values) and
    // the rest through its gemv (one FMA per super-block).
    let n_gemm = n - n % 4;
    // Inside `matmul_avx2`/`matmul_vnni` (FMA enabled) `mul_add` is the instruction; elsewhere
    // the exact emulation (a libm call or wasm's missing instruction would be slower).
    let fma = |a: f32, b: f32, c: f32| if AVX2 { a.mul_add(b, c) } else { fma(a, b, c) };
    let mut blk = Block::new();
    let (mut ss, mut ms) = ([0i32; 4], [0i32; 4]);
    // Sixteen rows at a time, one per lane (see `rows16_vnni`); the rest below.
    #[cfg(target_arch = "x86_64")]
    let r_first = if VNNI && matches!(w.ty, GgmlType::Q4_K | GgmlType::Q6_K) {
        let mut mt = vec![[0f32; 16]; n];
        for c in (0..m - m % 16).step_by(16) {
            // SAFETY: `VNNI` is set only inside `matmul_vnni`; rows `r0 + c..+16` exist
            // (`rows.end <= n_rows`), `x` holds `n` rows and `out` `n` rows of `m` (checked).
            unsafe {
                if w.ty == GgmlType::Q6_K {
                    rows16_vnni::<true>(path, w, x, n, r0 + c, out, m, c, &mut mt);
                } else {
                    rows16_vnni::<false>(path, w, x, n, r0 + c, out, m, c, &mut mt);
                }
            }
        }
        m - m % 16
    } else {
        0
    };
    #[cfg(not(target_arch = "x86_64"))]
    let r_first = 0;
    let wb = w.row_bytes_view();
    for r in r_first..m {
        wb.prefetch(r0 + r + 1..r0 + r + 2);
        let wr = wb.row(r0 + r);
        // Running sums per token: `out` (tiled: the result; repack: acc) and `tmp` (repack: accm).
        for t in 0..n {
            out[t * m + r] = 0.0;
            tmp[t] = 0.0;
        }
        for b in 0..nb {
            blk.decode::<VNNI>(w.ty, &wr[b * bsize..(b + 1) * bsize]);
            for t in 0..n {
                let a = &x[t * arow + b * Q8K_BYTES..][..Q8K_BYTES];
                let d8 = f32::from_le_bytes([a[0], a[1], a[2], a[3]]);
                let groups = path == Path::Repack && t < n_gemm;
                #[cfg(target_arch = "x86_64")]
                if VNNI {
                    // SAFETY: `VNNI` is set only inside `matmul_vnni`, which runs only where
                    // the CPU has AVX-512 VNNI; the block was decoded with its lane tables.
                    unsafe {
                        if groups {
                            blk.group_sums_vnni::<true>(w.ty, a, &mut ss, &mut ms);
                        } else {
                            blk.group_sums_vnni::<false>(w.ty, a, &mut ss, &mut ms);
                        }
                    }
                } else {
                    blk.group_sums::<AVX2>(w.ty, a, &mut ss, &mut ms);
                }
                #[cfg(not(target_arch = "x86_64"))]
                blk.group_sums::<AVX2>(w.ty, a, &mut ss, &mut ms);
                let o = &mut out[t * m + r];
                // Integer totals are exact in any order.
                let (s, mn) = (ss.iter().sum::<i32>(), ms.iter().sum::<i32>());
                match path {
                    Path::Tiled => {
                        // ggml-cpu/tiled: tiled_run_microtile_avx2's epilogue
                        let mut res = s as f32 * blk.d;
                        if w.ty != GgmlType::Q6_K {
                            res = fma(-blk.dmin, mn as f32, res);
                        }
                        *o = fma(res, d8, *o);
                    }
                    Path::Repack if groups => {
                        // ggml_gemm_q4_K_8x8_q8_K: one FMA per 64 values
                        let (dd, dm) = (blk.d * d8, blk.dmin * d8);
                        for g in 0..4 {
                            *o = fma(ss[g] as f32, dd, *o);
                            tmp[t] = fma(ms[g] as f32, dm, tmp[t]);
                        }
                    }
                    Path::Repack => {
                        // ggml_gemv_q4_K_8x8_q8_K
                        *o = fma(s as f32, blk.d * d8, *o);
                        tmp[t] = fma(mn as f32, blk.dmin * d8, tmp[t]);
                    }
                }
            }
        }
        if path == Path::Repack {
            for t in 0..n {
                out[t * m + r] -= tmp[t];
            }
        }
    }
    Ok(())
}

/// Rows `r..r + 16` of `w` (Q4_K, or Q6_K when `Q6`) times the `n` Q8_K rows `x` along `path`,
/// into `out[t * m + col..][..16]`; `mt` has room for `n` rows of 16 (repack: the `accm` sums).
///
/// Each 32-bit lane is one weight row, as in llama.cpp's `ggml_gemm_q4_K_8x8_q8_K` (repacked
/// rows side by side): a super-block of the 16 rows is decoded once, with gathers, into 64
/// registers' worth of codes (register `i`: values `4i..4i + 4` of each row), and each
/// `vpdpbusd` then takes four activation bytes broadcast from memory, so the sums need no
/// horizontal reductions. Per lane the integers are [`Block::group_sums`]'s and the float
/// operations `matmul_impl`'s, in the same order: the results are the same bits.
///
/// # Safety
/// The CPU must support AVX2, FMA, AVX-512 F/BW and VNNI; rows `r..r + 16` exist, `x` holds `n`
/// rows and `out` at least `n * m` values with `col + 16 <= m`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn rows16_vnni<const Q6: bool>(
    path: Path,
    w: &Matrix,
    x: &[u8],
    n: usize,
    r: usize,
    out: &mut [f32],
    m: usize,
    col: usize,
    mt: &mut [[f32; 16]],
) {
    use std::arch::x86_64::*;
    let nb = w.n_cols / QK_K;
    let arow = nb * Q8K_BYTES;
    let bsize = w.ty.type_size();
    let n_gemm = n - n % 4;
    // Dwords of codes per sub-block (32 values for Q4_K, 16 for Q6_K).
    let l = if Q6 { 4 } else { 8 };
    // SAFETY: the gathers read inside rows r..r + 16 (offsets below a block's size, the Q6_K
    // scale read starts at 206 of 210); activation reads stay inside row t of `x`; `out`
    // and `mt` are indexed below their checked sizes.
    unsafe {
        let rows = w.data().as_ptr().add(r * w.row_bytes);
        let offs = _mm512_mullo_epi32(
            _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
            _mm512_set1_epi32(w.row_bytes as i32),
        );
        let zero = _mm512_setzero_si512();
        let m4 = _mm512_set1_epi8(0x0F);
        let halves = |v: __m512i| _mm512_cvtph_ps(_mm512_cvtepi32_epi16(v));
        let mut q = [zero; 64];
        // Q4_K: scales and mins (as an i16 pair `min | min << 16`) per sub-block; Q6_K: scales
        // and, per pair of sub-blocks, `scale0 | scale1 << 16`.
        let mut sc = [zero; 16];
        let mut pair = [zero; 8];
        for t in 0..n {
            out[t * m + col..][..16].fill(0.0);
            mt[t] = [0.0; 16];
        }
        for b in 0..nb {
            let blk = rows.add(b * bsize);
            let g = |o: usize| _mm512_i32gather_epi32::<1>(offs, blk.add(o).cast());
            let (d, dmin);
            if Q6 {
                let m3 = _mm512_set1_epi8(3);
                for h in 0..2 {
                    for j in 0..8 {
                        let ql0 = g(64 * h + 4 * j);
                        let ql1 = g(64 * h + 32 + 4 * j);
                        let qh = g(128 + 32 * h + 4 * j);
                        let hi = |s: u32| {
                            _mm512_slli_epi32::<4>(_mm512_and_si512(
                                _mm512_srlv_epi32(qh, _mm512_set1_epi32(s as i32)),
                                m3,
                            ))
                        };
                        let lo4 = |v: __m512i| _mm512_and_si512(v, m4);
                        let hi4 = |v: __m512i| _mm512_and_si512(_mm512_srli_epi32::<4>(v), m4);
                        q[32 * h + j] = _mm512_or_si512(lo4(ql0), hi(0));
                        q[32 * h + 8 + j] = _mm512_or_si512(lo4(ql1), hi(2));
                        q[32 * h + 16 + j] = _mm512_or_si512(hi4(ql0), hi(4));
                        q[32 * h + 24 + j] = _mm512_or_si512(hi4(ql1), hi(6));
                    }
                }
                for k in 0..4 {
                    let v = g(192 + 4 * k);
                    for i in 0..4 {
                        // Sign-extended byte i.
                        let sh = _mm512_sllv_epi32(v, _mm512_set1_epi32(24 - 8 * i as i32));
                        sc[4 * k + i] = _mm512_srai_epi32::<24>(sh);
                    }
                }
                for (i, p) in pair.iter_mut().enumerate() {
                    let lo = _mm512_and_si512(sc[2 * i], _mm512_set1_epi32(0xFFFF));
                    *p = _mm512_or_si512(lo, _mm512_slli_epi32::<16>(sc[2 * i + 1]));
                }
                d = halves(_mm512_srli_epi32::<16>(g(206)));
                dmin = _mm512_setzero_ps();
            } else {
                for c in 0..4 {
                    for j in 0..8 {
                        let v = g(16 + 32 * c + 4 * j);
                        q[16 * c + j] = _mm512_and_si512(v, m4);
                        q[16 * c + 8 + j] = _mm512_and_si512(_mm512_srli_epi32::<4>(v), m4);
                    }
                }
                // get_scale_min_k4 on bytes 4..16, per lane.
                let (s0, s1, s2) = (g(4), g(8), g(12));
                let byte = |v: __m512i, i: usize| {
                    _mm512_and_si512(
                        _mm512_srlv_epi32(v, _mm512_set1_epi32(8 * i as i32)),
                        _mm512_set1_epi32(0xFF),
                    )
                };
                let m63 = _mm512_set1_epi32(63);
                for j in 0..8 {
                    let (s, mn) = if j < 4 {
                        (
                            _mm512_and_si512(byte(s0, j), m63),
                            _mm512_and_si512(byte(s1, j), m63),
                        )
                    } else {
                        let (c, i) = (byte(s2, j - 4), j - 4);
                        let top =
                            |v: __m512i| _mm512_slli_epi32::<4>(_mm512_srli_epi32::<6>(byte(v, i)));
                        (
                            _mm512_or_si512(_mm512_and_si512(c, _mm512_set1_epi32(0xF)), top(s0)),
                            _mm512_or_si512(_mm512_srli_epi32::<4>(c), top(s1)),
                        )
                    };
                    sc[j] = s;
                    pair[j] = _mm512_or_si512(mn, _mm512_slli_epi32::<16>(mn));
                }
                let dd = g(0);
                d = halves(dd);
                dmin = halves(_mm512_srli_epi32::<16>(dd));
            }
            for (t, mt) in mt.iter_mut().enumerate().take(n) {
                let a = x.as_ptr().add(t * arow + b * Q8K_BYTES);
                let aq = a.add(4).cast::<i32>();
                let bs = a.add(4 + QK_K).cast::<i32>();
                let bc = |p: *const i32| _mm512_set1_epi32(std::ptr::read_unaligned(p));
                let mut s = [zero; 4];
                let mut mn = [zero; 4];
                let per_group = 16 / l;
                for (gi, (sg, mg)) in s.iter_mut().zip(&mut mn).enumerate() {
                    for sb in per_group * gi..per_group * (gi + 1) {
                        let mut dp = zero;
                        for j in 0..l {
                            dp = _mm512_dpbusd_epi32(dp, q[l * sb + j], bc(aq.add(l * sb + j)));
                        }
                        *sg = _mm512_add_epi32(*sg, _mm512_mullo_epi32(dp, sc[sb]));
                    }
                    if Q6 {
                        // Q6_K's offset: 32 · Σ scale·bsum over the group's sub-blocks.
                        let c = _mm512_add_epi32(
                            _mm512_madd_epi16(pair[2 * gi], bc(bs.add(2 * gi))),
                            _mm512_madd_epi16(pair[2 * gi + 1], bc(bs.add(2 * gi + 1))),
                        );
                        *sg = _mm512_sub_epi32(*sg, _mm512_slli_epi32::<5>(c));
                    } else {
                        *mg = _mm512_add_epi32(
                            _mm512_madd_epi16(pair[2 * gi], bc(bs.add(2 * gi))),
                            _mm512_madd_epi16(pair[2 * gi + 1], bc(bs.add(2 * gi + 1))),
                        );
                    }
                }
                let d8 = _mm512_set1_ps(std::ptr::read_unaligned(a.cast::<f32>()));
                let op = out.as_mut_ptr().add(t * m + col);
                let mut o = _mm512_loadu_ps(op);
                let cvt = _mm512_cvtepi32_ps;
                let total = |v: [__m512i; 4]| {
                    _mm512_add_epi32(_mm512_add_epi32(v[0], v[1]), _mm512_add_epi32(v[2], v[3]))
                };
                match path {
                    Path::Tiled => {
                        // tiled_run_microtile_avx2's epilogue, per lane
                        let mut res = _mm512_mul_ps(cvt(total(s)), d);
                        if !Q6 {
                            let neg = _mm512_sub_ps(_mm512_setzero_ps(), dmin);
                            res = _mm512_fmadd_ps(neg, cvt(total(mn)), res);
                        }
                        o = _mm512_fmadd_ps(res, d8, o);
                    }
                    Path::Repack => {
                        let mp = mt.as_mut_ptr();
                        let mut acc_m = _mm512_loadu_ps(mp);
                        let (dd, dm) = (_mm512_mul_ps(d, d8), _mm512_mul_ps(dmin, d8));
                        if t < n_gemm {
                            // ggml_gemm_q4_K_8x8_q8_K: one FMA per 64 values
                            for gi in 0..4 {
                                o = _mm512_fmadd_ps(cvt(s[gi]), dd, o);
                                acc_m = _mm512_fmadd_ps(cvt(mn[gi]), dm, acc_m);
                            }
                        } else {
                            // ggml_gemv_q4_K_8x8_q8_K
                            o = _mm512_fmadd_ps(cvt(total(s)), dd, o);
                            acc_m = _mm512_fmadd_ps(cvt(total(mn)), dm, acc_m);
                        }
                        _mm512_storeu_ps(mp, acc_m);
                    }
                }
                _mm512_storeu_ps(op, o);
            }
        }
        if path == Path::Repack {
            for (t, mt) in mt.iter().enumerate().take(n) {
                let op = out.as_mut_ptr().add(t * m + col);
                let o = _mm512_sub_ps(_mm512_loadu_ps(op), _mm512_loadu_ps(mt.as_ptr()));
                _mm512_storeu_ps(op, o);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant;

    fn rand(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0
            })
            .collect()
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// Every path equals the exact dot product of the dequantized operands up to f32 rounding,
    /// and agrees with the `vec_dot` kernel to the same precision: the integer decoding is right.
    #[test]
    fn paths_compute_the_dot_product() {
        // 40 rows: two groups of sixteen for the AVX-512 kernel and eight rows after them.
        let (k, m, n) = (512, 40, 9);
        for ty in [GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K] {
            let wf = rand(k * m, 1);
            let rb = usize::try_from(ty.row_size(k as u64).unwrap()).unwrap();
            let mut wb = vec![0u8; rb * m];
            for r in 0..m {
                quant::quantize_row(ty, &wf[r * k..(r + 1) * k], &mut wb[r * rb..(r + 1) * rb])
                    .unwrap();
            }
            let w = Matrix::from_bytes(ty, k, m, wb);
            let xf = rand(k * n, 2);
            let arb = n_q8k(k);
            let mut xb = vec![0u8; arb * n];
            for t in 0..n {
                quant::quantize_row(
                    GgmlType::Q8_K,
                    &xf[t * k..(t + 1) * k],
                    &mut xb[t * arb..(t + 1) * arb],
                )
                .unwrap();
            }
            let mut wd = vec![0f32; k];
            let mut xd = vec![0f32; k];
            for path in [Path::Repack, Path::Tiled] {
                if path == Path::Repack && ty != GgmlType::Q4_K {
                    continue;
                }
                let mut out = vec![0f32; n * m];
                let mut tmp = vec![0f32; n];
                matmul(path, &w, &xb, n, 0..w.n_rows, &mut out, &mut tmp).unwrap();
                // The SIMD build of the integer sums gives the scalar one's results exactly,
                // over the whole matrix and over a row range.
                let mut scalar = vec![0f32; n * m];
                matmul_impl::<false, false>(path, &w, &xb, n, 0..m, &mut scalar, &mut tmp).unwrap();
                assert_eq!(bits(&out), bits(&scalar), "{ty:?} {path:?}");
                // And so do the AVX2 sums where `matmul` took the AVX-512 ones.
                #[cfg(target_arch = "x86_64")]
                if crate::quant::Backend::best() == crate::quant::Backend::Avx2 {
                    let mut avx2 = vec![0f32; n * m];
                    // SAFETY: `best` is AVX2 only where the CPU has AVX2 and FMA.
                    unsafe { matmul_avx2(path, &w, &xb, n, 0..m, &mut avx2, &mut tmp) }.unwrap();
                    assert_eq!(bits(&avx2), bits(&scalar), "{ty:?} {path:?} AVX2");
                    println!(
                        "{ty:?} {path:?}: VNNI sums {}",
                        crate::quant::vnni_available()
                    );
                }
                for part_rows in [8..16, 8..40] {
                    let len = part_rows.len();
                    let mut part = vec![0f32; n * len];
                    matmul(path, &w, &xb, n, part_rows.clone(), &mut part, &mut tmp).unwrap();
                    for t in 0..n {
                        assert_eq!(
                            bits(&part[t * len..(t + 1) * len]),
                            bits(&out[t * m + part_rows.start..t * m + part_rows.end])
                        );
                    }
                }
                for r in 0..m {
                    w.dequantize_row(r, &mut wd, &mut Vec::new()).unwrap();
                    for t in 0..n {
                        let xr = &xb[t * arb..(t + 1) * arb];
                        quant::dequantize_row(GgmlType::Q8_K, xr, &mut xd).unwrap();
                        let exact: f64 = wd
                            .iter()
                            .zip(&xd)
                            .map(|(&a, &b)| f64::from(a) * f64::from(b))
                            .sum();
                        let got = out[t * m + r];
                        let vd = quant::vec_dot_fn(ty)(k, w.row(r), xr);
                        assert!(
                            (f64::from(got) - exact).abs() < 1e-3,
                            "{ty:?} {path:?}: {got} vs {exact}"
                        );
                        assert!(
                            (got - vd).abs() < 1e-3,
                            "{ty:?} {path:?}: {got} vs vec_dot {vd}"
                        );
                    }
                }
            }
        }
    }

    fn n_q8k(k: usize) -> usize {
        usize::try_from(GgmlType::Q8_K.row_size(k as u64).unwrap()).unwrap()
    }

    #[test]
    fn dispatch_follows_llama_cpp() {
        let w = |ty: GgmlType, rows| {
            let rb = usize::try_from(ty.row_size(256).unwrap()).unwrap();
            Matrix::from_bytes(ty, 256, rows, vec![0; rb * rows])
        };
        assert_eq!(path(&w(GgmlType::Q4_K, 8), 1), Some(Path::Repack));
        assert_eq!(path(&w(GgmlType::Q4_K, 12), 1), None);
        assert_eq!(path(&w(GgmlType::Q4_K, 12), 8), Some(Path::Tiled));
        assert_eq!(path(&w(GgmlType::Q6_K, 8), 7), None);
        assert_eq!(path(&w(GgmlType::Q6_K, 8), 8), Some(Path::Tiled));
        assert_eq!(path(&w(GgmlType::Q5_K, 8), 8), Some(Path::Tiled));
        assert_eq!(path(&w(GgmlType::Q8_0, 8), 64), None);
    }
}
