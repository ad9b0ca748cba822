//! Phi-3: a port of llama.cpp's `llama_model_phi3` (src/models/phi3.cpp).
//!
//! Llama's pre-norm block with fused projections: one `attn_qkv` matrix for Q, K and V (separate
//! ones are read too) and one `ffn_up` matrix giving gate and up side by side; NeoX RoPE with the
//! "long" or "short" frequency factors of the file (long when the session's context exceeds the
//! original training context) and `rope.scaling.attn_factor`; queries scaled by 1/sqrt(head_dim)
//! before attention.

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
    /// `[n_embd] → [2 * n_ff]`: gate, then up
    ffn_up: Matrix,
    /// `[n_ff] → [n_embd]`
    ffn_down: Matrix,
}

/// Phi-3's weights besides the embeddings and head.
pub(crate) struct Weights {
    pub(crate) layers: Layers<Layer>,
    /// LongRoPE frequency divisors `[n_rot / 2]` for long and short contexts, if any.
    rope_long: Option<Vec<f32>>,
    rope_short: Option<Vec<f32>>,
}

/// Reads the tensors of `load_arch_tensors`, checking every shape.
pub(crate) fn load(ld: &mut Loader<'_>, hp: &HParams) -> Result<Weights> {
    let ff = hp.n_ff;
    let rope_long = ld.opt_vector(&Tn::RopeFactorsLong.weight(), hp.n_rot / 2)?;
    let rope_short = ld.opt_vector(&Tn::RopeFactorsShort.weight(), hp.n_rot / 2)?;
    // The fused gate+up output is twice as wide as the hidden layer.
    ld.ffn_width = ld.ffn_width.max(2 * ff);
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
            ffn_up: ld.matrix(&name(Tn::FfnUp), d, 2 * ff)?,
            ffn_down: ld.matrix(&name(Tn::FfnDown), ff, d)?,
        })
    })?;
    Ok(Weights {
        layers,
        rope_long,
        rope_short,
    })
}

/// The RoPE of layer `il` in a context of `n_ctx` (`llama_model::get_rope_factors`). llama.cpp
/// compares the context it actually allocates, `n_ctx` rounded up to a multiple of 256
/// (`llama_context::llama_context`: `GGML_PAD(n_ctx, 256)`), so this does too.
pub(crate) fn rope<'w>(hp: &HParams, w: &'w Weights, _il: usize, n_ctx: usize) -> Rope<'w> {
    let factors = if n_ctx.next_multiple_of(256) > hp.n_ctx_orig {
        w.rope_long.as_deref()
    } else {
        w.rope_short.as_deref()
    };
    Rope {
        n_rot: hp.n_rot,
        ty: hp.rope_type,
        freq_base: hp.rope_freq_base,
        freq_scale: hp.rope_freq_scale,
        factors,
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
        kq_scale: 1.0, // q is pre-scaled below
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
        // q *= 1/sqrt(hd)
        g.op(Op::scale(Q, hp.attn_scale))?;
        // cache k and v (as f16) at positions pos0..pos0+n, then
        // att = softmax(q·Kᵀ + causal mask)·V: [n, n_head*hd]
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
        // [gate | up] = xn·Wup: [n, 2*ff]
        g.op(Op::matmul(Gate, Xn, &l.ffn_up))?;
        // h = silu(gate) * up: [n, ff] (in up; ggml_swiglu on the fused halves)
        g.op(Op::Glu(Glu::SiluFused))?;
        // x += h·Wdown: [n, d]
        g.op(Op::matmul(O, Up, &l.ffn_down))?;
        g.op(Op::add(X, O))?;
    }

    // logits = rmsnorm(x) * output_norm · Wout: [rows, n_vocab]
    g.op(output_head(m, None))
}
