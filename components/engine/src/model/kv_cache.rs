//! The per-session key/value cache, preallocated for `n_ctx` positions.
//!
//! llama.cpp's default cache holds K and V in f16 (`ggml_set_rows` of the f32 K/V into F16
//! tensors), and rounding them where llama.cpp rounds them is part of matching its numbers. Here
//! the values are rounded to f16 on the way in but kept as f32: the same numbers, read without
//! conversion by dot products that vectorize (twice the memory of f16 storage).
//!
//! Layout per layer, with cell index = position:
//! - K: `[n_ctx][n_head_kv][head_dim_k]` — one contiguous row per (position, head), the rows
//!   `kq = K·q` walks.
//! - V: `[n_head_kv][head_dim_v][n_ctx]` — transposed (llama.cpp's `v_trans` layout without flash
//!   attention), so `kqv = V·p` is one contiguous dot product per output dimension.

use super::ops::{Rope, alloc, mul, round_f16};
use crate::{Error, Result};

/// Keys and values of every layer for up to `n_ctx` positions.
pub struct KvCache {
    n_ctx: usize,
    n_head_kv: usize,
    head_dim_k: usize,
    head_dim_v: usize,
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    /// One key row during a shift, and its RoPE table.
    tmp: Vec<f32>,
    rope_cache: Vec<f32>,
}

/// One layer's view of the cache.
pub(crate) struct LayerKv<'a> {
    n_ctx: usize,
    n_head_kv: usize,
    head_dim_k: usize,
    head_dim_v: usize,
    k: &'a [f32],
    v: &'a [f32],
}

impl LayerKv<'_> {
    /// The key of kv-head `g` at position `p` (`head_dim_k` values).
    #[inline]
    pub fn k_row(&self, p: usize, g: usize) -> &[f32] {
        let hk = self.head_dim_k;
        &self.k[(p * self.n_head_kv + g) * hk..][..hk]
    }

    /// Dimension `d` of kv-head `g`'s value at position `p`.
    #[inline]
    pub fn v_at(&self, g: usize, d: usize, p: usize) -> f32 {
        self.v[(g * self.head_dim_v + d) * self.n_ctx + p]
    }

    /// Dimension `d` of kv-head `g`'s values at positions `start..end`.
    #[inline]
    pub fn v_row(&self, g: usize, d: usize, start: usize, end: usize) -> &[f32] {
        let base = (g * self.head_dim_v + d) * self.n_ctx;
        &self.v[base + start..base + end]
    }
}

impl KvCache {
    /// A cache for `n_layer` layers of `n_ctx` positions.
    pub fn new(
        n_layer: usize,
        n_ctx: usize,
        n_head_kv: usize,
        head_dim_k: usize,
        head_dim_v: usize,
    ) -> Result<KvCache> {
        let k_len = mul(mul(n_ctx, n_head_kv, "K cache")?, head_dim_k, "K cache")?;
        let v_len = mul(mul(n_ctx, n_head_kv, "V cache")?, head_dim_v, "V cache")?;
        let mut k = Vec::new();
        let mut v = Vec::new();
        k.try_reserve_exact(n_layer)
            .and_then(|_| v.try_reserve_exact(n_layer))
            .map_err(|_| Error::OutOfMemory(format!("KV cache for {n_layer} layers")))?;
        for _ in 0..n_layer {
            k.push(alloc(k_len, "K cache")?);
            v.push(alloc(v_len, "V cache")?);
        }
        Ok(KvCache {
            n_ctx,
            n_head_kv,
            head_dim_k,
            head_dim_v,
            k,
            v,
            tmp: alloc(head_dim_k, "KV staging")?,
            rope_cache: alloc(head_dim_k, "KV staging")?,
        })
    }

    /// Positions the cache holds.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Bytes held by keys and values.
    pub fn bytes(&self) -> usize {
        self.k.iter().chain(&self.v).map(|l| l.len() * 4).sum()
    }

    pub(crate) fn layer(&self, il: usize) -> LayerKv<'_> {
        LayerKv {
            n_ctx: self.n_ctx,
            n_head_kv: self.n_head_kv,
            head_dim_k: self.head_dim_k,
            head_dim_v: self.head_dim_v,
            k: &self.k[il],
            v: &self.v[il],
        }
    }

    /// Stores the keys `k` (`[n, n_head_kv * head_dim_k]`) and values `v` of `n` tokens at
    /// positions `pos0 ..` of layer `il`, rounded to f16.
    pub(crate) fn store(
        &mut self,
        il: usize,
        pos0: usize,
        n: usize,
        k: &[f32],
        v: &[f32],
    ) -> Result<()> {
        if pos0 + n > self.n_ctx {
            return Err(Error::ContextFull(format!(
                "positions {pos0}..{} do not fit in {}",
                pos0 + n,
                self.n_ctx
            )));
        }
        let kd = self.n_head_kv * self.head_dim_k;
        let vd = self.n_head_kv * self.head_dim_v;
        for (c, &x) in self.k[il][pos0 * kd..(pos0 + n) * kd]
            .iter_mut()
            .zip(&k[..n * kd])
        {
            *c = round_f16(x);
        }
        let vc = &mut self.v[il];
        for t in 0..n {
            for (i, &x) in v[t * vd..(t + 1) * vd].iter().enumerate() {
                vc[i * self.n_ctx + pos0 + t] = round_f16(x);
            }
        }
        Ok(())
    }

    /// llama.cpp's context shift on a cache holding `n_past` positions: drops positions
    /// `n_keep .. n_keep + n_discard`, moves the later ones down, and re-rotates their keys by
    /// `-n_discard` with each layer's RoPE (`llama_kv_cache::seq_rm` + `seq_add` + the K-shift
    /// graph, which ropes the f16 keys in place). `rope(il)` gives layer `il`'s configuration.
    pub(crate) fn shift<'r>(
        &mut self,
        n_past: usize,
        n_keep: usize,
        n_discard: usize,
        rope: impl Fn(usize) -> Rope<'r>,
    ) -> Result<()> {
        if n_discard == 0 || n_keep + n_discard > n_past || n_past > self.n_ctx {
            return Err(Error::InvalidArgument(format!(
                "context shift of {n_discard} after {n_keep} in {n_past} positions"
            )));
        }
        let (hk, hv, nkv) = (self.head_dim_k, self.head_dim_v, self.n_head_kv);
        let krow = nkv * hk;
        for il in 0..self.k.len() {
            let r = rope(il);
            if r.n_rot > hk {
                return Err(Error::InvalidArgument(format!(
                    "n_rot {} > head size {hk}",
                    r.n_rot
                )));
            }
            let cache = &mut self.rope_cache[..r.n_rot];
            r.cache(-(n_discard as f32), cache);
            let kc = &mut self.k[il];
            kc.copy_within((n_keep + n_discard) * krow..n_past * krow, n_keep * krow);
            for head in kc[n_keep * krow..(n_past - n_discard) * krow].chunks_exact_mut(hk) {
                let tmp = &mut self.tmp[..hk];
                tmp.copy_from_slice(head);
                r.apply(tmp, hk, cache);
                for (c, &x) in head.iter_mut().zip(tmp.iter()) {
                    *c = round_f16(x);
                }
            }
            let vc = &mut self.v[il];
            for i in 0..nkv * hv {
                let base = i * self.n_ctx;
                vc.copy_within(base + n_keep + n_discard..base + n_past, base + n_keep);
            }
        }
        Ok(())
    }
}
