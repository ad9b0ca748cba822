//! Llama (Llama 2/3, SmolLM, Mistral-style dense models): a port of llama.cpp's
//! `llama_model_llama` (src/models/llama.cpp). Qwen 2 runs through here too: llama.cpp's
//! `llama_model_qwen2` is this graph with Q/K/V biases (which `Qkv` reads where present) and
//! NeoX RoPE.
//!
//! Per layer: RMSNorm → Q/K/V projections → RoPE (adjacent pairs for llama, halves for Qwen 2;
//! Llama 3 frequency factors from `rope_freqs.weight`) → grouped-query causal attention → output
//! projection → residual; then RMSNorm → SwiGLU feed-forward → residual. Final RMSNorm and the
//! (possibly tied) output matrix.

use crate::Result;
use crate::gguf::names::Tn;
use crate::model::hparams::HParams;
use crate::model::ops::{self, AttnCfg, Rope};
use crate::model::weights::{Layers, Loader, Matrix, Qkv};
use crate::model::{Model, Rows, State, output_head};

/// One transformer block.
pub(crate) struct Layer {
    /// `[n_embd]`
    attn_norm: Vec<f32>,
    /// `[n_embd] → [n_head * head_dim]`, `[n_head_kv * head_dim]` ×2 (separate or fused;
    /// optional biases)
    qkv: Qkv,
    /// `[n_head * head_dim] → [n_embd]`, optional bias
    wo: Matrix,
    wo_b: Option<Vec<f32>>,
    /// `[n_embd]`
    ffn_norm: Vec<f32>,
    /// `[n_embd] → [n_ff]`
    ffn_gate: Matrix,
    /// `[n_embd] → [n_ff]`
    ffn_up: Matrix,
    /// `[n_ff] → [n_embd]`
    ffn_down: Matrix,
}

/// Llama's weights besides the embeddings and head.
pub(crate) struct Weights {
    pub(crate) layers: Layers<Layer>,
    /// Llama 3 RoPE frequency divisors `[n_rot / 2]`, shared by all layers.
    rope_freqs: Option<Vec<f32>>,
}

/// Reads the tensors of `load_arch_tensors`, checking every shape.
pub(crate) fn load(ld: &mut Loader<'_>, hp: &HParams) -> Result<Weights> {
    let rope_freqs = ld.opt_vector(&Tn::RopeFreqs.weight(), hp.n_rot / 2)?;
    // Each layer is read by a plain function: the layer cache may read it again later.
    let layers = Layers::load(ld, hp, |ld, hp, il| {
        let (d, ff) = (hp.n_embd, hp.n_ff);
        let name = |t: Tn| t.layer(il, "weight");
        Ok(Layer {
            attn_norm: ld.vector(&name(Tn::AttnNorm), d)?,
            qkv: Qkv::load(ld, hp, il)?,
            wo: ld.matrix(&name(Tn::AttnOut), hp.attn_out_dim(), d)?,
            wo_b: ld.opt_vector(&Tn::AttnOut.layer(il, "bias"), d)?,
            ffn_norm: ld.vector(&name(Tn::FfnNorm), d)?,
            ffn_gate: ld.matrix(&name(Tn::FfnGate), d, ff)?,
            ffn_up: ld.matrix(&name(Tn::FfnUp), d, ff)?,
            ffn_down: ld.matrix(&name(Tn::FfnDown), ff, d)?,
        })
    })?;
    Ok(Weights { layers, rope_freqs })
}

/// The RoPE of layer `il` (the same for all layers).
pub(crate) fn rope<'w>(hp: &HParams, w: &'w Weights, _il: usize, _n_ctx: usize) -> Rope<'w> {
    Rope {
        n_rot: hp.n_rot,
        ty: hp.rope_type,
        freq_base: hp.rope_freq_base,
        freq_scale: hp.rope_freq_scale,
        factors: w.rope_freqs.as_deref(),
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
    let rope = rope(hp, w, 0, kv.n_ctx());
    let attn = AttnCfg {
        n_head: hp.n_head,
        n_head_kv: hp.n_head_kv,
        head_dim_k: hd,
        head_dim_v: hp.head_dim_v,
        kq_scale: hp.attn_scale, // 1/sqrt(head_dim)
        softcap: None,
        window: 0,
        flash: *flash,
    };

    // x = embeddings of the tokens: [n, d]
    m.embed(tokens, &mut s.x[..n * d], &mut s.row_buf)?;
    // cos/sin of each position: [n, n_rot]
    rope.table(pos0, n, &mut s.rope[..n * nr]);

    for il in 0..hp.n_layer {
        let l = w.layers.get(il)?;

        // ---- self-attention ----
        // xn = rmsnorm(x) * attn_norm: [n, d]
        ops::rms_norm_to(&s.x[..n * d], &l.attn_norm, eps, &mut s.xn);
        // q = xn·Wq: [n, n_head*hd]; k = xn·Wk, v = xn·Wv: [n, n_head_kv*hd]
        s.acts.set(&s.xn, n, d)?;
        l.qkv
            .project(&mut s.acts, n, &mut s.qkv, &mut s.q, &mut s.k, &mut s.v)?;
        // rotate every head of q and k by its token's position
        for t in 0..n {
            let cs = &s.rope[t * nr..(t + 1) * nr];
            rope.apply(&mut s.q[t * qd..(t + 1) * qd], hd, cs);
            rope.apply(&mut s.k[t * kd..(t + 1) * kd], hd, cs);
        }
        // cache k and v (as f16) at positions pos0..pos0+n, then
        // att = softmax(q·Kᵀ/sqrt(hd) + causal mask)·V: [n, n_head*hd]
        let qkv = (&s.q[..n * qd], &s.k[..n * kd], &s.v[..n * vd]);
        kv.attend(il, &attn, pos0, n, qkv, &mut s.attn, &mut s.att)?;
        // x += att·Wo: [n, d]
        s.acts.set(&s.att, n, ad)?;
        ops::matmul(&l.wo, &mut s.acts, &mut s.o)?;
        if let Some(b) = &l.wo_b {
            ops::add_bias(&mut s.o[..n * d], b);
        }
        ops::add_assign(&mut s.x[..n * d], &s.o[..n * d]);

        // ---- feed-forward (SwiGLU) ----
        // xn = rmsnorm(x) * ffn_norm: [n, d]
        ops::rms_norm_to(&s.x[..n * d], &l.ffn_norm, eps, &mut s.xn);
        // gate = xn·Wgate, up = xn·Wup: [n, ff]
        s.acts.set(&s.xn, n, d)?;
        ops::matmul(&l.ffn_gate, &mut s.acts, &mut s.gate)?;
        ops::matmul(&l.ffn_up, &mut s.acts, &mut s.up)?;
        // h = silu(gate) * up: [n, ff]
        ops::swiglu(&mut s.gate[..n * ff], &s.up[..n * ff]);
        // x += h·Wdown: [n, d]
        s.acts.set(&s.gate, n, ff)?;
        ops::matmul(&l.ffn_down, &mut s.acts, &mut s.o)?;
        ops::add_assign(&mut s.x[..n * d], &s.o[..n * d]);
    }

    // logits = rmsnorm(x) * output_norm · Wout: [rows, n_vocab]
    output_head(m, s, n, rows, logits)?;
    Ok(())
}
