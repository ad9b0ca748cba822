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
use crate::model::graph::{Buf, Emit, Glu, Op};
use crate::model::hparams::HParams;
use crate::model::ops::{AttnCfg, Rope};
use crate::model::weights::{Layers, Loader, Matrix, Qkv};
use crate::model::{Model, output_head};

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

/// The operations of one forward step (see [`crate::model::graph`]): from the token embeddings
/// in `x` through every layer to the logits, storing each layer's keys and values in the cache.
pub(crate) fn emit<'w>(
    m: &'w Model,
    w: &'w Weights,
    g: &mut impl Emit<'w>,
    n_ctx: usize,
    flash: bool,
) -> Result<()> {
    use Buf::*;
    let hp = m.hparams();
    let (hd, eps) = (hp.head_dim_k, hp.rms_eps);
    let rope = g.rope(rope(hp, w, 0, n_ctx))?;
    let attn = AttnCfg {
        n_head: hp.n_head,
        n_head_kv: hp.n_head_kv,
        head_dim_k: hd,
        head_dim_v: hp.head_dim_v,
        kq_scale: hp.attn_scale, // 1/sqrt(head_dim)
        softcap: None,
        window: 0,
        flash,
    };

    for il in 0..hp.n_layer {
        let l = w.layers.get(il)?;

        // ---- self-attention ----
        // xn = rmsnorm(x) * attn_norm: [n, d]
        g.op(Op::rms_norm(Xn, X, &l.attn_norm, eps))?;
        // q = xn·Wq: [n, n_head*hd]; k = xn·Wk, v = xn·Wv: [n, n_head_kv*hd]
        l.qkv.emit(g)?;
        // rotate every head of q and k by its token's position
        g.op(Op::rope(Q, rope, hd))?;
        g.op(Op::rope(K, rope, hd))?;
        // cache k and v (as f16) at positions pos0..pos0+n, then
        // att = softmax(q·Kᵀ/sqrt(hd) + causal mask)·V: [n, n_head*hd]
        g.op(Op::attend(il, attn))?;
        // x += att·Wo (+ bo): [n, d]
        g.op(Op::matmul(O, Att, &l.wo))?;
        if let Some(b) = &l.wo_b {
            g.op(Op::add_bias(O, b))?;
        }
        g.op(Op::add(X, O))?;

        // ---- feed-forward (SwiGLU) ----
        // xn = rmsnorm(x) * ffn_norm: [n, d]
        g.op(Op::rms_norm(Xn, X, &l.ffn_norm, eps))?;
        // gate = xn·Wgate, up = xn·Wup: [n, ff]
        g.op(Op::matmul(Gate, Xn, &l.ffn_gate))?;
        g.op(Op::matmul(Up, Xn, &l.ffn_up))?;
        // h = silu(gate) * up: [n, ff] (in gate)
        g.op(Op::Glu(Glu::Silu))?;
        // x += h·Wdown: [n, d]
        g.op(Op::matmul(O, Gate, &l.ffn_down))?;
        g.op(Op::add(X, O))?;
    }

    // logits = rmsnorm(x) * output_norm · Wout: [rows, n_vocab]
    g.op(output_head(m, None))
}
