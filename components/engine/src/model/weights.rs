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
