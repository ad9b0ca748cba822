//! Compute devices that hold a model's weight matrices and multiply by them: the data plane of
//! the `chord:compute` import (the host's CPU thread pool today), or the same backend called
//! natively.
//!
//! The matrix products move, nearly all of a forward pass's arithmetic and all of its weight
//! bytes, and a device may also hold each session's KV cache and compute the attention over it
//! ([`DeviceKv`]): then keys and values never come back either. Norms, RoPE and activations
//! stay with the forward pass, whose code is the same whichever device computes. A device reads
//! the weights itself, from the store range it is given; they never pass through the caller's
//! memory.

use super::graph::{DeviceProgram, DeviceRun};
use super::kv_cache::KvShape;
use super::ops::{AttnCfg, Rope};
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

    /// A zeroed KV cache of `shape` for one session, or `None` if this device holds weights
    /// only (the caller then keeps the cache and attends itself).
    fn kv_cache(&self, shape: &KvShape) -> Result<Option<Box<dyn DeviceKv>>> {
        let _ = shape;
        Ok(None)
    }

    /// Takes a session's recorded forward step (its matrices all on this device), to run a step
    /// at a time over steps of up to `max_tokens` tokens, or `None` if this device does not run
    /// programs (the caller then runs the step itself, calling the device for products and
    /// attention).
    fn program(
        &self,
        program: DeviceProgram,
        max_tokens: usize,
    ) -> Result<Option<Box<dyn DeviceRun>>> {
        let _ = (program, max_tokens);
        Ok(None)
    }
}

/// A weight matrix held by a device.
pub trait DeviceMatrix: Send + Sync {
    /// Inputs per row and rows: `(n_cols, n_rows)`.
    fn shape(&self) -> (usize, usize);

    /// The matrix as `Any`, for a device to recognize its own matrices in a program.
    fn as_any(&self) -> &dyn std::any::Any;

    /// `out[t * n_rows + r] = w[r] · x[t]` for the `n` rows of `x` (`[n, n_cols]`), with the
    /// results of [`crate::model::ops`]'s own matmul bit for bit.
    fn matmul(&self, x: &[f32], n: usize, out: &mut [f32]) -> Result<()>;

    /// [`DeviceMatrix::matmul`] of the input of the caller's previous product on this device,
    /// unchanged since: a device may reuse what it made of it (its quantization).
    fn matmul_same_input(&self, x: &[f32], n: usize, out: &mut [f32]) -> Result<()> {
        self.matmul(x, n, out)
    }
}

/// A session's key/value cache held by a device, which also computes the attention over it:
/// the keys and values never come back to the caller.
pub trait DeviceKv: Send {
    /// The cache as `Any`, for a device to recognize its own caches.
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any;

    /// Stores the keys `k` (`[n, n_head_kv * head_dim_k]`) and values `v` of `n` tokens at
    /// positions `pos0 ..` of layer `il`, then writes the attention of their queries `q`
    /// (`[n, n_head * head_dim_k]`) to `out` (`[n, n_head * head_dim_v]`), with the results of
    /// [`crate::model::KvCache`] and [`crate::model::KvCache::attend`] bit for bit.
    #[allow(clippy::too_many_arguments)]
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
    ) -> Result<()>;

    /// llama.cpp's context shift, as [`crate::model::KvCache::shift`]; `ropes[il]` is layer
    /// `il`'s RoPE.
    fn shift(
        &mut self,
        n_past: usize,
        n_keep: usize,
        n_discard: usize,
        ropes: &[Rope<'_>],
    ) -> Result<()>;
}
