//! The numeric building blocks the forward passes are written in, each a port of the ggml CPU op
//! it names, down to where llama.cpp rounds: activations are quantized to the weight's
//! `vec_dot_type` before a matrix product, queries and attention weights go through f16 before
//! their dot products with the f16 KV cache, and GELU goes through ggml's f16 lookup table.
//!
//! Buffers are passed in; nothing here allocates after [`Acts::new`].

use super::fmat;
use super::hparams::RopeType;
use super::kquant;
use super::kv_cache::LayerKv;
use super::weights::Matrix;
use crate::quant::{self, GgmlType};
use crate::{Error, Result};
use half::slice::HalfFloatSliceExt;
use std::ops::Range;
use std::sync::OnceLock;

fn oom(what: &str, n: usize) -> Error {
    Error::OutOfMemory(format!("{what}: {n} elements"))
}

/// A zeroed vector of `n` elements, allocated fallibly.
pub(crate) fn alloc<T: Clone + Default>(n: usize, what: &str) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| oom(what, n))?;
    v.resize(n, T::default());
    Ok(v)
}

/// `a * b` for buffer sizes, with an error instead of overflow.
pub(crate) fn mul(a: usize, b: usize, what: &str) -> Result<usize> {
    a.checked_mul(b)
        .ok_or_else(|| Error::OutOfMemory(format!("{what}: {a} x {b} overflows")))
}

// ---------------------------------------------------------------------------------------------
// Matrix products

/// A batch of activation rows, and their quantizations to each `vec_dot_type` the weights ask for.
///
/// llama.cpp's `ggml_compute_forward_mul_mat` converts the f32 input rows to the weight type's
/// `vec_dot_type` (Q8_0, Q8_1, Q8_K, F16 …) once per product; here the conversion is also shared
/// between the products that read the same input (Q, K and V; gate and up).
pub(crate) struct Acts {
    x: Vec<f32>,
    n: usize,
    k: usize,
    /// One buffer per vec_dot type the model needs, with its "holds the current x" flag.
    q: Vec<(GgmlType, Vec<u8>, bool)>,
    /// One value per row, for kernels that need a second accumulator.
    tmp: Vec<f32>,
}

impl Acts {
    /// Room for `max_n` rows of up to `max_k` values, quantizable to each of `types`.
    pub fn new(max_n: usize, max_k: usize, types: &[GgmlType]) -> Result<Acts> {
        let x = alloc(mul(max_n, max_k, "activations")?, "activations")?;
        let mut q = Vec::new();
        for &ty in types {
            if q.iter().any(|(t, _, _)| *t == ty) {
                continue;
            }
            // Only widths that are whole blocks are ever quantized, so the largest is enough.
            let row = usize::try_from(ty.row_size(max_k.next_multiple_of(ty.block_size()) as u64)?)
                .map_err(|_| oom("quantized activations", max_k))?;
            q.push((
                ty,
                alloc(
                    mul(row, max_n, "quantized activations")?,
                    "quantized activations",
                )?,
                false,
            ));
        }
        Ok(Acts {
            x,
            n: 0,
            k: 0,
            q,
            tmp: alloc(max_n, "activations")?,
        })
    }

    /// Makes `x` (`n` rows of `k`) the input of the next products.
    pub fn set(&mut self, x: &[f32], n: usize, k: usize) -> Result<()> {
        let len = n * k;
        if x.len() < len || len > self.x.len() {
            return Err(Error::InvalidArgument(format!(
                "activations of {n} x {k} do not fit"
            )));
        }
        self.x[..len].copy_from_slice(&x[..len]);
        self.n = n;
        self.k = k;
        for e in &mut self.q {
            e.2 = false;
        }
        Ok(())
    }

    /// The current rows in type `ty`, the bytes per row, and the per-row scratch.
    fn quantized(&mut self, ty: GgmlType) -> Result<(&[u8], usize, &mut [f32])> {
        let (n, k) = (self.n, self.k);
        let row =
            usize::try_from(ty.row_size(k as u64)?).map_err(|_| oom("quantized activations", k))?;
        let Some(e) = self.q.iter_mut().find(|e| e.0 == ty) else {
            return Err(Error::Unsupported(format!(
                "activations in {} (not prepared for this model)",
                ty.name()
            )));
        };
        if !e.2 {
            for t in 0..n {
                quant::quantize_row(
                    ty,
                    &self.x[t * k..(t + 1) * k],
                    &mut e.1[t * row..(t + 1) * row],
                )?;
            }
            e.2 = true;
        }
        Ok((&e.1[..n * row], row, &mut self.tmp[..n]))
    }
}

/// `out[t][r] = w[r] · x[t]` for every input row `t` of `x` and row `r` of `w`:
/// `x` is `[n, w.n_cols]`, `out` is `[n, w.n_rows]`.
///
/// Each weight row is read once per batch (rows outer, tokens inner), the way a batched prefill
/// must be to be memory-bound on the weights only once. K-quant weights take the paths of
/// [`kquant`] where llama.cpp uses its repacked or tiled kernels.
pub(crate) fn matmul(w: &Matrix, x: &mut Acts, out: &mut [f32]) -> Result<()> {
    let (n, k, m) = (x.n, x.k, w.n_rows);
    if k != w.n_cols || out.len() < n * m {
        return Err(Error::InvalidArgument(format!(
            "matmul of {w:?} with {n} x {k} activations into {} values",
            out.len()
        )));
    }
    if let Some(dev) = &w.device {
        return dev.matmul(&x.x[..n * k], n, &mut out[..n * m]);
    }
    let (a, _, tmp) = x.quantized(w.ty.vec_dot_type())?;
    matmul_rows(w, a, n, 0..m, out, tmp)
}

thread_local! {
    /// [`matmul_rows`]'s f32 activation scales for the eight-token kernels, kept per thread.
    static Q8_SCALES: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// `out[t * rows.len() + (r - rows.start)] = w[r] · x[t]` for the rows `rows` of a resident `w`,
/// where `a` holds the `n` rows of `x` quantized to `w.ty.vec_dot_type()` and `tmp` has room for
/// `n` values. Rows are independent, so a CPU backend's threads each take a range and get
/// [`matmul`]'s results bit for bit (K-quant paths are chosen from the whole matrix's shape).
pub fn matmul_rows(
    w: &Matrix,
    a: &[u8],
    n: usize,
    rows: std::ops::Range<usize>,
    out: &mut [f32],
    tmp: &mut [f32],
) -> Result<()> {
    let (k, m) = (w.n_cols, w.n_rows);
    let arow = usize::try_from(w.ty.vec_dot_type().row_size(k as u64)?)
        .map_err(|_| oom("quantized activations", k))?;
    let ldo = rows.len();
    if rows.end > m
        || w.data().len() != m * w.row_bytes
        || a.len() < n * arow
        || out.len() < n * ldo
        || tmp.len() < n
    {
        return Err(Error::InvalidArgument(format!(
            "matmul of rows {rows:?} of {w:?} ({} bytes held) with {n} activation rows of {} bytes into {} values",
            w.data().len(),
            a.len(),
            out.len()
        )));
    }
    if let Some(path) = kquant::path(w, n) {
        return kquant::matmul(path, w, a, n, rows, out, tmp);
    }
    // F32/F16 weights: llama.cpp's summation order for this batch size (see `fmat`).
    let tiny = fmat::dot_fn(w.ty, m, k, n);
    let dot = tiny.unwrap_or(w.dot);
    let wb = w.row_bytes_view();
    let mut rows = rows;
    let mut i0 = 0;
    if let Some(dot4) = quant::vec_dot4_fn(w.ty).filter(|_| tiny.is_none()) {
        // Four rows at a time (the same results, see `VecDot4Fn`).
        let dot4x2 = quant::vec_dot4x2_fn(w.ty).filter(|_| n >= 2);
        let dot4x4 = quant::vec_dot4x4_fn(w.ty).filter(|_| n >= 4);
        let dot4x8 = quant::vec_dot4x8_fn(w.ty).filter(|_| n >= 8);
        // The eight-token kernel takes the activation scales as f32, converted here once, into
        // this thread's buffer (it grows to the largest batch, then is reused).
        let mut scales = match dot4x8 {
            Some(_) => {
                let mut v = Q8_SCALES.take();
                v.clear();
                let len = mul(n, k / 32, "activation scales")?;
                v.try_reserve(len)
                    .map_err(|_| oom("activation scales", len))?;
                v.extend((0..n).flat_map(|t| quant::q8_0_scales(&a[t * arow..(t + 1) * arow])));
                v
            }
            None => Vec::new(),
        };
        let nbk = scales.len() / n.max(1);
        while rows.len() >= 4 {
            let r = rows.start;
            let ws = [wb.row(r), wb.row(r + 1), wb.row(r + 2), wb.row(r + 3)];
            let mut t = 0;
            let at = |t: usize| &a[t * arow..(t + 1) * arow];
            if let Some(dot4x8) = dot4x8 {
                let dt = |t: usize| &scales[t * nbk..(t + 1) * nbk];
                while t + 8 <= n {
                    let v = dot4x8(
                        k,
                        ws,
                        std::array::from_fn(|u| at(t + u)),
                        std::array::from_fn(|u| dt(t + u)),
                    );
                    for (u, vu) in v.iter().enumerate() {
                        let o = (t + u) * ldo + i0;
                        out[o..o + 4].copy_from_slice(vu);
                    }
                    t += 8;
                }
            }
            if let Some(dot4x4) = dot4x4 {
                // Four tokens at a time: each weight block decoded once for all four.
                while t + 4 <= n {
                    let v = dot4x4(k, ws, [at(t), at(t + 1), at(t + 2), at(t + 3)]);
                    for (u, vu) in v.iter().enumerate() {
                        let o = (t + u) * ldo + i0;
                        out[o..o + 4].copy_from_slice(vu);
                    }
                    t += 4;
                }
            }
            if let Some(dot4x2) = dot4x2 {
                // Two tokens at a time: each weight block decoded once for both.
                while t + 2 <= n {
                    let v = dot4x2(k, ws, [at(t), at(t + 1)]);
                    for (u, vu) in v.iter().enumerate() {
                        let o = (t + u) * ldo + i0;
                        out[o..o + 4].copy_from_slice(vu);
                    }
                    t += 2;
                }
            }
            for t in t..n {
                let v = dot4(k, ws, &a[t * arow..(t + 1) * arow]);
                out[t * ldo + i0..t * ldo + i0 + 4].copy_from_slice(&v);
            }
            rows.start += 4;
            i0 += 4;
        }
        if scales.capacity() > 0 {
            scales.clear();
            Q8_SCALES.set(scales);
        }
    }
    for (i, r) in rows.enumerate().map(|(i, r)| (i + i0, r)) {
        wb.prefetch(r + 4..r + 5);
        let wr = wb.row(r);
        for t in 0..n {
            out[t * ldo + i] = dot(k, wr, &a[t * arow..(t + 1) * arow]);
        }
    }
    Ok(())
}

/// Adds `bias` to each row of `x` (rows of `bias.len()`), as `ggml_add` broadcasts it.
pub(crate) fn add_bias(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    }
}

/// `x += y`, elementwise.
pub(crate) fn add_assign(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// `x *= s`, elementwise (`ggml_scale`).
pub(crate) fn scale(x: &mut [f32], s: f32) {
    for v in x {
        *v *= s;
    }
}

// ---------------------------------------------------------------------------------------------
// Normalization

/// RMSNorm of each row of `x` (rows of `w.len()`) times `w`, in place
/// (`ggml_rms_norm` then `ggml_mul`; the sum of squares in f64, as ggml does).
pub(crate) fn rms_norm(x: &mut [f32], w: &[f32], eps: f32) {
    let d = w.len();
    for row in x.chunks_exact_mut(d) {
        let sum: f64 = row.iter().map(|&v| f64::from(v * v)).sum();
        let mean = (sum / d as f64) as f32;
        let s = 1.0 / (mean + eps).sqrt();
        for (v, &wi) in row.iter_mut().zip(w) {
            *v = *v * s * wi;
        }
    }
}

/// [`rms_norm`] of `x` written to `out` (same shape), `x` untouched.
pub(crate) fn rms_norm_to(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    out[..x.len()].copy_from_slice(x);
    rms_norm(&mut out[..x.len()], w, eps);
}

// ---------------------------------------------------------------------------------------------
// Rotary position embedding

/// The cos/sin table of one RoPE configuration (`ggml_rope_cache_init`, no YaRN).
#[derive(Debug, Clone, Copy)]
pub struct Rope<'a> {
    /// Rotated dimensions per head.
    pub n_rot: usize,
    /// Pairing.
    pub ty: RopeType,
    /// Base frequency.
    pub freq_base: f32,
    /// Linear position scale.
    pub freq_scale: f32,
    /// Per-frequency divisors (`rope_freqs.weight`, Llama 3 scaling; Phi-3's long/short
    /// factors), `n_rot / 2` of them.
    pub factors: Option<&'a [f32]>,
    /// Magnitude factor on cos and sin (`rope.scaling.attn_factor`, usually 1).
    pub attn_factor: f32,
}

impl Rope<'_> {
    /// Checks that this RoPE can rotate heads of `head_dim` values: an even `n_rot` within the
    /// head, and a divisor per frequency.
    pub fn check(&self, head_dim: usize) -> Result<()> {
        let n = self.n_rot;
        if !n.is_multiple_of(2) || n > head_dim {
            return Err(Error::InvalidArgument(format!(
                "RoPE of {n} dimensions for heads of {head_dim}: it must be even and fit"
            )));
        }
        if let Some(f) = self.factors
            && f.len() < n / 2
        {
            return Err(Error::InvalidArgument(format!(
                "{} RoPE frequency factors for {n} rotated dimensions (needs {})",
                f.len(),
                n / 2
            )));
        }
        Ok(())
    }

    /// Writes `n_rot` values (cos, sin interleaved) for position `p` to `out`.
    /// Ported from ggml-cpu `ggml_rope_cache_init` + `rope_yarn` with ext_factor 0, mscale 1:
    /// theta advances by repeated multiplication in f32, exactly as there.
    pub fn cache(&self, p: f32, out: &mut [f32]) {
        let theta_scale = self.freq_base.powf(-2.0 / self.n_rot as f32);
        let mut theta = p;
        for i0 in (0..self.n_rot).step_by(2) {
            let ff = self.factors.map_or(1.0, |f| f[i0 / 2]);
            let t = self.freq_scale * (theta / ff);
            // glibc's, on every target (see `trig`): the C library's differ.
            out[i0] = super::trig::cosf(t) * self.attn_factor;
            out[i0 + 1] = super::trig::sinf(t) * self.attn_factor;
            theta *= theta_scale;
        }
    }

    /// Fills `table` (`n * n_rot`) for positions `pos0 .. pos0 + n`.
    pub fn table(&self, pos0: usize, n: usize, table: &mut [f32]) {
        for t in 0..n {
            self.cache(
                (pos0 + t) as f32,
                &mut table[t * self.n_rot..(t + 1) * self.n_rot],
            );
        }
    }

    /// Rotates the first `n_rot` dimensions of each `head_dim`-wide head in `x` by `cache`
    /// (one position's table): ggml-cpu `rotate_pairs`.
    #[inline]
    pub fn apply(&self, x: &mut [f32], head_dim: usize, cache: &[f32]) {
        let n = self.n_rot;
        for head in x.chunks_exact_mut(head_dim) {
            match self.ty {
                RopeType::Normal => {
                    for i0 in (0..n).step_by(2) {
                        let (c, s) = (cache[i0], cache[i0 + 1]);
                        let (x0, x1) = (head[i0], head[i0 + 1]);
                        (head[i0], head[i0 + 1]) = rotate(x0, x1, c, s);
                    }
                }
                RopeType::Neox => {
                    let half = n / 2;
                    for i0 in (0..n).step_by(2) {
                        let (c, s) = (cache[i0], cache[i0 + 1]);
                        let ic = i0 / 2;
                        let (x0, x1) = (head[ic], head[ic + half]);
                        (head[ic], head[ic + half]) = rotate(x0, x1, c, s);
                    }
                }
            }
        }
    }
}

/// `(x0 c - x1 s, x0 s + x1 c)` with the fused multiply-adds GCC makes of ggml's `rotate_pairs`
/// (checked against llama.cpp's output bit for bit): the last bit matters once activations are
/// requantized downstream.
#[inline]
fn rotate(x0: f32, x1: f32, c: f32, s: f32) -> (f32, f32) {
    (fma(x0, c, -(x1 * s)), fma(x0, s, x1 * c))
}

/// `a * b + c` with one rounding, as llama.cpp's FMA instructions compute it; fast everywhere,
/// including wasm, which has no FMA instruction (see [`crate::quant::util::fma_f32`]).
#[inline(always)]
pub(crate) fn fma(a: f32, b: f32, c: f32) -> f32 {
    crate::quant::util::fma_f32(a, b, c)
}

/// The constants of ggml's e^x (`ggml_v_expf`) as f32 bits, shared by [`expf`] and its vector
/// forms: the rounding shift 0x1.8p23, log2(e), ln(2) in a high and a low part, and the
/// polynomial's coefficients.
mod expc {
    pub const SHIFT: u32 = 0x4b40_0000;
    pub const LOG2E: u32 = 0x3fb8_aa3b;
    pub const LN2_HI: u32 = 0x3f31_7200;
    pub const LN2_LO: u32 = 0x35bf_be8e;
    pub const C1: u32 = 0x3f7f_fff6;
    pub const C2: u32 = 0x3eff_fedb;
    pub const C3: u32 = 0x3e2a_af33;
    pub const C4: u32 = 0x3d2b_9f17;
    pub const C5: u32 = 0x3c07_2010;
}

/// e^x as ggml computes it on AVX-512 (`ggml_v_expf`, from ARM's optimized routines: max error
/// 1.45 ulp). llama.cpp's SiLU and softmax use it, so this engine does too, lane for lane.
#[inline]
pub(crate) fn expf(x: f32) -> f32 {
    let r = f32::from_bits(expc::SHIFT);
    let z = fma(x, f32::from_bits(expc::LOG2E), r); // x * log2(e) + r
    let n = z - r;
    let b = fma(
        -n,
        f32::from_bits(expc::LN2_LO),
        fma(-n, f32::from_bits(expc::LN2_HI), x),
    );
    let u = b * b;
    let p = fma(
        fma(
            fma(f32::from_bits(expc::C5), b, f32::from_bits(expc::C4)),
            u,
            fma(f32::from_bits(expc::C3), b, f32::from_bits(expc::C2)),
        ),
        u,
        fma(f32::from_bits(expc::C1), b, 1.0),
    );
    if n.abs() > 192.0 {
        return if n <= 0.0 { 0.0 } else { f32::INFINITY };
    }
    // _mm512_scalef_ps(p, n) = p * 2^n, rounded once.
    // 2^n built from its bits: n is an integer in -192..=192.
    let two_n = f64::from_bits(((n as i64 + 1023) as u64) << 52);
    (f64::from(p) * two_n) as f32
}

/// Sum of 16 lanes in the order of GCC's `_mm512_reduce_add_ps` (halves, then quarters, …).
#[inline]
pub(crate) fn reduce16(v: &[f32; 16]) -> f32 {
    let mut t8 = [0f32; 8];
    for i in 0..8 {
        t8[i] = v[8 + i] + v[i];
    }
    let t4 = [t8[4] + t8[0], t8[5] + t8[1], t8[6] + t8[2], t8[7] + t8[3]];
    let (a, b) = (t4[0] + t4[2], t4[1] + t4[3]);
    a + b
}

/// How llama.cpp's CPU backend sums an f16 dot product in an attention `mul_mat`: llamafile's
/// tinyBLAS for two or more query rows, `ggml_vec_dot_f16` for one (`llamafile_sgemm` declines
/// `n < 2`). Products of f16 values are exact in f32, so their FMAs are plain multiply-adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DotOrder {
    /// tinyBLAS on AVX-512: 16 lanes (`lane = index % 16`), then [`reduce16`].
    Tiny,
    /// `ggml_vec_dot_f16` on AVX-512: 4 accumulators of 16 lanes over steps of 64, combined
    /// `(a0 + a2) + (a1 + a3)`, [`reduce16`], then the tail (< 64 values) added in f64.
    Vec,
    /// [`DotOrder::Vec`] over a row that llama.cpp pads with zeros to a multiple of 64 (the KV
    /// cache's cells are padded to 256): no tail.
    VecPadded,
}

/// `x` rounded to the nearest f16 (ties to even), as an f32.
#[inline]
pub(crate) fn round_f16(x: f32) -> f32 {
    half::f16::from_f32(x).to_f32()
}

/// Dot product of two rows of f16 values (held in f32) in `order`. `offset` is the index in
/// llama.cpp's row of the first value given (a multiple of 16 for [`DotOrder::Tiny`], of 64 for
/// [`DotOrder::Vec`]); earlier values are zero there, so skipping them changes no sum.
#[inline(always)]
fn dot_f16(a: &[f32], b: &[f32], offset: usize, order: DotOrder) -> f32 {
    let n = a.len();
    let b = &b[..n];
    debug_assert!(offset.is_multiple_of(16));
    // Whole groups of 16 lanes, then the rest (lanes 0.. of one more group).
    let whole = n / 16 * 16;
    // A fn, not a closure: inlined into the AVX-512 build of `attention` (see there).
    #[inline(always)]
    fn mad(acc: &mut [f32; 16], x: &[f32], y: &[f32]) {
        for l in 0..x.len().min(16) {
            acc[l] += x[l] * y[l];
        }
    }
    let groups = a[..whole].chunks_exact(16).zip(b[..whole].chunks_exact(16));
    match order {
        DotOrder::Tiny => {
            let mut acc = [0f32; 16];
            for (x, y) in groups {
                mad(&mut acc, x, y);
            }
            mad(&mut acc, &a[whole..], &b[whole..]);
            reduce16(&acc)
        }
        DotOrder::Vec | DotOrder::VecPadded => {
            // Values past the last whole 64 of llama.cpp's row are the tail (none if padded).
            let np = if order == DotOrder::VecPadded {
                n
            } else {
                ((offset + n) & !63).max(offset) - offset
            };
            let mut acc = [[0f32; 16]; 4];
            let g0 = offset / 16;
            for (c, (x, y)) in groups.enumerate() {
                if 16 * c >= np {
                    break;
                }
                mad(&mut acc[(g0 + c) & 3], x, y);
            }
            if np > whole {
                mad(
                    &mut acc[(g0 + whole / 16) & 3],
                    &a[whole..np],
                    &b[whole..np],
                );
            }
            let mut x = [0f32; 16];
            for l in 0..16 {
                x[l] = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]);
            }
            let mut sum = f64::from(reduce16(&x));
            for i in np..n {
                sum += f64::from(a[i] * b[i]);
            }
            sum as f32
        }
    }
}

/// How [`attention`] computes its f16 dot products: [`dot_f16`] as written ([`Portable`]), or
/// the same sums with AVX-512 registers ([`avx512_dot::Avx512`]).
trait F16Dot: Copy {
    fn dot(self, a: &[f32], b: &[f32], offset: usize, order: DotOrder) -> f32;
}

/// [`dot_f16`], which the compiler vectorizes as it can.
#[derive(Clone, Copy)]
struct Portable;

impl F16Dot for Portable {
    #[inline(always)]
    fn dot(self, a: &[f32], b: &[f32], offset: usize, order: DotOrder) -> f32 {
        dot_f16(a, b, offset, order)
    }
}

/// [`dot_f16`] in AVX-512 registers. The portable code keeps its 16 lanes in an array that the
/// compiler spills around the masked tail, and the reduction's loads then wait on that store
/// (store forwarding fails on masked stores): most of the attention's time in a profile.
#[cfg(target_arch = "x86_64")]
mod avx512_dot {
    use super::{DotOrder, F16Dot};
    use std::arch::x86_64::*;

    /// Proof that the CPU has AVX-512F: made only by [`Avx512::new`]'s caller, which checked.
    #[derive(Clone, Copy)]
    pub(super) struct Avx512(());

    impl Avx512 {
        /// # Safety
        /// The CPU must support AVX-512F (and the caller be compiled with it, for inlining).
        pub(super) unsafe fn new() -> Avx512 {
            Avx512(())
        }
    }

    impl F16Dot for Avx512 {
        #[inline(always)]
        fn dot(self, a: &[f32], b: &[f32], offset: usize, order: DotOrder) -> f32 {
            // SAFETY: an `Avx512` exists only where the CPU has AVX-512F.
            unsafe { dot(a, b, offset, order) }
        }
    }

    /// `super::reduce16` (GCC's `_mm512_reduce_add_ps`): halves, quarters, then
    /// `(t[0] + t[2]) + (t[1] + t[3])`.
    #[target_feature(enable = "avx2,fma,avx512f")]
    #[inline]
    fn reduce16(v: __m512) -> f32 {
        let lo = _mm512_castps512_ps256(v);
        let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
        let t8 = _mm256_add_ps(hi, lo);
        let t4 = _mm_add_ps(_mm256_extractf128_ps::<1>(t8), _mm256_castps256_ps128(t8));
        let t2 = _mm_add_ps(t4, _mm_movehl_ps(t4, t4));
        _mm_cvtss_f32(_mm_add_ss(t2, _mm_movehdup_ps(t2)))
    }

    /// `super::dot_f16`, lane for lane. Products of f16 values are exact in f32, so a fused
    /// multiply-add rounds once, as the portable multiply-then-add does; lanes past a tail are
    /// left alone (`mask3`), as there.
    #[target_feature(enable = "avx2,fma,avx512f")]
    #[inline]
    fn dot(a: &[f32], b: &[f32], offset: usize, order: DotOrder) -> f32 {
        let n = a.len();
        let b = &b[..n];
        let whole = n / 16 * 16;
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        // SAFETY (every load below): `i + 16 <= whole <= n`, the length of both slices; masked
        // loads touch only the `len` lanes of their mask, `i + len <= n`.
        // Macros, not closures: a closure would not get this function's target features.
        macro_rules! group {
            ($i:expr) => {
                unsafe { (_mm512_loadu_ps(pa.add($i)), _mm512_loadu_ps(pb.add($i))) }
            };
        }
        let tail_mask = |len: usize| ((1u32 << len) - 1) as __mmask16;
        match order {
            DotOrder::Tiny => {
                let mut acc = _mm512_setzero_ps();
                let mut i = 0;
                while i < whole {
                    let (x, y) = group!(i);
                    acc = _mm512_fmadd_ps(x, y, acc);
                    i += 16;
                }
                if whole < n {
                    let m = tail_mask(n - whole);
                    // SAFETY: see above.
                    let (x, y) = unsafe {
                        (
                            _mm512_maskz_loadu_ps(m, pa.add(whole)),
                            _mm512_maskz_loadu_ps(m, pb.add(whole)),
                        )
                    };
                    acc = _mm512_mask3_fmadd_ps(x, y, acc, m);
                }
                reduce16(acc)
            }
            DotOrder::Vec | DotOrder::VecPadded => {
                let np = if order == DotOrder::VecPadded {
                    n
                } else {
                    ((offset + n) & !63).max(offset) - offset
                };
                let mut acc = [_mm512_setzero_ps(); 4];
                let g0 = offset / 16;
                let mut i = 0;
                while i < whole && i < np {
                    let (x, y) = group!(i);
                    let k = (g0 + i / 16) & 3;
                    acc[k] = _mm512_fmadd_ps(x, y, acc[k]);
                    i += 16;
                }
                if np > whole {
                    let m = tail_mask(np - whole);
                    // SAFETY: see above (`np <= n`).
                    let (x, y) = unsafe {
                        (
                            _mm512_maskz_loadu_ps(m, pa.add(whole)),
                            _mm512_maskz_loadu_ps(m, pb.add(whole)),
                        )
                    };
                    let k = (g0 + whole / 16) & 3;
                    acc[k] = _mm512_mask3_fmadd_ps(x, y, acc[k], m);
                }
                let x = _mm512_add_ps(_mm512_add_ps(acc[0], acc[2]), _mm512_add_ps(acc[1], acc[3]));
                let mut sum = f64::from(reduce16(x));
                for i in np..n {
                    sum += f64::from(a[i] * b[i]);
                }
                sum as f32
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// Bit for bit [`super::super::dot_f16`] in every order, offset and length, on f16
        /// values with signed zeros, subnormals and extremes among them.
        #[test]
        fn avx512_dot_is_dot_f16() {
            if !std::arch::is_x86_feature_detected!("avx512f") {
                return;
            }
            let mut seed = 0x853c_49e6_748f_ea9bu64;
            let mut rnd = move || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let v = match seed % 23 {
                    0 => -0.0,
                    1 => 0.0,
                    2 => 6e-8,
                    3 => -65504.0,
                    4 => 65504.0,
                    _ => ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 8.0,
                };
                super::super::round_f16(v)
            };
            for n in [
                0, 1, 5, 15, 16, 17, 33, 63, 64, 65, 100, 127, 128, 200, 256, 300,
            ] {
                let a: Vec<f32> = (0..n).map(|_| rnd()).collect();
                let b: Vec<f32> = (0..n).map(|_| rnd()).collect();
                for order in [DotOrder::Tiny, DotOrder::Vec, DotOrder::VecPadded] {
                    for offset in [0, 16, 48, 64, 128] {
                        if order == DotOrder::Tiny && offset != 0 {
                            continue;
                        }
                        let want = super::super::dot_f16(&a, &b, offset, order);
                        // SAFETY: checked above.
                        let got = unsafe { dot(&a, &b, offset, order) };
                        assert_eq!(
                            got.to_bits(),
                            want.to_bits(),
                            "{order:?} n={n} offset={offset}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Activations

/// `x = silu(x) * g` (`ggml_swiglu_split`; `ggml_v_silu` = x / (1 + e^-x) with ggml's e^x).
pub(crate) fn swiglu(x: &mut [f32], g: &[f32]) {
    let n = x.len().min(g.len());
    #[cfg(target_arch = "x86_64")]
    let i = if crate::quant::Backend::best() == crate::quant::Backend::Avx2 {
        // SAFETY: AVX2 is the backend in use only where the CPU has AVX2 and FMA.
        unsafe { avx2::swiglu(&mut x[..n], &g[..n]) }
    } else {
        0
    };
    #[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
    let i = relaxed::swiglu(&mut x[..n], &g[..n]);
    #[cfg(not(any(
        target_arch = "x86_64",
        all(target_arch = "wasm32", target_feature = "relaxed-simd")
    )))]
    let i = 0;
    for (a, &b) in x[i..n].iter_mut().zip(&g[i..n]) {
        *a = *a / (1.0 + expf(0.0 - *a)) * b;
    }
}

/// `v = e^(v - m)` (ggml's e^x, see [`expf`]) for every value.
pub(crate) fn exp_sub(v: &mut [f32], m: f32) {
    #[cfg(target_arch = "x86_64")]
    let i = if crate::quant::Backend::best() == crate::quant::Backend::Avx2 {
        // SAFETY: AVX2 is the backend in use only where the CPU has AVX2 and FMA.
        unsafe { avx2::exp_sub(v, m) }
    } else {
        0
    };
    #[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
    let i = relaxed::exp_sub(v, m);
    #[cfg(not(any(
        target_arch = "x86_64",
        all(target_arch = "wasm32", target_feature = "relaxed-simd")
    )))]
    let i = 0;
    for x in &mut v[i..] {
        *x = expf(*x - m);
    }
}

/// Inputs for the vector e^x tests: the whole useful range and its edges, padded to a multiple
/// of `lanes`.
#[cfg(all(
    test,
    any(
        target_arch = "x86_64",
        all(target_arch = "wasm32", target_feature = "relaxed-simd")
    )
))]
fn exp_cases(lanes: usize) -> Vec<f32> {
    let mut xs: Vec<f32> = (0..200_000).map(|i| -104.0 + i as f32 * 0.0009).collect();
    xs.extend([
        0.0,
        -0.0,
        88.7,
        88.73,
        89.0,
        -87.3,
        -103.9,
        -150.0,
        1e10,
        -1e10,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::MIN_POSITIVE,
        1e-30,
    ]);
    while !xs.len().is_multiple_of(lanes) {
        xs.push(1.0);
    }
    xs
}

/// `got[i]` is the scalar [`expf`] of `xs[i]`, bit for bit (any NaN for a NaN).
#[cfg(all(
    test,
    any(
        target_arch = "x86_64",
        all(target_arch = "wasm32", target_feature = "relaxed-simd")
    )
))]
fn assert_expf(xs: &[f32], got: &[f32]) {
    for (x, got) in xs.iter().zip(got) {
        let want = expf(*x);
        assert!(
            got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
            "e^{x}: {got} vs {want}"
        );
    }
}

/// [`expf`], [`swiglu`] and [`exp_sub`] four lanes at a time in the relaxed-SIMD guest: the same
/// operations per lane as the scalar code, whose FMAs are the same `f32x4.relaxed_madd` there
/// (fused wherever the host runs it, see `quant::wasm`), so the same bits. The portable build
/// keeps the scalar loop: its FMAs are exact emulations, cheaper one at a time.
#[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
mod relaxed {
    use super::expc;
    use core::arch::wasm32::*;

    /// Four lanes of [`super::expf`].
    #[inline(always)]
    fn expf4(x: v128) -> v128 {
        let c = |b: u32| f32x4_splat(f32::from_bits(b));
        let madd = f32x4_relaxed_madd;
        let r = c(expc::SHIFT);
        let z = madd(x, c(expc::LOG2E), r);
        let n = f32x4_sub(z, r);
        let neg_n = f32x4_neg(n);
        let b = madd(neg_n, c(expc::LN2_LO), madd(neg_n, c(expc::LN2_HI), x));
        let u = f32x4_mul(b, b);
        let p = madd(
            madd(
                madd(c(expc::C5), b, c(expc::C4)),
                u,
                madd(c(expc::C3), b, c(expc::C2)),
            ),
            u,
            madd(c(expc::C1), b, f32x4_splat(1.0)),
        );
        // p · 2^n rounded once, through f64 (n is integral; |n| > 192 is replaced below).
        let ni = i32x4_trunc_sat_f32x4(n);
        let scale = |p: v128, ni: v128| {
            let e = i64x2_shl(i64x2_add(ni, i64x2_splat(1023)), 52);
            f32x4_demote_f64x2_zero(f64x2_mul(p, e))
        };
        let lo = scale(f64x2_promote_low_f32x4(p), i64x2_extend_low_i32x4(ni));
        let hi = scale(
            f64x2_promote_low_f32x4(i32x4_shuffle::<2, 3, 0, 1>(p, p)),
            i64x2_extend_high_i32x4(ni),
        );
        let res = i32x4_shuffle::<0, 1, 4, 5>(lo, hi);
        let big = f32x4_gt(f32x4_abs(n), f32x4_splat(192.0));
        let limit = v128_andnot(f32x4_splat(f32::INFINITY), f32x4_le(n, f32x4_splat(0.0)));
        v128_bitselect(limit, res, big)
    }

    /// [`super::swiglu`] over whole groups of four; returns how many values it did.
    pub(super) fn swiglu(x: &mut [f32], g: &[f32]) -> usize {
        let n = x.len().min(g.len()) & !3;
        for i in (0..n).step_by(4) {
            // SAFETY: i + 4 <= n <= both lengths.
            unsafe {
                let a = v128_load(x.as_ptr().add(i).cast());
                let b = v128_load(g.as_ptr().add(i).cast());
                let e = expf4(f32x4_sub(f32x4_splat(0.0), a));
                let s = f32x4_div(a, f32x4_add(f32x4_splat(1.0), e));
                v128_store(x.as_mut_ptr().add(i).cast(), f32x4_mul(s, b));
            }
        }
        n
    }

    /// [`super::exp_sub`] over whole groups of four; returns how many values it did.
    pub(super) fn exp_sub(v: &mut [f32], m: f32) -> usize {
        let n = v.len() & !3;
        let mv = f32x4_splat(m);
        for i in (0..n).step_by(4) {
            // SAFETY: i + 4 <= n <= v.len().
            unsafe {
                let x = v128_load(v.as_ptr().add(i).cast());
                v128_store(v.as_mut_ptr().add(i).cast(), expf4(f32x4_sub(x, mv)));
            }
        }
        n
    }

    #[cfg(test)]
    mod tests {
        /// Lane for lane the scalar e^x (the same relaxed madd per step), over the useful range
        /// and its edges.
        #[test]
        fn expf4_is_expf() {
            let xs = super::super::exp_cases(4);
            let mut v = xs.clone();
            assert_eq!(super::exp_sub(&mut v, 0.0), xs.len());
            super::super::assert_expf(&xs, &v);
        }
    }
}

/// [`expf`], [`swiglu`] and [`exp_sub`] eight lanes at a time: the same operations per lane
/// (one rounding per FMA, `p·2^n` rounded once through f64), so the same bits.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::expc;
    use std::arch::x86_64::*;

    /// [`super::expf`] of eight lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn expf8(x: __m256) -> __m256 {
        let c = |b: u32| _mm256_set1_ps(f32::from_bits(b));
        let r = c(expc::SHIFT);
        let z = _mm256_fmadd_ps(x, c(expc::LOG2E), r);
        let n = _mm256_sub_ps(z, r);
        let b = _mm256_fnmadd_ps(n, c(expc::LN2_LO), _mm256_fnmadd_ps(n, c(expc::LN2_HI), x));
        let u = _mm256_mul_ps(b, b);
        let p = _mm256_fmadd_ps(
            _mm256_fmadd_ps(
                _mm256_fmadd_ps(c(expc::C5), b, c(expc::C4)),
                u,
                _mm256_fmadd_ps(c(expc::C3), b, c(expc::C2)),
            ),
            u,
            _mm256_fmadd_ps(c(expc::C1), b, _mm256_set1_ps(1.0)),
        );
        // p · 2^n, rounded once: in f64, 2^n from its bits (n integral; lanes with |n| > 192
        // are replaced below, NaN lanes stay NaN through p).
        let ni = _mm256_cvtps_epi32(n);
        let scale = |p: __m128, ni: __m128i| {
            let e = _mm256_slli_epi64::<52>(_mm256_add_epi64(
                _mm256_cvtepi32_epi64(ni),
                _mm256_set1_epi64x(1023),
            ));
            _mm256_cvtpd_ps(_mm256_mul_pd(_mm256_cvtps_pd(p), _mm256_castsi256_pd(e)))
        };
        let lo = scale(_mm256_castps256_ps128(p), _mm256_castsi256_si128(ni));
        let hi = scale(
            _mm256_extractf128_ps::<1>(p),
            _mm256_extracti128_si256::<1>(ni),
        );
        let res = _mm256_set_m128(hi, lo);
        let abs_n = _mm256_andnot_ps(_mm256_set1_ps(-0.0), n);
        let big = _mm256_cmp_ps::<_CMP_GT_OQ>(abs_n, _mm256_set1_ps(192.0));
        let neg = _mm256_cmp_ps::<_CMP_LE_OQ>(n, _mm256_setzero_ps());
        let limit = _mm256_andnot_ps(neg, _mm256_set1_ps(f32::INFINITY));
        _mm256_blendv_ps(res, limit, big)
    }

    /// [`super::swiglu`] over whole groups of eight; returns how many values it did.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn swiglu(x: &mut [f32], g: &[f32]) -> usize {
        let n = x.len().min(g.len()) & !7;
        for i in (0..n).step_by(8) {
            // SAFETY: i + 8 <= n <= both lengths.
            unsafe {
                let a = _mm256_loadu_ps(x.as_ptr().add(i));
                let b = _mm256_loadu_ps(g.as_ptr().add(i));
                let e = expf8(_mm256_sub_ps(_mm256_setzero_ps(), a));
                let s = _mm256_div_ps(a, _mm256_add_ps(_mm256_set1_ps(1.0), e));
                _mm256_storeu_ps(x.as_mut_ptr().add(i), _mm256_mul_ps(s, b));
            }
        }
        n
    }

    /// [`super::exp_sub`] over whole groups of eight; returns how many values it did.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn exp_sub(v: &mut [f32], m: f32) -> usize {
        let n = v.len() & !7;
        let mv = _mm256_set1_ps(m);
        for i in (0..n).step_by(8) {
            // SAFETY: i + 8 <= n <= v.len().
            unsafe {
                let x = _mm256_loadu_ps(v.as_ptr().add(i));
                _mm256_storeu_ps(v.as_mut_ptr().add(i), expf8(_mm256_sub_ps(x, mv)));
            }
        }
        n
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// Lane for lane the scalar e^x, bit for bit, over the whole useful range and its edges.
        #[test]
        fn expf8_is_expf() {
            if crate::quant::Backend::best() != crate::quant::Backend::Avx2 {
                return;
            }
            let xs = super::super::exp_cases(8);
            let mut v = xs.clone();
            // SAFETY: checked above that the CPU has AVX2 and FMA.
            let done = unsafe { exp_sub(&mut v, 0.0) };
            assert_eq!(done, xs.len());
            super::super::assert_expf(&xs, &v);
        }
    }
}

/// ggml's GELU (tanh approximation) table over every f16 input (`ggml_table_gelu_f16`).
fn gelu_table() -> &'static [u16] {
    static TABLE: OnceLock<Vec<u16>> = OnceLock::new();
    TABLE.get_or_init(|| {
        const GELU_COEF_A: f32 = 0.044715;
        const SQRT_2_OVER_PI: f32 = 0.797_884_6;
        (0..=u16::MAX)
            .map(|i| {
                let x = half::f16::from_bits(i).to_f32();
                // 1 + A*x*x is fused, as GCC compiles ggml_gelu_f32.
                let inner = SQRT_2_OVER_PI * x * fma(GELU_COEF_A * x, x, 1.0);
                let y = 0.5 * x * (1.0 + inner.tanh());
                half::f16::from_f32(y).to_bits()
            })
            .collect()
    })
}

/// `x = gelu(x) * g` as ggml-cpu computes it with `GGML_GELU_FP16` (`ggml_vec_geglu_f32`):
/// the input rounded to f16, looked up in the f16 GELU table, saturating outside ±10.
pub(crate) fn geglu(x: &mut [f32], g: &[f32]) {
    let table = gelu_table();
    let mut buf = [half::f16::ZERO; 64];
    for (xs, gs) in x.chunks_mut(64).zip(g.chunks(64)) {
        let n = xs.len().min(gs.len());
        // The table indices: every input rounded to f16 at once (see `round_f16_into`).
        buf[..n].convert_from_f32_slice(&xs[..n]);
        for ((a, &b), h) in xs.iter_mut().zip(gs).zip(&buf[..n]) {
            let v = *a;
            *a = if v <= -10.0 {
                0.0
            } else if v >= 10.0 {
                v * b
            } else {
                half::f16::from_bits(table[usize::from(h.to_bits())]).to_f32() * b
            };
        }
    }
}

/// `x = cap * tanh(x / cap)` (soft-capping as three ggml ops: scale, tanh, scale).
pub(crate) fn softcap(x: &mut [f32], cap: f32) {
    for v in x {
        *v = (*v * (1.0 / cap)).tanh() * cap;
    }
}

// ---------------------------------------------------------------------------------------------
// Attention

/// Shape and scaling of one attention layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttnCfg {
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim_k: usize,
    pub head_dim_v: usize,
    /// Applied to q·k after soft-capping, inside the softmax (`ggml_soft_max_ext`'s scale).
    pub kq_scale: f32,
    /// Soft-cap of q·k, applied before `kq_scale`.
    pub softcap: Option<f32>,
    /// Sliding window (`LLAMA_SWA_TYPE_STANDARD`): key at `p0` is visible from `p1` iff
    /// `p1 - p0 < window`; 0 for full causal attention.
    pub window: usize,
    /// Compute as llama.cpp's flash-attention kernels do ([`attention_flash`]).
    pub flash: bool,
}

/// Per-session (or per-thread) buffers for [`attention`].
pub struct AttnScratch {
    /// One query head rounded to f16.
    q16: Vec<f32>,
    scores: Vec<f32>,
    /// Attention weights rounded to f16.
    p16: Vec<f32>,
}

impl AttnScratch {
    pub fn new(n_ctx: usize, head_dim_k: usize, head_dim_v: usize) -> Result<AttnScratch> {
        Ok(AttnScratch {
            q16: alloc(head_dim_k, "query")?,
            // Also a flash-attention key tile, or the f16 running sum of one head.
            scores: alloc(n_ctx.max(FA_TILE_KV).max(head_dim_v), "attention scores")?,
            p16: alloc(n_ctx, "attention weights")?,
        })
    }

    /// Whether these buffers are large enough for a cache of `n_ctx` positions and these heads.
    pub fn fits(&self, n_ctx: usize, head_dim_k: usize, head_dim_v: usize) -> bool {
        self.q16.len() >= head_dim_k
            && self.p16.len() >= n_ctx
            && self.scores.len() >= n_ctx.max(FA_TILE_KV).max(head_dim_v)
    }
}

/// Which (token, head) pairs of a batch one [`attention`] call computes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttnPart {
    pub tokens: Range<usize>,
    pub heads: Range<usize>,
}

impl AttnPart {
    /// Every pair of a batch of `n` tokens of `n_head` heads.
    pub fn all(n: usize, n_head: usize) -> AttnPart {
        AttnPart {
            tokens: 0..n,
            heads: 0..n_head,
        }
    }
}

/// Causal multi-head attention of the `n` queries of a batch at positions `pos0 ..` over the
/// cache `kv` (which already holds their own keys and values), for the tokens and query heads
/// of `part`: `q` is `[n, n_head * head_dim_k]`, `out` is
/// `[part.tokens.len(), part.heads.len() * head_dim_v]`. Every (token, head) is computed on its
/// own, with the kernel the whole batch's size selects, so splitting a batch among threads
/// does not change a bit.
///
/// The non-flash path of llama.cpp's `build_attn_mha` as its CPU backend computes it:
/// `kq = mul_mat(k, q)` with the f16 cache (q rounded to f16; summed in [`DotOrder`]),
/// soft-cap, `soft_max_ext` with the scale and the causal/window mask (ggml's e^x and sum order),
/// then `kqv = mul_mat(v, kq)` with the transposed f16 V cache (weights rounded to f16). Masked
/// keys weigh exactly 0 there, so only the visible range is visited here, from the lane group it
/// starts in.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention(
    cfg: &AttnCfg,
    kv: &LayerKv<'_>,
    q: &[f32],
    pos0: usize,
    n: usize,
    part: &AttnPart,
    s: &mut AttnScratch,
    out: &mut [f32],
) -> Result<()> {
    #[cfg(target_arch = "x86_64")]
    if crate::quant::Backend::best() == crate::quant::Backend::Avx2
        && std::arch::is_x86_feature_detected!("avx512f")
    {
        // SAFETY: AVX2 is the backend in use only where the CPU has AVX2 and FMA; AVX-512F was
        // checked just above.
        return unsafe { attention_avx512(cfg, kv, q, pos0, n, part, s, out) };
    }
    attention_impl(Portable, cfg, kv, q, pos0, n, part, s, out)
}

/// [`attention`] compiled for AVX-512: the same code (Rust never contracts a multiply and an
/// add into an FMA, so the same bits), its f16 dot products in registers ([`avx512_dot`]).
///
/// # Safety
/// The CPU must support AVX2, FMA and AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn attention_avx512(
    cfg: &AttnCfg,
    kv: &LayerKv<'_>,
    q: &[f32],
    pos0: usize,
    n: usize,
    part: &AttnPart,
    s: &mut AttnScratch,
    out: &mut [f32],
) -> Result<()> {
    // SAFETY: this function runs only where the CPU has AVX-512F.
    let dot = unsafe { avx512_dot::Avx512::new() };
    attention_impl(dot, cfg, kv, q, pos0, n, part, s, out)
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn attention_impl<D: F16Dot>(
    dot: D,
    cfg: &AttnCfg,
    kv: &LayerKv<'_>,
    q: &[f32],
    pos0: usize,
    n: usize,
    part: &AttnPart,
    s: &mut AttnScratch,
    out: &mut [f32],
) -> Result<()> {
    if cfg.flash {
        attention_flash(dot, cfg, kv, q, pos0, n, part, s, out)
    } else {
        attention_plain(dot, cfg, kv, q, pos0, n, part, s, out)
    }
}

/// [`attention`] without flash attention.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn attention_plain<D: F16Dot>(
    dot: D,
    cfg: &AttnCfg,
    kv: &LayerKv<'_>,
    q: &[f32],
    pos0: usize,
    n: usize,
    part: &AttnPart,
    s: &mut AttnScratch,
    out: &mut [f32],
) -> Result<()> {
    let (hk, hv) = (cfg.head_dim_k, cfg.head_dim_v);
    let group = cfg.n_head / cfg.n_head_kv;
    let n_out = part.heads.len();
    let order = if n == 1 {
        DotOrder::Vec
    } else {
        DotOrder::Tiny
    };
    for t in part.tokens.clone() {
        let p1 = pos0 + t;
        let start = if cfg.window > 0 {
            (p1 + 1).saturating_sub(cfg.window)
        } else {
            0
        };
        // Visible keys are start..=p1; sums run over whole lane groups from `first`.
        let first = start - start % 64;
        let n_kv = p1 + 1 - first;
        for h in part.heads.clone() {
            let g = h / group;
            let qh = &q[(t * cfg.n_head + h) * hk..][..hk];
            round_f16_into(qh, &mut s.q16[..hk]);

            // scores = softcap(K·q) * scale, masked keys -inf
            let scores = &mut s.scores[..n_kv];
            for (j, sc) in scores.iter_mut().enumerate() {
                let p0 = first + j;
                if p0 < start {
                    *sc = f32::NEG_INFINITY;
                    continue;
                }
                let mut v = dot.dot(kv.k_row(p0, g), &s.q16[..hk], 0, order);
                if let Some(cap) = cfg.softcap {
                    v = (v * (1.0 / cap)).tanh() * cap;
                }
                *sc = v * cfg.kq_scale;
            }

            // softmax (ggml_vec_soft_max_f32: e^x per lane, f32 sums of 16, f64 total)
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f64;
            exp_sub(scores, max);
            for chunk in scores.chunks(16) {
                let mut lanes = [0f32; 16];
                lanes[..chunk.len()].copy_from_slice(chunk);
                sum += f64::from(reduce16(&lanes));
            }
            let inv = (1.0 / sum) as f32;
            for v in scores.iter_mut() {
                *v *= inv;
            }
            round_f16_into(scores, &mut s.p16[..n_kv]);

            // out = Σ_j p_j · V_j, one output dimension at a time over the transposed cache
            let o = &mut out[((t - part.tokens.start) * n_out + h - part.heads.start) * hv..][..hv];
            for (d, od) in o.iter_mut().enumerate() {
                *od = dot.dot(
                    kv.v_row(g, d, first, p1 + 1),
                    &s.p16[..n_kv],
                    first,
                    if order == DotOrder::Vec {
                        DotOrder::VecPadded
                    } else {
                        order
                    },
                );
            }
        }
    }
    Ok(())
}

/// llama.cpp's flash-attention tile sizes (`GGML_FA_TILE_Q`, `GGML_FA_TILE_KV`).
const FA_TILE_Q: usize = 64;
const FA_TILE_KV: usize = 64;

/// [`attention`] as llama.cpp computes it with flash attention on (`ggml_flash_attn_ext` on the
/// CPU, the default of llama-cli, llama-server and llama-perplexity): batches of 64 or more
/// queries take the tiled kernel (`ggml_compute_forward_flash_attn_ext_tiled`: f32 queries, f32
/// products, an online softmax over tiles of 64 keys), smaller ones the one-query kernel
/// (`..._f16_one_chunk`: f16 queries, an online softmax per key, values accumulated in f16).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn attention_flash<D: F16Dot>(
    dot: D,
    cfg: &AttnCfg,
    kv: &LayerKv<'_>,
    q: &[f32],
    pos0: usize,
    n: usize,
    part: &AttnPart,
    s: &mut AttnScratch,
    out: &mut [f32],
) -> Result<()> {
    let (hk, hv) = (cfg.head_dim_k, cfg.head_dim_v);
    let group = cfg.n_head / cfg.n_head_kv;
    let n_out = part.heads.len();
    // The op's scale, with the soft-cap folded in as ggml does.
    let (scale, cap) = match cfg.softcap {
        Some(c) => (cfg.kq_scale / c, c),
        None => (cfg.kq_scale, 0.0),
    };
    let tiled = n >= FA_TILE_Q;
    for t in part.tokens.clone() {
        let p1 = pos0 + t;
        let start = if cfg.window > 0 {
            (p1 + 1).saturating_sub(cfg.window)
        } else {
            0
        };
        for h in part.heads.clone() {
            let g = h / group;
            let qh = &q[(t * cfg.n_head + h) * hk..][..hk];
            let o = &mut out[((t - part.tokens.start) * n_out + h - part.heads.start) * hv..][..hv];
            if tiled {
                // Online softmax over tiles of 64 keys; VKQ accumulates in f32 (`o`).
                let (mut m, mut sum) = (f32::NEG_INFINITY, 0f32);
                o.fill(0.0);
                let kq = &mut s.scores[..FA_TILE_KV];
                let mut tile = start - start % FA_TILE_KV;
                while tile <= p1 {
                    // kq = (q · k) * scale, soft-capped; masked keys -inf
                    for (j, v) in kq.iter_mut().enumerate() {
                        let p = tile + j;
                        *v = if p < start || p > p1 {
                            f32::NEG_INFINITY
                        } else {
                            let k = kv.k_row(p, g);
                            let mut acc = 0f32;
                            for (d, &x) in qh.iter().enumerate() {
                                acc = fma(k[d], x, acc);
                            }
                            let mut v = acc * scale;
                            if cap != 0.0 {
                                v = v.tanh() * cap;
                            }
                            v
                        };
                    }
                    let tile_max = kq.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let m_new = m.max(tile_max);
                    if m_new > m {
                        let ms = (m - m_new).exp();
                        scale_in_place(o, ms);
                        sum *= ms;
                    }
                    m = m_new;
                    // p = e^(kq - m) per lane group; S += their f64 sum
                    let mut tile_sum = 0f64;
                    exp_sub(kq, m);
                    for chunk in kq.chunks(16) {
                        let mut lanes = [0f32; 16];
                        lanes[..chunk.len()].copy_from_slice(chunk);
                        tile_sum += f64::from(reduce16(&lanes));
                    }
                    sum = (f64::from(sum) + tile_sum) as f32;
                    // VKQ += p · V
                    for (j, &p) in kq.iter().enumerate() {
                        let pos = tile + j;
                        if pos < start || pos > p1 {
                            continue; // p == 0: fma(v, 0, acc) == acc
                        }
                        for (d, od) in o.iter_mut().enumerate() {
                            *od = fma(kv.v_at(g, d, pos), p, *od);
                        }
                    }
                    tile += FA_TILE_KV;
                }
                let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
                scale_in_place(o, inv);
            } else {
                // One key at a time; q and the running VKQ in f16.
                round_f16_into(qh, &mut s.q16[..hk]);
                let vkq = &mut s.scores[..hv];
                vkq.fill(0.0);
                let (mut m, mut sum) = (f32::NEG_INFINITY, 0f32);
                for p in start..=p1 {
                    let mut v = dot.dot(kv.k_row(p, g), &s.q16[..hk], 0, DotOrder::Vec) * scale;
                    if cap != 0.0 {
                        v = cap * v.tanh();
                    }
                    let (mut ms, mut vs) = (1f32, 1f32);
                    if v > m {
                        let m_old = m;
                        m = v;
                        ms = (m_old - m).exp();
                        for y in vkq.iter_mut() {
                            *y = round_f16(*y * ms);
                        }
                    } else {
                        vs = (v - m).exp();
                    }
                    for (d, y) in vkq.iter_mut().enumerate() {
                        *y = round_f16(fma(kv.v_at(g, d, p), vs, *y));
                    }
                    sum = fma(sum, ms, vs); // `S = S*ms + vs`, contracted by GCC
                }
                let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
                for (od, &y) in o.iter_mut().zip(vkq.iter()) {
                    *od = y * inv;
                }
            }
        }
    }
    Ok(())
}

/// `x *= s` (`ggml_vec_scale_f32`).
fn scale_in_place(x: &mut [f32], s: f32) {
    for v in x {
        *v *= s;
    }
}

/// `dst = src` rounded to f16 (the conversion ggml makes before f16 dot products).
pub(crate) fn round_f16_into(src: &[f32], dst: &mut [f32]) {
    // Through a block of f16s: `half` converts slices eight at a time with F16C where the CPU
    // has it (detected at run time), the same rounding as one at a time.
    let mut buf = [half::f16::ZERO; 64];
    for (d, s) in dst.chunks_mut(64).zip(src.chunks(64)) {
        let n = d.len().min(s.len());
        buf[..n].convert_from_f32_slice(&s[..n]);
        buf[..n].convert_to_f32_slice(&mut d[..n]);
    }
}
