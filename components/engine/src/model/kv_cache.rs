//! The per-session key/value cache, preallocated for `n_ctx` positions, stored in f16 as
//! llama.cpp's default cache is (`ggml_set_rows` of the f32 K/V into F16 tensors): rounding K and V
//! where llama.cpp rounds them is part of matching its numbers.
//!
//! Layout per layer, with cell index = position:
//! - K: `[n_ctx][n_head_kv][head_dim_k]` — one contiguous f16 row per (position, head), the rows
//!   `kq = K·q` walks.
//! - V: `[n_head_kv][head_dim_v][n_ctx]` — transposed (llama.cpp's `v_trans` layout without flash
//!   attention), so `kqv = V·p` is one contiguous dot product per output dimension.

use super::ops::{F16, Rope, alloc, mul};
use crate::quant::{self, GgmlType};
use crate::{Error, Result};

/// Keys and values of every layer for up to `n_ctx` positions.
pub struct KvCache {
    n_ctx: usize,
    n_head_kv: usize,
    head_dim_k: usize,
    head_dim_v: usize,
    k: Vec<Vec<u8>>,
    v: Vec<Vec<u8>>,
    /// f16 staging for one token's values, or one key row during a shift.
    tmp: Vec<u8>,
    tmp_f32: Vec<f32>,
    rope_cache: Vec<f32>,
}

/// One layer's view of the cache.
pub(crate) struct LayerKv<'a> {
    n_ctx: usize,
    n_head_kv: usize,
    row_k: usize,
    head_dim_v: usize,
    k: &'a [u8],
    v: &'a [u8],
}

impl LayerKv<'_> {
    /// The f16 key of kv-head `g` at position `p` (`head_dim_k` values).
    #[inline]
    pub fn k_row(&self, p: usize, g: usize) -> &[u8] {
        let hk = self.row_k;
        &self.k[(p * self.n_head_kv + g) * hk..][..hk]
    }

    /// Dimension `d` of kv-head `g`'s value at position `p`, as f32.
    #[inline]
    pub fn v_at(&self, g: usize, d: usize, p: usize) -> f32 {
        let i = ((g * self.head_dim_v + d) * self.n_ctx + p) * F16;
        half::f16::from_le_bytes([self.v[i], self.v[i + 1]]).to_f32()
    }

    /// Dimension `d` of kv-head `g`'s values at positions `start..end`, f16.
    #[inline]
    pub fn v_row(&self, g: usize, d: usize, start: usize, end: usize) -> &[u8] {
        let base = (g * self.head_dim_v + d) * self.n_ctx;
        &self.v[(base + start) * F16..(base + end) * F16]
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
        let k_bytes = mul(
            mul(mul(n_ctx, n_head_kv, "K cache")?, head_dim_k, "K cache")?,
            F16,
            "K cache",
        )?;
        let v_bytes = mul(
            mul(mul(n_ctx, n_head_kv, "V cache")?, head_dim_v, "V cache")?,
            F16,
            "V cache",
        )?;
        let mut k = Vec::new();
        let mut v = Vec::new();
        k.try_reserve_exact(n_layer)
            .and_then(|_| v.try_reserve_exact(n_layer))
            .map_err(|_| Error::OutOfMemory(format!("KV cache for {n_layer} layers")))?;
        for _ in 0..n_layer {
            k.push(alloc(k_bytes, "K cache")?);
            v.push(alloc(v_bytes, "V cache")?);
        }
        let tmp_len = mul(n_head_kv, head_dim_v.max(head_dim_k), "KV staging")?;
        Ok(KvCache {
            n_ctx,
            n_head_kv,
            head_dim_k,
            head_dim_v,
            k,
            v,
            tmp: alloc(mul(tmp_len, F16, "KV staging")?, "KV staging")?,
            tmp_f32: alloc(head_dim_k, "KV staging")?,
            rope_cache: alloc(head_dim_k, "KV staging")?,
        })
    }

    /// Positions the cache holds.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Bytes held by keys and values.
    pub fn bytes(&self) -> usize {
        self.k.iter().chain(&self.v).map(Vec::len).sum()
    }

    pub(crate) fn layer(&self, il: usize) -> LayerKv<'_> {
        LayerKv {
            n_ctx: self.n_ctx,
            n_head_kv: self.n_head_kv,
            row_k: self.head_dim_k * F16,
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
        let kc = &mut self.k[il];
        quant::quantize_row(
            GgmlType::F16,
            &k[..n * kd],
            &mut kc[pos0 * kd * F16..(pos0 + n) * kd * F16],
        )?;
        let vc = &mut self.v[il];
        for t in 0..n {
            let tmp = &mut self.tmp[..vd * F16];
            quant::quantize_row(GgmlType::F16, &v[t * vd..(t + 1) * vd], tmp)?;
            for (i, b) in tmp.chunks_exact(F16).enumerate() {
                let at = (i * self.n_ctx + pos0 + t) * F16;
                vc[at..at + F16].copy_from_slice(b);
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
        let krow = nkv * hk * F16;
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
            for p in n_keep..n_past - n_discard {
                for g in 0..nkv {
                    let at = p * krow + g * hk * F16;
                    let row = &mut kc[at..at + hk * F16];
                    quant::dequantize_row(GgmlType::F16, row, &mut self.tmp_f32[..hk])?;
                    r.apply(&mut self.tmp_f32[..hk], hk, cache);
                    quant::quantize_row(GgmlType::F16, &self.tmp_f32[..hk], row)?;
                }
            }
            let vc = &mut self.v[il];
            for i in 0..nkv * hv {
                let base = i * self.n_ctx;
                vc.copy_within(
                    (base + n_keep + n_discard) * F16..(base + n_past) * F16,
                    (base + n_keep) * F16,
                );
            }
        }
        Ok(())
    }
}
