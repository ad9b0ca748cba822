//! Model weights: tensors found through the GGUF header and read through a [`ByteSource`].
//!
//! The same code runs natively (file or memory map) and in the wasm guest (the `memory64-store`
//! import). For now every weight is read into memory once, at load. Layers are reached only through
//! [`Layers::get`], so a bounded cache that pulls layers on demand can replace the `Vec` behind it
//! without touching the forward passes.

use crate::gguf::{ByteSource, Gguf, TensorInfo};
use crate::quant::{self, GgmlType, VecDotFn};
use crate::{Error, Result};

/// Tensor data is read in pieces of this size: one store call each, and no single huge request.
const READ_CHUNK: usize = 8 << 20;

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
    data: Vec<u8>,
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

impl Matrix {
    /// The raw bytes of row `r`.
    #[inline]
    pub fn row(&self, r: usize) -> &[u8] {
        &self.data[r * self.row_bytes..(r + 1) * self.row_bytes]
    }

    /// All rows, back to back.
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.data
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
            data,
        }
    }

    /// Dequantizes row `r` into `out` (`n_cols` values).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) -> Result<()> {
        if r >= self.n_rows {
            return Err(Error::InvalidArgument(format!(
                "row {r} of {} which has {} rows",
                self.name, self.n_rows
            )));
        }
        quant::dequantize_row(self.ty, self.row(r), &mut out[..self.n_cols])
    }
}

/// The per-layer weights of a model, reached only through [`Layers::get`].
#[derive(Debug)]
pub struct Layers<L> {
    layers: Vec<L>,
}

impl<L> Layers<L> {
    /// Loads all `n_layer` layers with `load`.
    pub(crate) fn load_all(
        n_layer: usize,
        mut load: impl FnMut(usize) -> Result<L>,
    ) -> Result<Layers<L>> {
        let mut layers = Vec::new();
        layers
            .try_reserve_exact(n_layer)
            .map_err(|_| Error::OutOfMemory(format!("{n_layer} layers")))?;
        for il in 0..n_layer {
            layers.push(load(il)?);
        }
        Ok(Layers { layers })
    }

    /// Layer `il`'s weights. (The single entry point a future on-demand layer cache hooks into.)
    #[inline]
    pub fn get(&self, il: usize) -> Result<&L> {
        self.layers
            .get(il)
            .ok_or_else(|| Error::InvalidArgument(format!("layer {il} does not exist")))
    }

    /// Number of layers.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether there are no layers.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }
}

/// Finds tensors by name, checks their shapes, and reads them.
pub(crate) struct Loader<'a> {
    pub src: &'a dyn ByteSource,
    pub gguf: &'a Gguf,
    /// The `vec_dot_type` of every matrix loaded so far (activations get quantized to these).
    pub act_types: Vec<GgmlType>,
    /// Widest fused Q/K/V projection loaded (0 if none).
    pub fused_qkv_width: usize,
    /// Widest FFN gate (or fused gate+up) output: `n_ff` unless an architecture says more.
    pub ffn_width: usize,
}

impl Loader<'_> {
    fn info(&self, name: &str) -> Result<&TensorInfo> {
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

    fn read_bytes(&self, t: &TensorInfo) -> Result<Vec<u8>> {
        let size = usize::try_from(t.size)
            .map_err(|_| Error::OutOfMemory(format!("tensor {}: {} bytes", t.name, t.size)))?;
        let mut data = Vec::new();
        data.try_reserve_exact(size)
            .map_err(|_| Error::OutOfMemory(format!("tensor {}: {size} bytes", t.name)))?;
        data.resize(size, 0);
        let base = self.gguf.tensor_data_offset(t);
        for (i, chunk) in data.chunks_mut(READ_CHUNK).enumerate() {
            // i * READ_CHUNK < size, which fits in u64.
            let off = base + (i * READ_CHUNK) as u64;
            self.src.read_exact_at(off, chunk)?;
        }
        Ok(data)
    }

    /// The matrix `name` with `n_rows` rows of `n_cols` values, in any type with a dot kernel.
    pub fn matrix(&mut self, name: &str, n_cols: usize, n_rows: usize) -> Result<Matrix> {
        let t = self.info(name)?;
        Self::check_dims(t, &[n_cols, n_rows])?;
        let ty = t.ty;
        let row_bytes = usize::try_from(ty.row_size(t.dims[0])?)
            .map_err(|_| Error::InvalidModel(format!("tensor {name}: row too large")))?;
        let data = self.read_bytes(t)?;
        if Some(data.len()) != row_bytes.checked_mul(n_rows) {
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
            data,
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
    pub fn vector(&self, name: &str, n: usize) -> Result<Vec<f32>> {
        let t = self.info(name)?;
        Self::check_dims(t, &[n])?;
        let bytes = self.read_bytes(t)?;
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
    pub fn opt_vector(&self, name: &str, n: usize) -> Result<Option<Vec<f32>>> {
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
    /// `[q_dim, k_dim, v_dim]`.
    dims: [usize; 3],
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
                dims: [qd, kd, vd],
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
            dims: [qd, kd, vd],
        })
    }

    /// `q, k, v = x·Wq + bq, x·Wk + bk, x·Wv + bv` for the `n` rows in `x`; `fused` is scratch
    /// of `n * fused_width()` values when the projections are fused.
    pub fn project(
        &self,
        x: &mut super::ops::Acts,
        n: usize,
        fused: &mut [f32],
        q: &mut [f32],
        k: &mut [f32],
        v: &mut [f32],
    ) -> Result<()> {
        use super::ops::{add_bias, matmul};
        if let Some((w, b)) = &self.fused {
            let total = w.n_rows;
            matmul(w, x, fused)?;
            if let Some(b) = b {
                add_bias(&mut fused[..n * total], b);
            }
            // Split each row [q | k | v] (ggml views of the fused output).
            let [qd, kd, vd] = self.dims;
            for t in 0..n {
                let row = &fused[t * total..(t + 1) * total];
                q[t * qd..(t + 1) * qd].copy_from_slice(&row[..qd]);
                k[t * kd..(t + 1) * kd].copy_from_slice(&row[qd..qd + kd]);
                v[t * vd..(t + 1) * vd].copy_from_slice(&row[qd + kd..]);
            }
            return Ok(());
        }
        let Some(parts) = &self.split else {
            return Err(Error::InvalidModel(
                "layer without Q/K/V projections".into(),
            ));
        };
        for ((w, b), out) in parts.iter().zip([q, k, v]) {
            matmul(w, x, out)?;
            if let Some(b) = b {
                add_bias(&mut out[..n * w.n_rows], b);
            }
        }
        Ok(())
    }
}
