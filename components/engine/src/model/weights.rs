//! Model weights: tensors found through the GGUF header and read through a [`ByteSource`].
//!
//! The same code runs natively (file or memory map) and in the wasm guest (the `memory64-store`
//! import). Without a byte budget every weight is read once, at load. With one (the guest's layer
//! cache, for models larger than its memory), the output head and as many leading layers as fit
//! stay resident ("pinned"), and the remaining layers are pulled from the source one at a time as
//! the forward pass reaches them, the source being told to prefetch the next ones. A forward pass
//! walks the layers in order every token, so evicting the least recently used of the streamed
//! layers, while the pinned ones never move, keeps the hit rate at its maximum for a cyclic scan
//! (plain LRU over all layers would miss every time). Token embeddings are read by the rows needed.

use std::sync::{Arc, Mutex};

use crate::gguf::{ByteSource, Gguf, TensorInfo};
use crate::model::SharedSource;
use crate::model::device::{Device, DeviceMatrix};
use crate::model::graph::{Buf, Emit, Op};
use crate::model::hparams::HParams;
use crate::quant::{self, GgmlType, VecDotFn};
use crate::{Error, Result};

/// A weight matrix in its stored (usually quantized) type: `n_rows` rows of `n_cols` values.
pub struct Matrix {
    /// Tensor name, for messages.
    pub name: String,
    /// Stored element type.
    pub ty: GgmlType,
    /// Values per row (the input width of the projection).
    pub n_cols: usize,
    /// Rows (the output width of the projection).
    pub n_rows: usize,
    /// Bytes per row.
    pub row_bytes: usize,
    /// The dot product kernel for this type, resolved once.
    pub(crate) dot: VecDotFn,
    data: Bytes,
    /// When the rows are not in `data`: where to read them (token embeddings under a budget, or
    /// on a device).
    on_demand: Option<(SharedSource, u64)>,
    /// When a compute device holds the matrix: products go there.
    pub(crate) device: Option<Arc<dyn DeviceMatrix>>,
}

/// A resident matrix's bytes: read into memory, or a range of memory someone else owns (the
/// host's map of the model file, for its CPU backend).
enum Bytes {
    Owned(Vec<u8>),
    Shared(Arc<dyn AsRef<[u8]> + Send + Sync>, std::ops::Range<usize>),
}

impl Bytes {
    #[inline]
    fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Owned(v) => v,
            Bytes::Shared(b, r) => &(**b).as_ref()[r.clone()],
        }
    }
}

impl std::fmt::Debug for Matrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Matrix({} {} [{} x {}])",
            self.name,
            self.ty.name(),
            self.n_rows,
            self.n_cols
        )
    }
}

/// A matrix's rows as one borrowed slice, for hot loops: a row is then a slice of it, where
/// [`Matrix::row`] goes through the matrix's storage (a map behind a trait object) every time.
#[derive(Clone, Copy)]
pub(crate) struct RowBytes<'a> {
    data: &'a [u8],
    row_bytes: usize,
}

impl<'a> RowBytes<'a> {
    /// The raw bytes of row `r`.
    #[inline]
    pub fn row(&self, r: usize) -> &'a [u8] {
        &self.data[r * self.row_bytes..(r + 1) * self.row_bytes]
    }

    /// Asks the CPU to start loading rows `rows` (clamped to the matrix) into cache while the
    /// current ones are multiplied. Decoding streams every weight once per token, and the hardware
    /// prefetchers alone leave one core well short of the memory bandwidth (measured on SmolLM2:
    /// 40 -> 66 tok/s at one thread). A no-op where there is no prefetch instruction.
    #[inline]
    pub fn prefetch(&self, rows: std::ops::Range<usize>) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            let end = (rows.end * self.row_bytes).min(self.data.len());
            let mut at = rows.start * self.row_bytes;
            while at < end {
                // SAFETY: `at` is inside `data`; a prefetch never faults anyway.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(self.data.as_ptr().add(at).cast()) };
                at += 64;
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = rows;
    }
}

impl Matrix {
    /// The raw bytes of row `r` (of a resident matrix: the loader makes every matrix a
    /// forward pass multiplies by resident).
    #[inline]
    pub fn row(&self, r: usize) -> &[u8] {
        &self.data.as_slice()[r * self.row_bytes..(r + 1) * self.row_bytes]
    }

    /// All rows as one slice (see [`RowBytes`]).
    #[inline]
    pub(crate) fn row_bytes_view(&self) -> RowBytes<'_> {
        RowBytes {
            data: self.data.as_slice(),
            row_bytes: self.row_bytes,
        }
    }

    /// All rows, back to back.
    #[inline]
    pub fn data(&self) -> &[u8] {
        self.data.as_slice()
    }

    /// A resident matrix over `bytes[offset..]`, memory owned elsewhere (a device's map of the
    /// model file): `n_rows` rows of `n_cols` values of `ty`.
    pub fn shared(
        name: &str,
        ty: GgmlType,
        n_cols: usize,
        n_rows: usize,
        bytes: Arc<dyn AsRef<[u8]> + Send + Sync>,
        offset: u64,
    ) -> Result<Matrix> {
        let bad = || {
            Error::InvalidArgument(format!(
                "tensor {name}: {n_rows} rows of {n_cols} {} at byte {offset} lie outside the model",
                ty.name()
            ))
        };
        if !n_cols.is_multiple_of(ty.block_size()) {
            return Err(Error::InvalidArgument(format!(
                "tensor {name}: rows of {n_cols} values are not whole {} blocks",
                ty.name()
            )));
        }
        let row_bytes = usize::try_from(ty.row_size(n_cols as u64)?).map_err(|_| bad())?;
        let start = usize::try_from(offset).map_err(|_| bad())?;
        let end = row_bytes
            .checked_mul(n_rows)
            .and_then(|len| start.checked_add(len))
            .filter(|&e| e <= (*bytes).as_ref().len())
            .ok_or_else(bad)?;
        Ok(Matrix {
            name: name.to_string(),
            ty,
            n_cols,
            n_rows,
            row_bytes,
            dot: quant::vec_dot_fn(ty),
            data: Bytes::Shared(bytes, start..end),
            on_demand: None,
            device: None,
        })
    }

    /// A matrix over `data` (tests build small ones in memory).
    #[cfg(test)]
    pub(crate) fn from_bytes(ty: GgmlType, n_cols: usize, n_rows: usize, data: Vec<u8>) -> Matrix {
        let row_bytes = usize::try_from(ty.row_size(n_cols as u64).unwrap()).unwrap();
        assert_eq!(data.len(), row_bytes * n_rows);
        Matrix {
            name: "test".into(),
            ty,
            n_cols,
            n_rows,
            row_bytes,
            dot: quant::vec_dot_fn(ty),
            data: Bytes::Owned(data),
            on_demand: None,
            device: None,
        }
    }

    /// Dequantizes row `r` into `out` (`n_cols` values), reading it from the source if the
    /// matrix is not resident. `buf` is scratch for that read.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32], buf: &mut Vec<u8>) -> Result<()> {
        if r >= self.n_rows {
            return Err(Error::InvalidArgument(format!(
                "row {r} of {} which has {} rows",
                self.name, self.n_rows
            )));
        }
        let Some((src, base)) = &self.on_demand else {
            return quant::dequantize_row(self.ty, self.row(r), &mut out[..self.n_cols]);
        };
        buf.clear();
        buf.try_reserve(self.row_bytes)
            .map_err(|_| Error::OutOfMemory(format!("a row of {}", self.name)))?;
        buf.resize(self.row_bytes, 0);
        // r < n_rows, and n_rows * row_bytes is the tensor's size, a u64.
        src.read_exact_at(base + (r * self.row_bytes) as u64, buf)?;
        quant::dequantize_row(self.ty, buf, &mut out[..self.n_cols])
    }

    /// Bytes held in memory.
    pub fn resident_bytes(&self) -> usize {
        match &self.data {
            Bytes::Owned(v) => v.len(),
            Bytes::Shared(..) => 0,
        }
    }
}

/// How a layer is read: an architecture's per-layer loader.
pub(crate) type LayerFn<L> = for<'a, 'b> fn(&'b mut Loader<'a>, &HParams, usize) -> Result<L>;

/// What the weights of a model may take in memory, and how far ahead to prefetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheOptions {
    /// Most bytes of weights held at once; `None`: all of them, read at load.
    pub budget_bytes: Option<u64>,
    /// Streamed layers ahead of the current one whose bytes the source is asked to prefetch.
    pub prefetch_layers: usize,
}

/// Counters of the layer cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Layers kept in memory for good.
    pub pinned_layers: usize,
    /// Layers read on demand.
    pub streamed_layers: usize,
    /// Bytes of weights resident now.
    pub resident_bytes: u64,
    /// Layer loads on demand (misses) and the bytes they read.
    pub layer_loads: u64,
    pub layer_load_bytes: u64,
}

/// Where a streamed layer's tensors are in the source: one span covering them.
#[derive(Debug, Clone, Copy, Default)]
struct Span {
    offset: u64,
    len: u64,
}

struct Stream<L> {
    /// Streamed layers in memory, least recently used first.
    lru: Vec<(usize, Arc<L>)>,
    stats: CacheStats,
}

/// The per-layer weights of a model, reached only through [`Layers::get`].
pub struct Layers<L> {
    pinned: Vec<Arc<L>>,
    n_layer: usize,
    /// Streamed layers held at once (1: the one being computed).
    slots: usize,
    stream: Mutex<Stream<L>>,
    spans: Vec<Span>,
    prefetch: usize,
    reader: Option<LayerReader<L>>,
}

/// What reading a layer later needs.
struct LayerReader<L> {
    src: SharedSource,
    gguf: Arc<Gguf>,
    hp: HParams,
    load: LayerFn<L>,
}

impl<L> std::fmt::Debug for Layers<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layers")
            .field("n_layer", &self.n_layer)
            .field("pinned", &self.pinned.len())
            .finish_non_exhaustive()
    }
}

impl<L> Layers<L> {
    /// Reads `hp.n_layer` layers with `load`: all of them when the loader has no budget, else as
    /// many as fit in what is left of it (the loader's `layer_budget`), keeping room to stream
    /// the others one at a time.
    pub(crate) fn load(ld: &mut Loader<'_>, hp: &HParams, load: LayerFn<L>) -> Result<Layers<L>> {
        let n_layer = hp.n_layer;
        // A dry pass checks every layer's tensors (names, shapes, types) and measures them
        // without reading any data.
        let mut spans = Vec::new();
        spans
            .try_reserve_exact(n_layer)
            .map_err(|_| Error::OutOfMemory(format!("{n_layer} layers")))?;
        let mut sizes = Vec::with_capacity(n_layer);
        ld.dry = true;
        for il in 0..n_layer {
            ld.span = None;
            ld.measured = 0;
            let r = load(ld, hp, il);
            let (span, size) = (ld.span.take(), ld.measured);
            r?;
            let span = span.map_or(Span::default(), |(lo, hi)| Span {
                offset: lo,
                len: hi - lo,
            });
            spans.push(span);
            sizes.push(size);
        }
        ld.dry = false;
        let n_pinned = match ld.layer_budget {
            None => n_layer,
            Some(budget) => {
                // The most leading layers such that they plus the largest remaining one fit.
                let mut p = 0;
                let mut used = 0u64;
                loop {
                    if p == n_layer {
                        break;
                    }
                    let rest = sizes[p + 1..].iter().copied().max().unwrap_or(0);
                    if used + sizes[p] + rest > budget {
                        break;
                    }
                    used += sizes[p];
                    p += 1;
                }
                let largest = sizes[p..].iter().copied().max().unwrap_or(0);
                if p < n_layer && used + largest > budget {
                    return Err(Error::InvalidArgument(format!(
                        "the weight cache budget leaves {budget} bytes for layers, less than one layer ({largest} bytes)"
                    )));
                }
                p
            }
        };
        let mut pinned = Vec::with_capacity(n_pinned);
        for il in 0..n_pinned {
            pinned.push(Arc::new(load(ld, hp, il)?));
        }
        let reader = (n_pinned < n_layer).then(|| LayerReader {
            src: ld.shared.clone(),
            gguf: ld.gguf_arc.clone(),
            hp: hp.clone(),
            load,
        });
        let pinned_bytes: u64 = sizes[..n_pinned].iter().sum();
        Ok(Layers {
            pinned,
            n_layer,
            slots: 1,
            stream: Mutex::new(Stream {
                lru: Vec::new(),
                stats: CacheStats {
                    pinned_layers: n_pinned,
                    streamed_layers: n_layer - n_pinned,
                    resident_bytes: pinned_bytes,
                    ..CacheStats::default()
                },
            }),
            spans,
            prefetch: ld.prefetch_layers,
            reader,
        })
    }

    /// Layer `il`'s weights, read from the source if it is a streamed layer not in memory.
    pub fn get(&self, il: usize) -> Result<Arc<L>> {
        if let Some(l) = self.pinned.get(il) {
            return Ok(l.clone());
        }
        if il >= self.n_layer {
            return Err(Error::InvalidArgument(format!("layer {il} does not exist")));
        }
        let Some(rd) = &self.reader else {
            return Err(Error::InvalidArgument(format!("layer {il} was not loaded")));
        };
        let mut st = self
            .stream
            .lock()
            .map_err(|_| Error::InvalidArgument("layer cache poisoned by a panic".into()))?;
        if let Some(i) = st.lru.iter().position(|(j, _)| *j == il) {
            let e = st.lru.remove(i);
            let l = e.1.clone();
            st.lru.push(e);
            return Ok(l);
        }
        // Free room before reading, so the allocator can reuse the evicted layer's memory.
        while st.lru.len() >= self.slots {
            let (j, _) = st.lru.remove(0);
            st.stats.resident_bytes -= self.spans[j].len.min(st.stats.resident_bytes);
        }
        let mut ld = Loader::new(&rd.src, &rd.gguf, None, 0);
        let layer = Arc::new((rd.load)(&mut ld, &rd.hp, il)?);
        st.stats.layer_loads += 1;
        st.stats.layer_load_bytes += ld.measured;
        st.stats.resident_bytes += self.spans[il].len;
        st.lru.push((il, layer.clone()));
        // Ask for the next streamed layers (wrapping to the first streamed one: the next token
        // starts over) while this one computes.
        let first = self.pinned.len();
        let n_streamed = self.n_layer - first;
        for k in 1..=self.prefetch.min(n_streamed.saturating_sub(1)) {
            let next = first + (il - first + k) % n_streamed;
            let s = self.spans[next];
            rd.src.prefetch(s.offset, s.len);
        }
        Ok(layer)
    }

    /// Number of layers.
    pub fn len(&self) -> usize {
        self.n_layer
    }

    /// Whether there are no layers.
    pub fn is_empty(&self) -> bool {
        self.n_layer == 0
    }

    /// The cache's counters.
    pub fn stats(&self) -> CacheStats {
        self.stream.lock().map(|s| s.stats).unwrap_or_default()
    }
}

/// Finds tensors by name, checks their shapes, and reads them.
pub(crate) struct Loader<'a> {
    pub src: &'a dyn ByteSource,
    pub gguf: &'a Gguf,
    /// The same source and header, shared, for layers read later.
    pub shared: SharedSource,
    pub gguf_arc: Arc<Gguf>,
    /// Bytes the layers may take (`None`: no limit).
    pub layer_budget: Option<u64>,
    pub prefetch_layers: usize,
    /// A dry run checks and measures tensors without reading them.
    pub dry: bool,
    /// Bytes of tensor data measured (dry) or read since last reset.
    pub measured: u64,
    /// The extent in the source of the tensors seen since last reset.
    pub span: Option<(u64, u64)>,
    /// The `vec_dot_type` of every matrix loaded so far (activations get quantized to these).
    pub act_types: Vec<GgmlType>,
    /// Widest fused Q/K/V projection loaded (0 if none).
    pub fused_qkv_width: usize,
    /// Widest FFN gate (or fused gate+up) output: `n_ff` unless an architecture says more.
    pub ffn_width: usize,
    /// Where matrices go when a compute device multiplies them (`None`: into memory).
    pub device: Option<Arc<dyn Device>>,
}

impl<'a> Loader<'a> {
    /// A loader over `src` and `gguf`, with a budget for layers (`None`: none).
    pub fn new(
        src: &'a SharedSource,
        gguf: &'a Arc<Gguf>,
        layer_budget: Option<u64>,
        prefetch_layers: usize,
    ) -> Loader<'a> {
        Loader {
            src: &**src,
            gguf,
            shared: src.clone(),
            gguf_arc: gguf.clone(),
            layer_budget,
            prefetch_layers,
            dry: false,
            measured: 0,
            span: None,
            act_types: Vec::new(),
            fused_qkv_width: 0,
            ffn_width: 0,
            device: None,
        }
    }

    fn info(&self, name: &str) -> Result<&'a TensorInfo> {
        self.gguf
            .tensor(name)
            .ok_or_else(|| Error::InvalidModel(format!("missing tensor {name}")))
    }

    /// Checks that `t` has exactly the dimensions `want` (innermost first; trailing 1s allowed).
    fn check_dims(t: &TensorInfo, want: &[usize]) -> Result<()> {
        let got = &t.dims;
        let ok = got.len() >= want.len()
            && got.iter().enumerate().all(|(i, &d)| {
                let w = want.get(i).copied().unwrap_or(1);
                u64::try_from(w).is_ok_and(|w| w == d)
            });
        if !ok {
            return Err(Error::InvalidModel(format!(
                "tensor {} has shape {:?}, expected {:?}",
                t.name, got, want
            )));
        }
        Ok(())
    }

    fn read_bytes(&mut self, t: &TensorInfo) -> Result<Vec<u8>> {
        let base = self.gguf.tensor_data_offset(t);
        let end = base.saturating_add(t.size);
        self.span = Some(match self.span {
            None => (base, end),
            Some((lo, hi)) => (lo.min(base), hi.max(end)),
        });
        self.measured += t.size;
        if self.dry {
            return Ok(Vec::new());
        }
        let size = usize::try_from(t.size)
            .map_err(|_| Error::OutOfMemory(format!("tensor {}: {} bytes", t.name, t.size)))?;
        self.src.read_vec(base, size).map_err(|e| match e {
            Error::OutOfMemory(_) => Error::OutOfMemory(format!("tensor {}: {size} bytes", t.name)),
            e => e,
        })
    }

    /// The matrix `name` with `n_rows` rows of `n_cols` values, in any type with a dot kernel.
    pub fn matrix(&mut self, name: &str, n_cols: usize, n_rows: usize) -> Result<Matrix> {
        let t = self.info(name)?;
        Self::check_dims(t, &[n_cols, n_rows])?;
        let ty = t.ty;
        let row_bytes = usize::try_from(ty.row_size(t.dims[0])?)
            .map_err(|_| Error::InvalidModel(format!("tensor {name}: row too large")))?;
        if let Some(dev) = self.device.clone() {
            return self.device_matrix(&*dev, t, n_cols, n_rows, row_bytes);
        }
        let data = self.read_bytes(t)?;
        if !self.dry && Some(data.len()) != row_bytes.checked_mul(n_rows) {
            return Err(Error::InvalidModel(format!(
                "tensor {name}: {} bytes for {n_rows} rows of {row_bytes}",
                data.len()
            )));
        }
        if !self.act_types.contains(&ty.vec_dot_type()) {
            self.act_types.push(ty.vec_dot_type());
        }
        Ok(Matrix {
            name: name.to_string(),
            ty,
            n_cols,
            n_rows,
            row_bytes,
            dot: quant::vec_dot_fn(ty),
            data: Bytes::Owned(data),
            on_demand: None,
            device: None,
        })
    }

    /// The matrix of `t` placed on `dev`: products run there, single rows (token embeddings)
    /// are read from the source.
    fn device_matrix(
        &mut self,
        dev: &dyn Device,
        t: &TensorInfo,
        n_cols: usize,
        n_rows: usize,
        row_bytes: usize,
    ) -> Result<Matrix> {
        let name = &t.name;
        if Some(t.size) != (row_bytes as u64).checked_mul(n_rows as u64) {
            return Err(Error::InvalidModel(format!(
                "tensor {name}: {} bytes for {n_rows} rows of {row_bytes}",
                t.size
            )));
        }
        let offset = self.gguf.tensor_data_offset(t);
        let device = if self.dry {
            None
        } else {
            Some(Arc::from(dev.upload(name, t.ty, n_cols, n_rows, offset)?))
        };
        Ok(Matrix {
            name: name.clone(),
            ty: t.ty,
            n_cols,
            n_rows,
            row_bytes,
            dot: quant::vec_dot_fn(t.ty),
            data: Bytes::Owned(Vec::new()),
            on_demand: Some((self.shared.clone(), offset)),
            device,
        })
    }

    /// The matrix `name`, its rows read from the source when needed rather than now (token
    /// embeddings: a token needs one row).
    pub fn matrix_on_demand(&mut self, name: &str, n_cols: usize, n_rows: usize) -> Result<Matrix> {
        let t = self.info(name)?;
        Self::check_dims(t, &[n_cols, n_rows])?;
        let ty = t.ty;
        let row_bytes = usize::try_from(ty.row_size(t.dims[0])?)
            .map_err(|_| Error::InvalidModel(format!("tensor {name}: row too large")))?;
        if Some(t.size) != (row_bytes as u64).checked_mul(n_rows as u64) {
            return Err(Error::InvalidModel(format!(
                "tensor {name}: {} bytes for {n_rows} rows of {row_bytes}",
                t.size
            )));
        }
        Ok(Matrix {
            name: name.to_string(),
            ty,
            n_cols,
            n_rows,
            row_bytes,
            dot: quant::vec_dot_fn(ty),
            data: Bytes::Owned(Vec::new()),
            on_demand: Some((self.shared.clone(), self.gguf.tensor_data_offset(t))),
            device: None,
        })
    }

    /// Like [`Loader::matrix`], `None` if the tensor is absent.
    pub fn opt_matrix(
        &mut self,
        name: &str,
        n_cols: usize,
        n_rows: usize,
    ) -> Result<Option<Matrix>> {
        match self.gguf.tensor(name) {
            None => Ok(None),
            Some(_) => self.matrix(name, n_cols, n_rows).map(Some),
        }
    }

    /// The vector `name` of `n` values (norm weights, biases), converted to f32.
    pub fn vector(&mut self, name: &str, n: usize) -> Result<Vec<f32>> {
        let t = self.info(name)?;
        Self::check_dims(t, &[n])?;
        let bytes = self.read_bytes(t)?;
        if self.dry {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        out.try_reserve_exact(n)
            .map_err(|_| Error::OutOfMemory(format!("tensor {name}: {n} values")))?;
        out.resize(n, 0.0);
        quant::dequantize_row(t.ty, &bytes, &mut out)?;
        if let Some(i) = out.iter().position(|v| !v.is_finite()) {
            return Err(Error::InvalidModel(format!(
                "tensor {name}: value {i} is {}",
                out[i]
            )));
        }
        Ok(out)
    }

    /// Like [`Loader::vector`], `None` if the tensor is absent.
    pub fn opt_vector(&mut self, name: &str, n: usize) -> Result<Option<Vec<f32>>> {
        match self.gguf.tensor(name) {
            None => Ok(None),
            Some(_) => self.vector(name, n).map(Some),
        }
    }
}

/// The Q, K and V projections of one layer, stored separately or fused into one `attn_qkv`
/// matrix, each with an optional bias (llama.cpp's `create_tensor_qkv` and `build_qkv`).
pub(crate) struct Qkv {
    /// `[n_embd] → [q_dim + k_dim + v_dim]`, when fused.
    fused: Option<(Matrix, Option<Vec<f32>>)>,
    /// `[n_embd] → [q_dim]`, `[k_dim]`, `[v_dim]` with biases, when separate.
    split: Option<[(Matrix, Option<Vec<f32>>); 3]>,
}

impl Qkv {
    /// Reads layer `il`'s projections: `attn_qkv` if present, else `attn_q`/`attn_k`/`attn_v`.
    pub fn load(ld: &mut Loader<'_>, hp: &super::HParams, il: usize) -> Result<Qkv> {
        use crate::gguf::names::Tn;
        let d = hp.n_embd;
        let (qd, kd, vd) = (hp.q_dim(), hp.k_dim(), hp.v_dim());
        let total = qd + kd + vd;
        if let Some(w) = ld.opt_matrix(&Tn::AttnQkv.layer(il, "weight"), d, total)? {
            let b = ld.opt_vector(&Tn::AttnQkv.layer(il, "bias"), total)?;
            // Fused weights may come with separate biases (legacy files): concatenate them.
            let b = match b {
                Some(b) => Some(b),
                None => {
                    let parts = [(Tn::AttnQ, qd), (Tn::AttnK, kd), (Tn::AttnV, vd)]
                        .map(|(t, n)| ld.opt_vector(&t.layer(il, "bias"), n));
                    match parts {
                        [Ok(Some(q)), Ok(Some(k)), Ok(Some(v))] => Some([q, k, v].concat()),
                        [a, b, c] => {
                            a?;
                            b?;
                            c?;
                            None
                        }
                    }
                }
            };
            ld.fused_qkv_width = ld.fused_qkv_width.max(total);
            return Ok(Qkv {
                fused: Some((w, b)),
                split: None,
            });
        }
        let mut one = |t: Tn, n: usize| -> Result<(Matrix, Option<Vec<f32>>)> {
            Ok((
                ld.matrix(&t.layer(il, "weight"), d, n)?,
                ld.opt_vector(&t.layer(il, "bias"), n)?,
            ))
        };
        Ok(Qkv {
            fused: None,
            split: Some([
                one(Tn::AttnQ, qd)?,
                one(Tn::AttnK, kd)?,
                one(Tn::AttnV, vd)?,
            ]),
        })
    }

    /// `q, k, v = xn·Wq + bq, xn·Wk + bk, xn·Wv + bv` ([`Buf::Xn`] into [`Buf::Q`], [`Buf::K`],
    /// [`Buf::V`]), through [`Buf::Qkv`] when the projections are fused.
    pub(crate) fn emit<'w>(&self, g: &mut impl Emit<'w>) -> Result<()> {
        if let Some((w, b)) = &self.fused {
            g.op(Op::matmul(Buf::Qkv, Buf::Xn, w))?;
            if let Some(b) = b {
                g.op(Op::add_bias(Buf::Qkv, b))?;
            }
            return g.op(Op::SplitQkv);
        }
        let Some(parts) = &self.split else {
            return Err(Error::InvalidModel(
                "layer without Q/K/V projections".into(),
            ));
        };
        for ((w, b), out) in parts.iter().zip([Buf::Q, Buf::K, Buf::V]) {
            g.op(Op::matmul(out, Buf::Xn, w))?;
            if let Some(b) = b {
                g.op(Op::add_bias(out, b))?;
            }
        }
        Ok(())
    }
}
