//! Gemma 2: a port of llama.cpp's `llama_model_gemma2` (src/models/gemma2.cpp).
//!
//! Gemma 3's block without QK-norm, with soft-capping: attention logits `50·tanh(x/50)` and
//! output logits `30·tanh(x/30)` (or the values in the file). Every other layer attends through
//! a sliding window of 4096. Embeddings scaled by sqrt(n_embd), sandwich RMSNorms, NeoX RoPE,
//! GELU(tanh)-gated feed-forward, queries scaled before attention. Norm weights are used as stored
//! (the converter added Gemma's `1 +`).

use crate::Result;
use crate::gguf::names::Tn;
use crate::model::graph::{Buf, Emit, Glu, Op};
use crate::model::hparams::{HParams, RopeType};
use crate::model::ops::{AttnCfg, Rope};
use crate::model::weights::{Layers, Loader, Matrix, Qkv};
use crate::model::{Model, output_head};

/// One transformer block.
pub(crate) struct Layer {
    /// `[n_embd]`
    attn_norm: Vec<f32>,
    /// `[n_embd] → [n_head * head_dim]`, `[n_head_kv * head_dim]` ×2 (separate or fused)
    qkv: Qkv,
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

/// Gemma 2's weights besides the embeddings and head.
pub(crate) struct Weights {
    pub(crate) layers: Layers<Layer>,
}

/// Reads the tensors of `load_arch_tensors`, checking every shape.
pub(crate) fn load(ld: &mut Loader<'_>, hp: &HParams) -> Result<Weights> {
    // Each layer is read by a plain function: the layer cache may read it again later.
    let layers = Layers::load(ld, hp, |ld, hp, il| {
        let (d, ff) = (hp.n_embd, hp.n_ff);
        let name = |t: Tn| t.layer(il, "weight");
        Ok(Layer {
            attn_norm: ld.vector(&name(Tn::AttnNorm), d)?,
            qkv: Qkv::load(ld, hp, il)?,
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
    let global_layer = (0..hp.n_layer).find(|&il| !hp.is_swa(il)).unwrap_or(0);
    let local_layer = (0..hp.n_layer).find(|&il| hp.is_swa(il)).unwrap_or(0);
    // cos/sin of each position for global and local layers: [n, n_rot] each
    let rope_global = g.rope(rope(hp, w, global_layer, n_ctx))?;
    let rope_local = g.rope(rope(hp, w, local_layer, n_ctx))?;

    // x = embeddings * sqrt(d): [n, d]
    g.op(Op::scale(X, (hp.n_embd as f32).sqrt()))?;

    for il in 0..hp.n_layer {
        let l = w.layers.get(il)?;
        let swa = hp.is_swa(il);
        let rope = if swa { rope_local } else { rope_global };
        let attn = AttnCfg {
            n_head: hp.n_head,
            n_head_kv: hp.n_head_kv,
            head_dim_k: hd,
            head_dim_v: hp.head_dim_v,
            kq_scale: 1.0, // q is pre-scaled below
            softcap: hp.attn_softcap,
            window: if swa { hp.n_swa } else { 0 },
            flash,
        };

        // ---- self-attention ----
        // xn = rmsnorm(x) * attn_norm: [n, d]
        g.op(Op::rms_norm(Xn, X, &l.attn_norm, eps))?;
        // q = xn·Wq: [n, n_head*hd]; k = xn·Wk, v = xn·Wv: [n, n_head_kv*hd]
        l.qkv.emit(g)?;
        // rotate every head of q and k by its token's position (NeoX halves)
        g.op(Op::rope(Q, rope, hd))?;
        g.op(Op::rope(K, rope, hd))?;
        // q *= 1/sqrt(hd) (before attention, as gemma_pytorch does)
        g.op(Op::scale(Q, hp.attn_scale))?;
        // cache k and v (as f16) at positions pos0..pos0+n, then
        // att = softmax(softcap(q·Kᵀ) + causal/window mask)·V: [n, n_head*hd]
        g.op(Op::attend(il, attn))?;
        // x += rmsnorm(att·Wo) * attn_post_norm: [n, d]
        g.op(Op::matmul(O, Att, &l.wo))?;
        g.op(Op::rms_norm(O, O, &l.attn_post_norm, eps))?;
        g.op(Op::add(X, O))?;

        // ---- feed-forward (GeGLU) ----
        // xn = rmsnorm(x) * ffn_norm: [n, d]
        g.op(Op::rms_norm(Xn, X, &l.ffn_norm, eps))?;
        // gate = xn·Wgate, up = xn·Wup: [n, ff]
        g.op(Op::matmul(Gate, Xn, &l.ffn_gate))?;
        g.op(Op::matmul(Up, Xn, &l.ffn_up))?;
        // h = gelu_tanh(gate) * up: [n, ff] (in gate)
        g.op(Op::Glu(Glu::GeluTanh))?;
        // x += rmsnorm(h·Wdown) * ffn_post_norm: [n, d]
        g.op(Op::matmul(O, Gate, &l.ffn_down))?;
        g.op(Op::rms_norm(O, O, &l.ffn_post_norm, eps))?;
        g.op(Op::add(X, O))?;
    }

    // logits = rmsnorm(x) * output_norm · Wout: [rows, n_vocab], soft-capped if configured
    g.op(output_head(m, hp.final_softcap))
}
