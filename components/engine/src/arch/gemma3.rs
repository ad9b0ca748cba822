//! Gemma 3 (text): a port of llama.cpp's `llama_model_gemma3` (src/models/gemma3.cpp).
//!
//! Differences from Llama: embeddings scaled by sqrt(n_embd); RMSNorm on each query and key head
//! (QK-norm); RMSNorm after attention and after the feed-forward as well as before
//! ("sandwich" norms); GELU(tanh)-gated feed-forward; RoPE on split halves (NeoX) with base 10 000
//! on sliding-window layers and 1 000 000 on global ones; 5 of every 6 layers attend only to the
//! last `n_swa` positions; queries scaled by 1/sqrt(head_dim) before attention.
//!
//! The norm weights are used as stored: the GGUF converter already added Gemma's `1 +` to them.

use crate::Result;
use crate::gguf::names::Tn;
use crate::model::hparams::{HParams, RopeType};
use crate::model::ops::{self, AttnCfg, Rope};
use crate::model::weights::{Layers, Loader, Matrix, Qkv};
use crate::model::{Model, Rows, State, output_head};

/// One transformer block.
pub(crate) struct Layer {
    /// `[n_embd]`
    attn_norm: Vec<f32>,
    /// `[n_embd] → [n_head * head_dim]`, `[n_head_kv * head_dim]` ×2 (separate or fused)
    qkv: Qkv,
    /// `[head_dim]`, applied to every query head
    q_norm: Vec<f32>,
    /// `[head_dim]`, applied to every key head
    k_norm: Vec<f32>,
    /// `[n_head * head_dim] → [n_embd]`
    wo: Matrix,
    /// `[n_embd]`
    attn_post_norm: Vec<f32>,
    /// `[n_embd]`
    ffn_norm: Vec<f32>,
    /// `[n_embd] → [n_ff]`
    ffn_gate: Matrix,
    /// `[n_embd] → [n_ff]`
    ffn_up: Matrix,
    /// `[n_ff] → [n_embd]`
    ffn_down: Matrix,
    /// `[n_embd]`
    ffn_post_norm: Vec<f32>,
}

/// Gemma 3's weights besides the embeddings and head.
pub(crate) struct Weights {
    pub(crate) layers: Layers<Layer>,
}

/// Reads the tensors of `load_arch_tensors`, checking every shape.
pub(crate) fn load(ld: &mut Loader<'_>, hp: &HParams) -> Result<Weights> {
    // Each layer is read by a plain function: the layer cache may read it again later.
    let layers = Layers::load(ld, hp, |ld, hp, il| {
        let (d, ff, hd) = (hp.n_embd, hp.n_ff, hp.head_dim_k);
        let name = |t: Tn| t.layer(il, "weight");
        Ok(Layer {
            attn_norm: ld.vector(&name(Tn::AttnNorm), d)?,
            qkv: Qkv::load(ld, hp, il)?,
            q_norm: ld.vector(&name(Tn::AttnQNorm), hd)?,
            k_norm: ld.vector(&name(Tn::AttnKNorm), hd)?,
            wo: ld.matrix(&name(Tn::AttnOut), hp.attn_out_dim(), d)?,
            attn_post_norm: ld.vector(&name(Tn::AttnPostNorm), d)?,
            ffn_norm: ld.vector(&name(Tn::FfnNorm), d)?,
            ffn_gate: ld.matrix(&name(Tn::FfnGate), d, ff)?,
            ffn_up: ld.matrix(&name(Tn::FfnUp), d, ff)?,
            ffn_down: ld.matrix(&name(Tn::FfnDown), ff, d)?,
            ffn_post_norm: ld.vector(&name(Tn::FfnPostNorm), d)?,
        })
    })?;
    Ok(Weights { layers })
}

/// The RoPE of layer `il`: local (sliding-window) layers and global layers differ in base.
pub(crate) fn rope<'w>(hp: &HParams, _w: &'w Weights, il: usize, _n_ctx: usize) -> Rope<'w> {
    let (freq_base, freq_scale) = if hp.is_swa(il) {
        (hp.rope_freq_base_swa, hp.rope_freq_scale_swa)
    } else {
        (hp.rope_freq_base, hp.rope_freq_scale)
    };
    Rope {
        n_rot: hp.n_rot,
        ty: RopeType::Neox,
        freq_base,
        freq_scale,
        factors: None,
        attn_factor: hp.rope_attn_factor,
    }
}

/// Runs `tokens` (at positions `pos0..`) through the model, appending their keys and values to
/// the cache and writing the logits of `rows` to `logits`.
pub(crate) fn forward(
    m: &Model,
    w: &Weights,
    st: &mut State<'_>,
    tokens: &[u32],
    pos0: usize,
    rows: Rows,
    logits: &mut [f32],
) -> Result<()> {
    let hp = m.hparams();
    let State { kv, s, flash } = st;
    let n = tokens.len();
    let (d, hd, nr, ff) = (hp.n_embd, hp.head_dim_k, hp.n_rot, hp.n_ff);
    let (qd, kd, vd, ad) = (hp.q_dim(), hp.k_dim(), hp.v_dim(), hp.attn_out_dim());
    let eps = hp.rms_eps;
    let global_layer = (0..hp.n_layer).find(|&il| !hp.is_swa(il)).unwrap_or(0);
    let local_layer = (0..hp.n_layer).find(|&il| hp.is_swa(il)).unwrap_or(0);
    let (rope_global, rope_local) = (
        rope(hp, w, global_layer, kv.n_ctx()),
        rope(hp, w, local_layer, kv.n_ctx()),
    );

    // x = embeddings * sqrt(d): [n, d]
    m.embed(tokens, &mut s.x[..n * d], &mut s.row_buf)?;
    ops::scale(&mut s.x[..n * d], (d as f32).sqrt());
    // cos/sin of each position for global and local layers: [n, n_rot] each
    rope_global.table(pos0, n, &mut s.rope[..n * nr]);
    rope_local.table(pos0, n, &mut s.rope_swa[..n * nr]);

    for il in 0..hp.n_layer {
        let l = w.layers.get(il)?;
        let swa = hp.is_swa(il);
        let (rope, table) = if swa {
            (&rope_local, &s.rope_swa)
        } else {
            (&rope_global, &s.rope)
        };
        let attn = AttnCfg {
            n_head: hp.n_head,
            n_head_kv: hp.n_head_kv,
            head_dim_k: hd,
            head_dim_v: hp.head_dim_v,
            kq_scale: 1.0, // q is pre-scaled below
            softcap: None,
            window: if swa { hp.n_swa } else { 0 },
            flash: *flash,
        };

        // ---- self-attention ----
        // xn = rmsnorm(x) * attn_norm: [n, d]
        ops::rms_norm_to(&s.x[..n * d], &l.attn_norm, eps, &mut s.xn);
        // q = xn·Wq: [n, n_head*hd]; k = xn·Wk, v = xn·Wv: [n, n_head_kv*hd]
        s.acts.set(&s.xn, n, d)?;
        l.qkv
            .project(&mut s.acts, n, &mut s.qkv, &mut s.q, &mut s.k, &mut s.v)?;
        // QK-norm: rmsnorm over each head of q and k
        ops::rms_norm(&mut s.q[..n * qd], &l.q_norm, eps);
        ops::rms_norm(&mut s.k[..n * kd], &l.k_norm, eps);
        // rotate every head of q and k by its token's position (NeoX halves)
        for t in 0..n {
            let cs = &table[t * nr..(t + 1) * nr];
            rope.apply(&mut s.q[t * qd..(t + 1) * qd], hd, cs);
            rope.apply(&mut s.k[t * kd..(t + 1) * kd], hd, cs);
        }
        // q *= 1/sqrt(hd) (before attention, as gemma_pytorch does)
        ops::scale(&mut s.q[..n * qd], hp.attn_scale);
        // cache k and v (as f16) at positions pos0..pos0+n, then
        // att = softmax(q·Kᵀ + causal/window mask)·V: [n, n_head*hd]
        let qkv = (&s.q[..n * qd], &s.k[..n * kd], &s.v[..n * vd]);
        kv.attend(il, &attn, pos0, n, qkv, &mut s.attn, &mut s.att)?;
        // x += rmsnorm(att·Wo) * attn_post_norm: [n, d]
        s.acts.set(&s.att, n, ad)?;
        ops::matmul(&l.wo, &mut s.acts, &mut s.o)?;
        ops::rms_norm(&mut s.o[..n * d], &l.attn_post_norm, eps);
        ops::add_assign(&mut s.x[..n * d], &s.o[..n * d]);

        // ---- feed-forward (GeGLU) ----
        // xn = rmsnorm(x) * ffn_norm: [n, d]
        ops::rms_norm_to(&s.x[..n * d], &l.ffn_norm, eps, &mut s.xn);
        // gate = xn·Wgate, up = xn·Wup: [n, ff]
        s.acts.set(&s.xn, n, d)?;
        ops::matmul(&l.ffn_gate, &mut s.acts, &mut s.gate)?;
        ops::matmul(&l.ffn_up, &mut s.acts, &mut s.up)?;
        // h = gelu_tanh(gate) * up: [n, ff]
        ops::geglu(&mut s.gate[..n * ff], &s.up[..n * ff]);
        // x += rmsnorm(h·Wdown) * ffn_post_norm: [n, d]
        s.acts.set(&s.gate, n, ff)?;
        ops::matmul(&l.ffn_down, &mut s.acts, &mut s.o)?;
        ops::rms_norm(&mut s.o[..n * d], &l.ffn_post_norm, eps);
        ops::add_assign(&mut s.x[..n * d], &s.o[..n * d]);
    }

    // logits = rmsnorm(x) * output_norm · Wout: [rows, n_vocab], soft-capped if configured
    let n_out = output_head(m, s, n, rows, logits)?;
    if let Some(cap) = hp.final_softcap {
        ops::softcap(&mut logits[..n_out * hp.n_vocab], cap);
    }
    Ok(())
}
