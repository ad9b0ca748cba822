//! The host CPU backend: weight matrices read in place from the map of the model file, products
//! computed by a persistent thread pool ([`super::pool`]) with the engine's native kernels (AVX2 where the CPU has
//! it, chosen at run time; the scalar reference elsewhere, e.g. aarch64 until NEON lands).
//!
//! A session's KV cache lives here too ([`CpuKv`]): its attention runs on the pool, split by
//! heads and tokens.
//!
//! Each product quantizes the activations once (to the weight type's dot-product type, as
//! llama.cpp does), then splits the weight rows into chunks that the pool's threads take in turn.
//! A row's result does not depend on which thread computes it or how the rows are chunked, so the
//! output equals the guest's own kernels and llama.cpp's x86 CPU backend bit for bit.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use chord_engine::model::{
    AttnCfg, AttnPart, AttnScratch, Device, DeviceKv, DeviceMatrix, DeviceProgram, DeviceRun,
    KvCache, KvShape, Matrix, Rope, Runner, matmul_rows,
};
use chord_engine::quant::{self, GgmlType};
use chord_engine::{Error, Result};

use super::pool::Pool;

/// Rows per chunk are a multiple of this (the repacked Q4_K kernel's row group).
const ROW_ALIGN: usize = 8;
/// Chunks per thread: small enough chunks that a thread slowed by the OS does not hold up a
/// product, large enough that taking one costs little.
const CHUNKS_PER_THREAD: usize = 4;

/// Activation values below which one thread quantizes them alone (a decode step's 576–2048):
/// waking the pool costs more than it saves.
const QUANT_SPLIT_MIN: usize = 1 << 14;

/// Bytes a matrix is read from: a map of the model file.
pub type SharedBytes = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// A pool of threads that compute matrix products.
pub struct CpuBackend {
    pool: Pool,
    threads: usize,
}

impl std::fmt::Debug for CpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CpuBackend({} threads)", self.threads)
    }
}

impl CpuBackend {
    /// A backend with `threads` threads (0: one per available core).
    pub fn new(threads: usize) -> Result<Arc<CpuBackend>> {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
        let pool = Pool::new(threads)
            .map_err(|e| Error::Unsupported(format!("cannot start {threads} CPU threads: {e}")))?;
        Ok(Arc::new(CpuBackend { pool, threads }))
    }

    /// Threads in the pool.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// A description for `devices`, e.g. "cpu (2 threads, avx2)".
    pub fn name(&self) -> String {
        format!(
            "cpu ({} thread{}, {})",
            self.threads,
            if self.threads == 1 { "" } else { "s" },
            format!("{:?}", quant::Backend::best()).to_lowercase()
        )
    }

    /// The matrix `name` of `n_rows` rows of `n_cols` values of `ty` at `offset` of `bytes`.
    pub fn matrix(
        self: &Arc<Self>,
        name: &str,
        ty: GgmlType,
        n_cols: usize,
        n_rows: usize,
        bytes: SharedBytes,
        offset: u64,
    ) -> Result<CpuMatrix> {
        Ok(CpuMatrix {
            w: Matrix::shared(name, ty, n_cols, n_rows, bytes, offset)?,
            backend: self.clone(),
        })
    }

    /// Runs `item(i)` for every `i < n_items` on all threads of the pool (this one too), each
    /// taking the next item until none is left, which balances threads the OS slows down.
    /// Returns the first error an item gave.
    fn for_each(&self, n_items: usize, item: &(dyn Fn(usize) -> Result<()> + Sync)) -> Result<()> {
        let next = AtomicUsize::new(0);
        let failed = std::sync::Mutex::new(None);
        let work = || {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n_items {
                    break;
                }
                if let Err(e) = item(i)
                    && let Ok(mut f) = failed.lock()
                {
                    f.get_or_insert(e);
                }
            }
        };
        let finished = self.pool.run(&work);
        match failed.into_inner() {
            Ok(Some(e)) => Err(e),
            Ok(None) if finished => Ok(()),
            _ => Err(Error::InvalidArgument("a CPU thread panicked".into())),
        }
    }

    /// A zeroed KV cache of `shape` whose attention runs on this backend's threads.
    pub fn kv_cache(self: &Arc<Self>, shape: &KvShape) -> Result<CpuKv> {
        Ok(CpuKv {
            cache: KvCache::new(shape)?,
            backend: self.clone(),
        })
    }

    /// This backend as an engine [`Device`] over one model file's bytes: the native path, which
    /// `chord` uses to measure what the component's calls cost.
    pub fn device(self: &Arc<Self>, bytes: SharedBytes) -> Arc<dyn Device> {
        Arc::new(CpuDevice {
            backend: self.clone(),
            bytes,
        })
    }
}

/// [`CpuBackend`] over the bytes of one model file.
struct CpuDevice {
    backend: Arc<CpuBackend>,
    bytes: SharedBytes,
}

impl Device for CpuDevice {
    fn upload(
        &self,
        name: &str,
        ty: GgmlType,
        n_cols: usize,
        n_rows: usize,
        offset: u64,
    ) -> Result<Box<dyn DeviceMatrix>> {
        Ok(Box::new(self.backend.matrix(
            name,
            ty,
            n_cols,
            n_rows,
            self.bytes.clone(),
            offset,
        )?))
    }

    fn kv_cache(&self, shape: &KvShape) -> Result<Option<Box<dyn DeviceKv>>> {
        Ok(Some(Box::new(self.backend.kv_cache(shape)?)))
    }

    fn program(&self, p: DeviceProgram, max_tokens: usize) -> Result<Option<Box<dyn DeviceRun>>> {
        Ok(Some(Box::new(Runner::new(p, max_tokens)?)))
    }
}

/// A weight matrix on the CPU backend.
pub struct CpuMatrix {
    w: Matrix,
    backend: Arc<CpuBackend>,
}

/// Per-thread scratch of a chunk: K-quant accumulators and the chunk's output.
struct Scratch {
    tmp: Vec<f32>,
    out: Vec<f32>,
}

/// What a thread's quantized activations hold: type, rows, values per row.
type ActsTag = Option<(GgmlType, usize, usize)>;

thread_local! {
    /// The quantized activations of the product this thread asked for, and their type and shape
    /// while they still hold that product's input.
    static ACTS: RefCell<(ActsTag, Vec<u8>)> = const { RefCell::new((None, Vec::new())) };
    static SCRATCH: RefCell<Scratch> = const {
        RefCell::new(Scratch { tmp: Vec::new(), out: Vec::new() })
    };
}

/// Grows `v` to `len` elements, failing cleanly when memory runs out.
fn grow<T: Clone + Default>(v: &mut Vec<T>, len: usize, what: &str) -> Result<()> {
    if v.len() < len {
        v.try_reserve(len - v.len())
            .map_err(|_| Error::OutOfMemory(format!("{what}: {len} values")))?;
        v.resize(len, T::default());
    }
    Ok(())
}

/// The output pointer shared by the threads of one product; each writes only its own rows.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: the threads write disjoint elements (their own rows' columns) and the product waits for
// all of them before the slice is used again.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// The quantized activations shared by the threads of one quantization; each writes only its
/// own rows.
#[derive(Clone, Copy)]
struct BytePtr(*mut u8);

// SAFETY: as for `OutPtr`.
unsafe impl Send for BytePtr {}
// SAFETY: as above.
unsafe impl Sync for BytePtr {}

impl BytePtr {
    /// The pointer (a method, so that closures capture the `Sync` wrapper, not its field).
    fn get(self) -> *mut u8 {
        self.0
    }
}

impl OutPtr {
    /// The pointer (a method, so that closures capture the `Sync` wrapper, not its field).
    fn get(self) -> *mut f32 {
        self.0
    }
}

impl CpuMatrix {
    /// Rows in the matrix.
    pub fn n_rows(&self) -> usize {
        self.w.n_rows
    }

    /// Values per row.
    pub fn n_cols(&self) -> usize {
        self.w.n_cols
    }

    /// The `n` rows of `x` (`k` values each) quantized to `vt` into `acts` (`arow` bytes per row):
    /// on the pool's threads, a block of rows each, when there are enough rows to pay for it.
    fn quantize(
        &self,
        vt: GgmlType,
        x: &[f32],
        n: usize,
        k: usize,
        arow: usize,
        acts: &mut [u8],
    ) -> Result<()> {
        let threads = self.backend.threads;
        if threads == 1 || n * k < QUANT_SPLIT_MIN {
            for t in 0..n {
                quant::quantize_row(
                    vt,
                    &x[t * k..(t + 1) * k],
                    &mut acts[t * arow..(t + 1) * arow],
                )?;
            }
            return Ok(());
        }
        let rows = n.div_ceil(threads * CHUNKS_PER_THREAD);
        let dst = BytePtr(acts.as_mut_ptr());
        self.backend.for_each(n.div_ceil(rows), &|c| {
            for t in c * rows..((c + 1) * rows).min(n) {
                // SAFETY: row `t` (arow bytes inside the n * arow of `acts`) belongs to this
                // item alone.
                let row = unsafe { std::slice::from_raw_parts_mut(dst.get().add(t * arow), arow) };
                quant::quantize_row(vt, &x[t * k..(t + 1) * k], row)?;
            }
            Ok(())
        })
    }

    /// `out = x · wᵀ`; `same_input`: `x` is the input of this thread's previous product, unchanged
    /// since, so its quantization is reused when the type and shape match too.
    fn product(&self, x: &[f32], n: usize, out: &mut [f32], same_input: bool) -> Result<()> {
        let (k, m) = (self.w.n_cols, self.w.n_rows);
        if x.len() != n * k || out.len() != n * m {
            return Err(Error::InvalidArgument(format!(
                "matmul of {:?}: {} inputs for {n} rows of {k}, {} outputs for {n} rows of {m}",
                self.w,
                x.len(),
                out.len()
            )));
        }
        if n == 0 {
            return Ok(());
        }
        let vt = self.w.ty.vec_dot_type();
        let arow = usize::try_from(vt.row_size(k as u64)?)
            .map_err(|_| Error::OutOfMemory("activations".into()))?;
        ACTS.with_borrow_mut(|(tag, acts)| -> Result<()> {
            if !(same_input && *tag == Some((vt, n, k))) {
                *tag = None;
                grow(acts, n * arow, "quantized activations")?;
                self.quantize(vt, x, n, k, arow, &mut acts[..n * arow])?;
                *tag = Some((vt, n, k));
            }
            let acts = &acts[..n * arow];
            let threads = self.backend.threads;
            if threads == 1 || m < 2 * ROW_ALIGN {
                return chunk_product(&self.w, acts, n, 0..m, m, OutPtr(out.as_mut_ptr()));
            }
            let chunk = m
                .div_ceil(threads * CHUNKS_PER_THREAD)
                .next_multiple_of(ROW_ALIGN);
            let n_chunks = m.div_ceil(chunk);
            let ptr = OutPtr(out.as_mut_ptr());
            let w = &self.w;
            self.backend.for_each(n_chunks, &|c| {
                let rows = c * chunk..((c + 1) * chunk).min(m);
                chunk_product(w, acts, n, rows, m, ptr)
            })
        })
    }
}

/// Rows `rows` of `w` times the `n` activation rows `acts`, written into the `n x m` output at
/// `out` through the thread's scratch.
fn chunk_product(
    w: &Matrix,
    acts: &[u8],
    n: usize,
    rows: std::ops::Range<usize>,
    m: usize,
    out: OutPtr,
) -> Result<()> {
    let len = rows.len();
    let r0 = rows.start;
    SCRATCH.with_borrow_mut(|ts| -> Result<()> {
        grow(&mut ts.tmp, n, "scratch")?;
        if n == 1 || len == m {
            // One output row, or all columns: the chunk's output is contiguous, written in place.
            // SAFETY: elements r0.. of the n x m output, n * len of them, belong to this chunk
            // alone (n = 1: columns r0..r0+len; len = m: the whole output, r0 = 0).
            let dst = unsafe { std::slice::from_raw_parts_mut(out.0.add(r0), n * len) };
            return matmul_rows(w, acts, n, rows, dst, &mut ts.tmp);
        }
        grow(&mut ts.out, n * len, "scratch")?;
        matmul_rows(w, acts, n, rows, &mut ts.out[..n * len], &mut ts.tmp)?;
        for t in 0..n {
            // SAFETY: row `t`'s columns r0..r0+len of the n x m output belong to this chunk
            // alone, and lie inside it.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    ts.out.as_ptr().add(t * len),
                    out.0.add(t * m + r0),
                    len,
                );
            }
        }
        Ok(())
    })
}

impl DeviceMatrix for CpuMatrix {
    fn matmul_same_input(&self, x: &[f32], n: usize, out: &mut [f32]) -> Result<()> {
        self.product(x, n, out, true)
    }

    fn shape(&self) -> (usize, usize) {
        (self.w.n_cols, self.w.n_rows)
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn matmul(&self, x: &[f32], n: usize, out: &mut [f32]) -> Result<()> {
        self.product(x, n, out, false)
    }
}

/// A session's KV cache on the CPU backend.
pub struct CpuKv {
    cache: KvCache,
    backend: Arc<CpuBackend>,
}

/// Attention work (query heads × visible keys × head values) below which one thread attends
/// alone: waking the pool costs more than it saves.
const ATTN_SPLIT_MIN: usize = 1 << 16;

thread_local! {
    /// This thread's attention buffers, sized for the largest cache it has attended over.
    static ATTN: RefCell<Option<AttnScratch>> = const { RefCell::new(None) };
}

/// Runs `f` with this thread's attention buffers, large enough for `shape`.
fn with_attn_scratch<R>(
    shape: &KvShape,
    f: impl FnOnce(&mut AttnScratch) -> Result<R>,
) -> Result<R> {
    ATTN.with_borrow_mut(|slot| {
        let (n_ctx, hk, hv) = (shape.n_ctx, shape.head_dim_k, shape.head_dim_v);
        if !slot.as_ref().is_some_and(|s| s.fits(n_ctx, hk, hv)) {
            *slot = None; // free the old buffers before the new ones are made
            *slot = Some(AttnScratch::new(n_ctx, hk, hv)?);
        }
        match slot {
            Some(s) => f(s),
            None => unreachable!("filled above"),
        }
    })
}

impl CpuKv {
    /// The cache itself: its shape, size and argument checks.
    pub fn cache(&self) -> &KvCache {
        &self.cache
    }
}

impl DeviceKv for CpuKv {
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }

    fn attend(
        &mut self,
        il: usize,
        cfg: &AttnCfg,
        pos0: usize,
        n: usize,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        out: &mut [f32],
    ) -> Result<()> {
        self.cache.check(il, cfg, pos0, n, q, k, v)?;
        let (nh, hk, hv) = (cfg.n_head, cfg.head_dim_k, cfg.head_dim_v);
        if Some(out.len()) != n.checked_mul(nh).and_then(|x| x.checked_mul(hv)) {
            return Err(Error::InvalidArgument(format!(
                "{} attention outputs for {n} tokens of {nh} heads of {hv}",
                out.len()
            )));
        }
        self.cache.store(il, pos0, n, k, v)?;
        let shape = self.cache.shape();
        let cache = &self.cache;
        let threads = self.backend.threads;
        let work = [pos0 + n, nh, hk + hv]
            .iter()
            .fold(n, |w, &x| w.saturating_mul(x));
        if threads == 1 || work < ATTN_SPLIT_MIN {
            return with_attn_scratch(&shape, |s| {
                cache.attend(il, cfg, q, pos0, n, &AttnPart::all(n, nh), s, out)
            });
        }
        // Items of one head × a block of tokens, taken in turn by every thread: later tokens
        // see more keys, and the queue evens that out.
        let blocks = (threads * CHUNKS_PER_THREAD).div_ceil(nh).min(n);
        let tb = n.div_ceil(blocks);
        let blocks = n.div_ceil(tb);
        let n_items = nh * blocks;
        let ptr = OutPtr(out.as_mut_ptr());
        self.backend.for_each(n_items, &|i| {
            let (h, t0) = (i / blocks, (i % blocks) * tb);
            let tn = tb.min(n - t0);
            with_attn_scratch(&shape, |s| {
                SCRATCH.with_borrow_mut(|ts| {
                    grow(&mut ts.out, tn * hv, "attention scratch")?;
                    let o = &mut ts.out[..tn * hv];
                    let part = AttnPart {
                        tokens: t0..t0 + tn,
                        heads: h..h + 1,
                    };
                    cache.attend(il, cfg, q, pos0, n, &part, s, o)?;
                    for t in 0..tn {
                        // SAFETY: head `h` of token `t0 + t` (hv values inside the n x nh x hv
                        // output) belongs to this item alone.
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                o.as_ptr().add(t * hv),
                                ptr.get().add(((t0 + t) * nh + h) * hv),
                                hv,
                            );
                        }
                    }
                    Ok(())
                })
            })
        })
    }

    fn shift(
        &mut self,
        n_past: usize,
        n_keep: usize,
        n_discard: usize,
        ropes: &[Rope<'_>],
    ) -> Result<()> {
        let n_layer = self.cache.shape().n_layer;
        if ropes.len() != n_layer {
            return Err(Error::InvalidArgument(format!(
                "{} RoPE configurations for {n_layer} layers",
                ropes.len()
            )));
        }
        self.cache.shift(n_past, n_keep, n_discard, |il| ropes[il])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random weights in `ty`, their product through the pool with 1, 2 and 3 threads and
    /// every batch shape against the single-threaded rows, bit for bit.
    #[test]
    fn threads_do_not_change_results() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q8_0,
            GgmlType::Q4_K,
            GgmlType::Q6_K,
            GgmlType::F16,
        ] {
            let (k, m) = (512, 72);
            let row = ty.row_size(k as u64).unwrap() as usize;
            let mut bytes = vec![0u8; 16 + row * m];
            let vals: Vec<f32> = (0..k).map(|_| rnd()).collect();
            for r in 0..m {
                let v: Vec<f32> = vals
                    .iter()
                    .map(|x| x * (r as f32 + 1.0) / 10.0 + rnd())
                    .collect();
                quant::quantize_row(ty, &v, &mut bytes[16 + r * row..16 + (r + 1) * row]).unwrap();
            }
            let bytes: SharedBytes = Arc::new(bytes);
            // 40 rows of 512: enough values for the threads to quantize them in parts.
            for n in [1, 3, 9, 40] {
                let x: Vec<f32> = (0..n * k).map(|_| rnd()).collect();
                let mut want = vec![0.0; n * m];
                let one = CpuBackend::new(1).unwrap();
                one.matrix("w", ty, k, m, bytes.clone(), 16)
                    .unwrap()
                    .matmul(&x, n, &mut want)
                    .unwrap();
                for threads in [2, 3] {
                    let b = CpuBackend::new(threads).unwrap();
                    let mut got = vec![f32::NAN; n * m];
                    b.matrix("w", ty, k, m, bytes.clone(), 16)
                        .unwrap()
                        .matmul(&x, n, &mut got)
                        .unwrap();
                    assert_eq!(
                        got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        "{} n={n} threads={threads}",
                        ty.name()
                    );
                }
            }
        }
    }

    /// A product told its input is the previous one's reuses that quantization only when it is of
    /// its own type and shape: every order of products gives the results of fresh ones.
    #[test]
    fn reused_activations_give_fresh_results() {
        let (k, m) = (512, 16);
        let b = CpuBackend::new(2).unwrap();
        let mut bytes = vec![0u8; 0];
        let mut mats = Vec::new();
        for (i, ty) in [GgmlType::Q4_0, GgmlType::Q8_0, GgmlType::Q4_K]
            .into_iter()
            .enumerate()
        {
            let row = ty.row_size(k as u64).unwrap() as usize;
            let at = bytes.len();
            bytes.resize(at + row * m, 0);
            for r in 0..m {
                let v: Vec<f32> = (0..k)
                    .map(|j| ((i * 7 + r * 3 + j) as f32 * 0.1).sin())
                    .collect();
                quant::quantize_row(ty, &v, &mut bytes[at + r * row..at + (r + 1) * row]).unwrap();
            }
            mats.push((ty, at));
        }
        let bytes: SharedBytes = Arc::new(bytes);
        let mats: Vec<CpuMatrix> = mats
            .iter()
            .map(|&(ty, at)| b.matrix("w", ty, k, m, bytes.clone(), at as u64).unwrap())
            .collect();
        for n in [1, 40] {
            let x: Vec<f32> = (0..n * k).map(|j| (j as f32 * 0.37).cos()).collect();
            let other: Vec<f32> = x.iter().map(|v| v * 0.5).collect();
            let fresh: Vec<Vec<f32>> = mats
                .iter()
                .map(|w| {
                    let mut out = vec![0.0; n * m];
                    w.product(&other, n, &mut out, false).unwrap();
                    w.product(&x, n, &mut out, false).unwrap();
                    out
                })
                .collect();
            // Q4_0 then Q8_0 (both Q8_0 activations: reused), then Q4_K (Q8_K: quantized again),
            // then Q4_0 again (Q8_0 after Q8_K: quantized again).
            for (i, same) in [(0, false), (1, true), (2, true), (0, true)] {
                let mut out = vec![f32::NAN; n * m];
                mats[i].product(&x, n, &mut out, same).unwrap();
                assert_eq!(out, fresh[i], "matrix {i}, n {n}");
            }
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        let b = CpuBackend::new(2).unwrap();
        let bytes: SharedBytes = Arc::new(vec![0u8; 100]);
        // 4 rows of 32 Q8_0 values need 136 bytes.
        assert!(
            b.matrix("w", GgmlType::Q8_0, 32, 4, bytes.clone(), 0)
                .is_err()
        );
        assert!(
            b.matrix("w", GgmlType::Q8_0, 33, 1, bytes.clone(), 0)
                .is_err()
        );
        assert!(
            b.matrix("w", GgmlType::Q8_0, 32, 1, bytes.clone(), u64::MAX)
                .is_err()
        );
        let w = b.matrix("w", GgmlType::Q8_0, 32, 2, bytes, 0).unwrap();
        let mut out = vec![0.0; 2];
        assert!(w.matmul(&[0.0; 31], 1, &mut out).is_err());
        assert!(w.matmul(&[0.0; 32], 1, &mut out[..1]).is_err());
    }

    /// The cache's attention on 1 to 3 threads against the engine's own cache attending on
    /// one thread, bit for bit: prefill batches and single tokens, plain and flash, grouped
    /// heads, a sliding window and a soft-cap; then a context shift on both.
    #[test]
    fn kv_attention_on_threads_matches_the_engine() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        };
        let shape = KvShape {
            n_layer: 2,
            n_ctx: 160,
            n_head_kv: 2,
            head_dim_k: 64,
            head_dim_v: 64,
        };
        let (nh, hk, hv) = (6, shape.head_dim_k, shape.head_dim_v);
        let all = |n| AttnPart::all(n, nh);
        for (flash, softcap, window) in [(false, None, 0), (true, None, 0), (false, Some(30.0), 40)]
        {
            let cfg = AttnCfg {
                n_head: nh,
                n_head_kv: shape.n_head_kv,
                head_dim_k: hk,
                head_dim_v: hv,
                kq_scale: 0.125,
                softcap,
                window,
                flash,
            };
            let mut want_kv = KvCache::new(&shape).unwrap();
            let mut scratch = AttnScratch::new(shape.n_ctx, hk, hv).unwrap();
            let mut caches: Vec<CpuKv> = [1, 2, 3]
                .map(|t| CpuBackend::new(t).unwrap().kv_cache(&shape).unwrap())
                .into();
            let mut pos = 0;
            // A 70-token prompt (the tiled flash kernel), then single tokens.
            for n in [70, 1, 1, 5, 1] {
                for il in 0..shape.n_layer {
                    let q: Vec<f32> = (0..n * nh * hk).map(|_| rnd()).collect();
                    let k: Vec<f32> = (0..n * 2 * hk).map(|_| rnd()).collect();
                    let v: Vec<f32> = (0..n * 2 * hv).map(|_| rnd()).collect();
                    let mut want = vec![0.0; n * nh * hv];
                    want_kv.store(il, pos, n, &k, &v).unwrap();
                    want_kv
                        .attend(il, &cfg, &q, pos, n, &all(n), &mut scratch, &mut want)
                        .unwrap();
                    for c in &mut caches {
                        let mut got = vec![f32::NAN; n * nh * hv];
                        c.attend(il, &cfg, pos, n, &q, &k, &v, &mut got).unwrap();
                        let diff = got
                            .iter()
                            .zip(&want)
                            .position(|(a, b)| a.to_bits() != b.to_bits());
                        assert_eq!(diff, None, "{cfg:?} n={n} at {pos}: first difference");
                    }
                }
                pos += n;
            }
            // Drop 30 positions after the first 4 on both; the next token must agree again.
            let rope = Rope {
                n_rot: 32,
                ty: chord_engine::model::RopeType::Neox,
                freq_base: 10000.0,
                freq_scale: 1.0,
                factors: None,
                attn_factor: 1.0,
            };
            want_kv.shift(pos, 4, 30, |_| rope).unwrap();
            for c in &mut caches {
                c.shift(pos, 4, 30, &[rope, rope]).unwrap();
                assert!(
                    c.shift(pos, 4, 30, &[rope]).is_err(),
                    "one RoPE for two layers"
                );
            }
            pos -= 30;
            let q: Vec<f32> = (0..nh * hk).map(|_| rnd()).collect();
            let k: Vec<f32> = (0..2 * hk).map(|_| rnd()).collect();
            let v: Vec<f32> = (0..2 * hv).map(|_| rnd()).collect();
            let mut want = vec![0.0; nh * hv];
            want_kv.store(1, pos, 1, &k, &v).unwrap();
            want_kv
                .attend(1, &cfg, &q, pos, 1, &all(1), &mut scratch, &mut want)
                .unwrap();
            for c in &mut caches {
                let mut got = vec![0.0; nh * hv];
                c.attend(1, &cfg, pos, 1, &q, &k, &v, &mut got).unwrap();
                assert!(got == want, "{cfg:?} after the shift");
            }
        }
    }

    /// Malformed attention calls are errors (never panics), and leave the cache as it was.
    #[test]
    fn bad_kv_calls_are_errors() {
        let shape = KvShape {
            n_layer: 2,
            n_ctx: 8,
            n_head_kv: 2,
            head_dim_k: 4,
            head_dim_v: 4,
        };
        let b = CpuBackend::new(2).unwrap();
        let mut kv = b.kv_cache(&shape).unwrap();
        let cfg = AttnCfg {
            n_head: 4,
            n_head_kv: 2,
            head_dim_k: 4,
            head_dim_v: 4,
            kq_scale: 0.5,
            softcap: None,
            window: 0,
            flash: false,
        };
        let (q, k, v) = (vec![0.5; 16], vec![0.5; 8], vec![0.5; 8]);
        let mut out = vec![0.0; 16];
        assert!(kv.attend(0, &cfg, 0, 1, &q, &k, &v, &mut out).is_ok());
        let bad = |kv: &mut CpuKv, il, cfg: &AttnCfg, pos, n, q: &[f32], k: &[f32], v: &[f32]| {
            let mut out = vec![0.0; n * cfg.n_head * 4];
            kv.attend(il, cfg, pos, n, q, k, v, &mut out).unwrap_err()
        };
        println!("{}", bad(&mut kv, 2, &cfg, 1, 1, &q, &k, &v)); // no layer 2
        println!("{}", bad(&mut kv, 0, &cfg, 8, 1, &q, &k, &v)); // past n_ctx
        println!("{}", bad(&mut kv, 0, &cfg, usize::MAX, 1, &q, &k, &v)); // overflow
        println!("{}", bad(&mut kv, 0, &cfg, 1, 1, &q[..15], &k, &v)); // short queries
        println!("{}", bad(&mut kv, 0, &cfg, 1, 1, &q, &k[..7], &v)); // short keys
        println!("{}", bad(&mut kv, 0, &cfg, 1, 2, &q, &k, &v)); // n too large for the inputs
        let odd = AttnCfg { n_head: 3, ..cfg };
        println!("{}", bad(&mut kv, 0, &odd, 1, 1, &q[..12], &k, &v)); // 3 heads over 2
        let zero = AttnCfg { n_head: 0, ..cfg };
        println!("{}", bad(&mut kv, 0, &zero, 1, 1, &[], &k, &v));
        let other = AttnCfg {
            head_dim_v: 8,
            ..cfg
        };
        println!("{}", bad(&mut kv, 0, &other, 1, 1, &q, &k, &v)); // not the cache's heads
        assert!(
            kv.attend(0, &cfg, 1, 1, &q, &k, &v, &mut out[..15])
                .is_err()
        );
        // Head counts whose sizes overflow are refused, not wrapped.
        let huge = AttnCfg {
            n_head: 1 << (usize::BITS - 2),
            ..cfg
        };
        assert!(kv.attend(0, &huge, 1, 1, &q, &k, &v, &mut out).is_err());
        let mut s = AttnScratch::new(8, 4, 4).unwrap();
        let part = AttnPart::all(1, huge.n_head);
        assert!(
            kv.cache
                .attend(0, &huge, &q, 1, 1, &part, &mut s, &mut out)
                .is_err()
        );
        let rope = Rope {
            n_rot: 4,
            ty: chord_engine::model::RopeType::Normal,
            freq_base: 10000.0,
            freq_scale: 1.0,
            factors: None,
            attn_factor: 1.0,
        };
        let odd_rope = Rope { n_rot: 3, ..rope };
        let short = Rope {
            factors: Some(&[1.0]),
            ..rope
        };
        let wide = Rope { n_rot: 6, ..rope };
        for r in [odd_rope, short, wide] {
            println!("{}", kv.shift(1, 0, 1, &[r, r]).unwrap_err());
        }
        assert!(kv.shift(1, 0, 2, &[rope, rope]).is_err()); // more than it holds
        assert!(kv.shift(9, 0, 2, &[rope, rope]).is_err()); // more than n_ctx
        // Nothing above changed position 0: attending over it again gives the first answer.
        let mut again = vec![0.0; 16];
        kv.attend(0, &cfg, 0, 1, &q, &k, &v, &mut again).unwrap();
        assert_eq!(again, out);
        // A shape whose size overflows is refused before anything is allocated.
        let huge = KvShape {
            n_ctx: usize::MAX / 2,
            ..shape
        };
        assert!(b.kv_cache(&huge).is_err());
    }
}
