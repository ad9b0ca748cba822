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

use super::device::DeviceKv;
use super::ops::{AttnCfg, AttnPart, AttnScratch, Rope, alloc, mul, round_f16, round_f16_into};
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

/// How a cache is shaped: layers, positions, and the key/value heads of one position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvShape {
    pub n_layer: usize,
    pub n_ctx: usize,
    pub n_head_kv: usize,
    pub head_dim_k: usize,
    pub head_dim_v: usize,
}

impl KvShape {
    /// Bytes a [`KvCache`] of this shape holds, or an error if that overflows.
    pub fn bytes(&self) -> Result<usize> {
        let per_pos = self
            .n_head_kv
            .checked_mul(self.head_dim_k + self.head_dim_v);
        per_pos
            .and_then(|p| p.checked_mul(self.n_ctx))
            .and_then(|p| p.checked_mul(self.n_layer))
            .and_then(|p| p.checked_mul(4))
            .ok_or_else(|| Error::OutOfMemory(format!("KV cache of {self:?}")))
    }
}

impl KvCache {
    /// A zeroed cache of `shape`.
    pub fn new(shape: &KvShape) -> Result<KvCache> {
        let KvShape {
            n_layer,
            n_ctx,
            n_head_kv,
            head_dim_k,
            head_dim_v,
        } = *shape;
        if n_head_kv == 0 || head_dim_k == 0 || head_dim_v == 0 {
            return Err(Error::InvalidArgument(format!("KV cache of {shape:?}")));
        }
        shape.bytes()?;
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

    /// The shape of this cache.
    pub fn shape(&self) -> KvShape {
        KvShape {
            n_layer: self.k.len(),
            n_ctx: self.n_ctx,
            n_head_kv: self.n_head_kv,
            head_dim_k: self.head_dim_k,
            head_dim_v: self.head_dim_v,
        }
    }

    /// Checks that `cfg` attends over this cache's heads, `n` queries at `pos0 ..` of layer
    /// `il`, with `q` (`[n, n_head * head_dim_k]`), `k` and `v` (`[n, n_head_kv * head_dim]`)
    /// of their sizes: what [`KvCache::store`] and [`KvCache::attend`] rely on.
    #[allow(clippy::too_many_arguments)]
    pub fn check(
        &self,
        il: usize,
        cfg: &AttnCfg,
        pos0: usize,
        n: usize,
        q: &[f32],
        k: &[f32],
        v: &[f32],
    ) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidArgument(m));
        if il >= self.k.len() {
            return bad(format!("layer {il} of a {}-layer KV cache", self.k.len()));
        }
        if (cfg.n_head_kv, cfg.head_dim_k, cfg.head_dim_v)
            != (self.n_head_kv, self.head_dim_k, self.head_dim_v)
        {
            return bad(format!(
                "attention {cfg:?} over a KV cache of {:?}",
                self.shape()
            ));
        }
        if cfg.n_head == 0 || !cfg.n_head.is_multiple_of(cfg.n_head_kv) {
            return bad(format!(
                "{} query heads over {} key/value heads",
                cfg.n_head, cfg.n_head_kv
            ));
        }
        if pos0.checked_add(n).is_none_or(|end| end > self.n_ctx) {
            return Err(Error::ContextFull(format!(
                "{n} positions from {pos0} do not fit in {}",
                self.n_ctx
            )));
        }
        let sizes = [
            ("queries", q.len(), cfg.n_head, self.head_dim_k),
            ("keys", k.len(), self.n_head_kv, self.head_dim_k),
            ("values", v.len(), self.n_head_kv, self.head_dim_v),
        ];
        for (what, len, heads, dim) in sizes {
            if Some(len) != n.checked_mul(heads).and_then(|x| x.checked_mul(dim)) {
                return bad(format!(
                    "{len} {what} for {n} tokens of {heads} heads of {dim}"
                ));
            }
        }
        Ok(())
    }

    /// Attention of the batch of `n` queries `q` at positions `pos0 ..` over layer `il` (which
    /// holds their keys and values already), for the tokens and heads of `part`: `out` is
    /// `[part.tokens.len(), part.heads.len() * head_dim_v]`. See [`super::ops::attention`].
    #[allow(clippy::too_many_arguments)]
    pub fn attend(
        &self,
        il: usize,
        cfg: &AttnCfg,
        q: &[f32],
        pos0: usize,
        n: usize,
        part: &AttnPart,
        s: &mut AttnScratch,
        out: &mut [f32],
    ) -> Result<()> {
        let fits = il < self.k.len()
            && (cfg.n_head_kv, cfg.head_dim_k, cfg.head_dim_v)
                == (self.n_head_kv, self.head_dim_k, self.head_dim_v)
            && cfg.n_head.is_multiple_of(cfg.n_head_kv)
            && part.heads.start <= part.heads.end
            && part.heads.end <= cfg.n_head
            && part.tokens.start <= part.tokens.end
            && part.tokens.end <= n
            && pos0.checked_add(n).is_some_and(|end| end <= self.n_ctx)
            && n.checked_mul(cfg.n_head)
                .and_then(|x| x.checked_mul(cfg.head_dim_k))
                .is_some_and(|len| q.len() >= len)
            && part
                .tokens
                .len()
                .checked_mul(part.heads.len())
                .and_then(|x| x.checked_mul(cfg.head_dim_v))
                .is_some_and(|len| out.len() >= len)
            && s.fits(self.n_ctx, cfg.head_dim_k, cfg.head_dim_v);
        if !fits {
            return Err(Error::InvalidArgument(format!(
                "attention {cfg:?} of {part:?} of {n} queries at {pos0} in layer {il} \
                 over a KV cache of {:?}",
                self.shape()
            )));
        }
        super::ops::attention(cfg, &self.layer(il), q, pos0, n, part, s, out)
    }

    /// Positions the cache holds.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Bytes held by keys and values.
    pub fn bytes(&self) -> usize {
        self.k.iter().chain(&self.v).map(|l| l.len() * 4).sum()
    }

    fn layer(&self, il: usize) -> LayerKv<'_> {
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
    pub fn store(&mut self, il: usize, pos0: usize, n: usize, k: &[f32], v: &[f32]) -> Result<()> {
        if pos0.checked_add(n).is_none_or(|end| end > self.n_ctx) {
            return Err(Error::ContextFull(format!(
                "{n} positions from {pos0} do not fit in {}",
                self.n_ctx
            )));
        }
        let kd = self.n_head_kv * self.head_dim_k;
        let vd = self.n_head_kv * self.head_dim_v;
        // n <= n_ctx here, and n_ctx * kd is the size of an allocated layer: no overflow.
        if il >= self.k.len() || k.len() < n * kd || v.len() < n * vd {
            return Err(Error::InvalidArgument(format!(
                "{} keys and {} values for {n} tokens of layer {il}",
                k.len(),
                v.len()
            )));
        }
        round_f16_into(&k[..n * kd], &mut self.k[il][pos0 * kd..(pos0 + n) * kd]);
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
    pub fn shift<'r>(
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
            r.check(hk)?;
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

/// A session's cache, wherever it is held: in this engine's memory, or on the compute device
/// that holds the weights (which then also computes the attention over it).
pub(crate) struct Kv {
    shape: KvShape,
    place: Place,
}

enum Place {
    Local(KvCache),
    Device(Box<dyn DeviceKv>),
}

impl Kv {
    pub fn local(cache: KvCache) -> Kv {
        Kv {
            shape: cache.shape(),
            place: Place::Local(cache),
        }
    }

    pub fn device(shape: KvShape, cache: Box<dyn DeviceKv>) -> Kv {
        Kv {
            shape,
            place: Place::Device(cache),
        }
    }

    /// The cache on the compute device, if it is there.
    pub fn device_mut(&mut self) -> Option<&mut dyn DeviceKv> {
        match &mut self.place {
            Place::Device(d) => Some(&mut **d),
            Place::Local(_) => None,
        }
    }

    /// Whether the compute device holds this cache.
    pub fn on_device(&self) -> bool {
        matches!(self.place, Place::Device(_))
    }

    /// Stores the keys `k` and values `v` of `n` tokens at positions `pos0 ..` of layer `il`,
    /// then attends with their queries `q`: `out` is `[n, n_head * head_dim_v]`.
    #[allow(clippy::too_many_arguments)]
    pub fn attend(
        &mut self,
        il: usize,
        cfg: &AttnCfg,
        pos0: usize,
        n: usize,
        (q, k, v): (&[f32], &[f32], &[f32]),
        s: &mut AttnScratch,
        out: &mut [f32],
    ) -> Result<()> {
        let hv = cfg.head_dim_v;
        let out = &mut out[..n * cfg.n_head * hv];
        match &mut self.place {
            Place::Local(c) => {
                c.store(il, pos0, n, k, v)?;
                c.attend(il, cfg, q, pos0, n, &AttnPart::all(n, cfg.n_head), s, out)
            }
            Place::Device(d) => d.attend(il, cfg, pos0, n, q, k, v, out),
        }
    }

    /// See [`KvCache::shift`].
    pub fn shift<'r>(
        &mut self,
        n_past: usize,
        n_keep: usize,
        n_discard: usize,
        rope: impl Fn(usize) -> Rope<'r>,
    ) -> Result<()> {
        match &mut self.place {
            Place::Local(c) => c.shift(n_past, n_keep, n_discard, rope),
            Place::Device(d) => {
                let ropes: Vec<Rope<'r>> = (0..self.shape.n_layer).map(rope).collect();
                d.shift(n_past, n_keep, n_discard, &ropes)
            }
        }
    }
}
