//! Compute devices that hold a model's weight matrices and multiply by them: the data plane of
//! the `chord:compute` import (the host's CPU thread pool today), or the same backend called
//! natively.
//!
//! Only the matrix products move: they are nearly all of a forward pass's arithmetic and all of
//! its weight bytes. Norms, RoPE, attention and the KV cache stay with the forward pass, whose
//! code is the same whichever device multiplies. A device reads the weights itself, from the
//! store range it is given; they never pass through the caller's memory.

use crate::Result;
use crate::quant::GgmlType;

/// A device weights can be placed on.
pub trait Device: Send + Sync {
    /// Places the matrix `name` of `n_rows` rows of `n_cols` values of `ty`, stored at byte
    /// `offset` of the model source, on the device.
    fn upload(
        &self,
        name: &str,
        ty: GgmlType,
        n_cols: usize,
        n_rows: usize,
        offset: u64,
    ) -> Result<Box<dyn DeviceMatrix>>;
}

/// A weight matrix held by a device.
pub trait DeviceMatrix: Send + Sync {
    /// `out[t * n_rows + r] = w[r] · x[t]` for the `n` rows of `x` (`[n, n_cols]`), with the
    /// results of [`crate::model::ops`]'s own matmul bit for bit.
    fn matmul(&self, x: &[f32], n: usize, out: &mut [f32]) -> Result<()>;
}
