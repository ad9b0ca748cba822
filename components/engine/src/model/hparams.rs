//! Typed hyperparameters, read once from the GGUF metadata and checked.
//!
//! Ported from llama.cpp's `llama_model_base::load_hparams` (src/llama-model.cpp) and each
//! architecture's `load_arch_hparams` (src/models/<arch>.cpp). Every number the forward pass uses to
//! size a buffer or index a tensor is validated here, so a hostile file gives an
//! [`Error::InvalidModel`] instead of a panic or a giant allocation.

use crate::gguf::Gguf;
use crate::gguf::names::Kv;
use crate::{Error, Result};

/// Upper bounds that no real model reaches; they keep products of dimensions far from overflow.
const MAX_LAYERS: usize = 512; // llama.cpp's LLAMA_MAX_LAYERS
const MAX_EMBD: usize = 1 << 17;
const MAX_HEADS: usize = 1 << 12;
const MAX_HEAD_DIM: usize = 1 << 12;
const MAX_FF: usize = 1 << 20;
const MAX_VOCAB: usize = 1 << 24;

/// Architectures with a forward pass in this engine (`general.architecture`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    /// Llama 1/2/3, SmolLM, Mistral-style dense models.
    Llama,
    /// Qwen 2 / 2.5 (llama with Q/K/V biases, NeoX RoPE).
    Qwen2,
    /// Qwen 3 dense (QK-norm, NeoX RoPE).
    Qwen3,
    /// Phi-3 (fused QKV and gate/up projections).
    Phi3,
    /// Gemma (1).
    Gemma,
    /// Gemma 2 (sandwich norms, soft-capping, alternating sliding window).
    Gemma2,
    /// Gemma 3 text (QK-norm, sandwich norms, 5:1 local/global attention).
    Gemma3,
}

impl Arch {
    /// Every supported architecture.
    pub const ALL: [Arch; 7] = [
        Arch::Llama,
        Arch::Qwen2,
        Arch::Qwen3,
        Arch::Phi3,
        Arch::Gemma,
        Arch::Gemma2,
        Arch::Gemma3,
    ];

    /// The architecture named `name` in `general.architecture`.
    pub fn from_name(name: &str) -> Result<Arch> {
        Arch::ALL
            .into_iter()
            .find(|a| a.name() == name)
            .ok_or_else(|| Error::Unsupported(format!("architecture {name:?}")))
    }

    /// The GGUF name (also the metadata key prefix).
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Phi3 => "phi3",
            Arch::Gemma => "gemma",
            Arch::Gemma2 => "gemma2",
            Arch::Gemma3 => "gemma3",
        }
    }

    /// How this architecture pairs the dimensions it rotates (`llama_model_rope_type`).
    pub fn rope_type(self) -> RopeType {
        match self {
            Arch::Llama => RopeType::Normal,
            _ => RopeType::Neox,
        }
    }
}

/// RoPE dimension pairing, as in ggml's `GGML_ROPE_TYPE_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeType {
    /// Adjacent pairs `(x[2i], x[2i+1])` (original Llama / GPT-J style).
    Normal,
    /// Split halves `(x[i], x[i + n_rot/2])` (GPT-NeoX style).
    Neox,
}

/// The hyperparameters of a model, in the units the forward pass uses.
#[derive(Debug, Clone, PartialEq)]
pub struct HParams {
    /// Architecture.
    pub arch: Arch,
    /// Vocabulary size (rows of the token embedding).
    pub n_vocab: usize,
    /// Context length the model was trained with.
    pub n_ctx_train: usize,
    /// Width of the residual stream.
    pub n_embd: usize,
    /// Number of transformer blocks.
    pub n_layer: usize,
    /// Hidden width of the feed-forward network.
    pub n_ff: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads (`n_head` is a multiple of it: grouped-query attention).
    pub n_head_kv: usize,
    /// Width of one key (and query) head.
    pub head_dim_k: usize,
    /// Width of one value head.
    pub head_dim_v: usize,
    /// Number of leading dimensions of each head that RoPE rotates.
    pub n_rot: usize,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// RoPE pairing.
    pub rope_type: RopeType,
    /// RoPE base frequency of full-attention layers.
    pub rope_freq_base: f32,
    /// RoPE linear position scale of full-attention layers (1 / `rope.scaling.factor`).
    pub rope_freq_scale: f32,
    /// RoPE base frequency of sliding-window layers.
    pub rope_freq_base_swa: f32,
    /// RoPE position scale of sliding-window layers.
    pub rope_freq_scale_swa: f32,
    /// Magnitude factor on RoPE's cos and sin (`rope.scaling.attn_factor`, usually 1).
    pub rope_attn_factor: f32,
    /// The context the model was trained with before any RoPE extension (selects Phi-3's
    /// long or short RoPE factors).
    pub n_ctx_orig: usize,
    /// Sliding-window size in tokens; 0 when no layer uses one.
    pub n_swa: usize,
    /// Per layer: whether it attends through the sliding window.
    pub swa_layers: Vec<bool>,
    /// Factor applied to the query·key dot products (usually `1/sqrt(head_dim_k)`).
    pub attn_scale: f32,
    /// Soft-cap of attention logits (`cap * tanh(x / cap)`), if any.
    pub attn_softcap: Option<f32>,
    /// Soft-cap of output logits, if any.
    pub final_softcap: Option<f32>,
}

impl HParams {
    /// Reads and checks the hyperparameters in `gguf`'s metadata.
    pub fn from_gguf(gguf: &Gguf) -> Result<HParams> {
        let arch = Arch::from_name(gguf.architecture()?)?;
        let md = &gguf.metadata;
        let a = arch.name();
        let key = |k: Kv| k.key(a);
        let req_usize = |k: Kv| -> Result<usize> {
            let name = key(k);
            md.require(&name, md.get_int::<usize>(&name))
        };
        let opt_usize = |k: Kv| -> Result<Option<usize>> {
            let name = key(k);
            // Per-layer arrays (llama.cpp's get_key_or_arr) are not supported yet.
            if let Some(crate::gguf::Value::Array(_)) = md.get(&name) {
                return Err(Error::Unsupported(format!(
                    "per-layer values for {name} (an array)"
                )));
            }
            md.get_int::<usize>(&name)
        };
        let opt_f32 = |k: Kv| md.get_f32(&key(k));

        let n_ctx_train = req_usize(Kv::ContextLength)?;
        let n_embd = req_usize(Kv::EmbeddingLength)?;
        let n_layer = req_usize(Kv::BlockCount)?;
        let n_ff = opt_usize(Kv::FeedForwardLength)?.unwrap_or(0);
        let n_head = opt_usize(Kv::AttentionHeadCount)?.unwrap_or(0);
        let n_head_kv = opt_usize(Kv::AttentionHeadCountKv)?.unwrap_or(n_head);

        check_range("context_length", n_ctx_train, 1, usize::MAX)?;
        check_range("embedding_length", n_embd, 1, MAX_EMBD)?;
        check_range("block_count", n_layer, 1, MAX_LAYERS)?;
        check_range("feed_forward_length", n_ff, 1, MAX_FF)?;
        check_range("attention.head_count", n_head, 1, MAX_HEADS)?;
        if n_head_kv == 0 || !n_head.is_multiple_of(n_head_kv) {
            return Err(Error::InvalidModel(format!(
                "attention.head_count {n_head} is not a multiple of attention.head_count_kv {n_head_kv}"
            )));
        }

        let head_dim_k = opt_usize(Kv::AttentionKeyLength)?.unwrap_or(n_embd / n_head);
        let head_dim_v = opt_usize(Kv::AttentionValueLength)?.unwrap_or(n_embd / n_head);
        check_range("attention.key_length", head_dim_k, 1, MAX_HEAD_DIM)?;
        check_range("attention.value_length", head_dim_v, 1, MAX_HEAD_DIM)?;
        let n_rot = opt_usize(Kv::RopeDimensionCount)?.unwrap_or(head_dim_k);
        if n_rot == 0 || n_rot > head_dim_k || !n_rot.is_multiple_of(2) {
            return Err(Error::InvalidModel(format!(
                "rope.dimension_count {n_rot} must be even and in 2..={head_dim_k} (the head size)"
            )));
        }
        if arch == Arch::Llama && n_rot != head_dim_k {
            // llama.cpp rejects this for llama too ("invalid n_rot").
            return Err(Error::InvalidModel(format!(
                "rope.dimension_count {n_rot} must equal the head size {head_dim_k} for llama"
            )));
        }

        let n_vocab = match opt_usize(Kv::VocabSize)? {
            Some(n) => n,
            None => md
                .get_array(Kv::TokenizerTokens.pattern())?
                .map(|t| t.len())
                .ok_or_else(|| {
                    Error::InvalidModel(format!(
                        "missing metadata key {} (and no {})",
                        key(Kv::VocabSize),
                        Kv::TokenizerTokens.pattern()
                    ))
                })?,
        };
        check_range("vocabulary size", n_vocab, 1, MAX_VOCAB)?;

        let rms_eps = md.require(
            &key(Kv::AttentionLayerNormRmsEpsilon),
            opt_f32(Kv::AttentionLayerNormRmsEpsilon),
        )?;
        if !(rms_eps.is_finite() && rms_eps > 0.0 && rms_eps < 1.0) {
            return Err(Error::InvalidModel(format!(
                "attention.layer_norm_rms_epsilon {rms_eps} is out of range (0, 1)"
            )));
        }

        let rope_freq_base = opt_f32(Kv::RopeFreqBase)?.unwrap_or(10000.0);
        check_positive("rope.freq_base", rope_freq_base)?;
        let rope_freq_scale = match md.get_str(&key(Kv::RopeScalingType))? {
            None | Some("none") | Some("linear") => {
                match opt_f32(Kv::RopeScalingFactor)?.unwrap_or(0.0) {
                    0.0 => 1.0,
                    f => {
                        check_positive("rope.scaling.factor", f)?;
                        1.0 / f
                    }
                }
            }
            Some(other) => {
                return Err(Error::Unsupported(format!(
                    "rope scaling type {other:?} (only linear is implemented)"
                )));
            }
        };

        let rope_attn_factor = opt_f32(Kv::RopeScalingAttnFactor)?.unwrap_or(1.0);
        check_positive("rope.scaling.attn_factor", rope_attn_factor)?;
        let n_ctx_orig = opt_usize(Kv::RopeScalingOrigCtxLen)?.unwrap_or(n_ctx_train);

        // Per-architecture parts (load_arch_hparams).
        let mut n_swa = 0;
        let mut swa_layers = vec![false; n_layer];
        let mut rope_freq_base_swa = 10000.0; // llama_hparams default
        let mut rope_freq_scale_swa = 1.0;
        let mut attn_softcap = None;
        let mut final_softcap = None;
        let mut attn_scale = 1.0 / (head_dim_k as f32).sqrt();
        match arch {
            Arch::Llama | Arch::Qwen2 | Arch::Qwen3 | Arch::Phi3 | Arch::Gemma => {}
            Arch::Gemma2 => {
                n_swa = opt_usize(Kv::AttentionSlidingWindow)?.unwrap_or(4096);
                swa_layers = swa_pattern(md, a, n_layer, 2)?;
                rope_freq_base_swa = opt_f32(Kv::RopeFreqBaseSwa)?.unwrap_or(rope_freq_base);
                rope_freq_scale_swa = rope_freq_scale;
                attn_softcap = Some(opt_f32(Kv::AttnLogitSoftcapping)?.unwrap_or(50.0));
                final_softcap = Some(opt_f32(Kv::FinalLogitSoftcapping)?.unwrap_or(30.0));
                if n_layer == 46 {
                    // Gemma 2 27B scales by the model width per head, not the head size.
                    attn_scale = 1.0 / ((n_embd / n_head) as f32).sqrt();
                }
            }
            Arch::Gemma3 => {
                n_swa = opt_usize(Kv::AttentionSlidingWindow)?.unwrap_or(0);
                if n_swa > 0 {
                    swa_layers = swa_pattern(md, a, n_layer, 6)?;
                    rope_freq_base_swa = opt_f32(Kv::RopeFreqBaseSwa)?.unwrap_or(10000.0);
                }
                final_softcap = opt_f32(Kv::FinalLogitSoftcapping)?.filter(|&c| c != 0.0);
                if n_layer == 62 {
                    attn_scale = 1.0 / ((n_embd / n_head) as f32).sqrt();
                }
            }
        }
        // `{arch}.attention.scale` is deliberately not read: llama.cpp reads it only for the
        // Granite family (`llama_model_granite::load_arch_hparams` and kin); for these
        // architectures their graphs use the fixed scales above whatever the file says.
        check_positive("rope.freq_base_swa", rope_freq_base_swa)?;
        for (what, cap) in [
            ("attn_logit_softcapping", attn_softcap),
            ("final_logit_softcapping", final_softcap),
        ] {
            if let Some(c) = cap {
                check_positive(what, c)?;
            }
        }
        if !swa_layers.iter().any(|&s| s) {
            n_swa = 0;
        }

        Ok(HParams {
            arch,
            n_vocab,
            n_ctx_train,
            n_embd,
            n_layer,
            n_ff,
            n_head,
            n_head_kv,
            head_dim_k,
            head_dim_v,
            n_rot,
            rms_eps,
            rope_type: arch.rope_type(),
            rope_freq_base,
            rope_freq_scale,
            rope_freq_base_swa,
            rope_freq_scale_swa,
            rope_attn_factor,
            n_ctx_orig,
            n_swa,
            swa_layers,
            attn_scale,
            attn_softcap,
            final_softcap,
        })
    }

    /// Width of all query heads together.
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim_k
    }

    /// Width of all key heads together.
    pub fn k_dim(&self) -> usize {
        self.n_head_kv * self.head_dim_k
    }

    /// Width of all value heads together.
    pub fn v_dim(&self) -> usize {
        self.n_head_kv * self.head_dim_v
    }

    /// Width of the attention output (all value heads of all query heads).
    pub fn attn_out_dim(&self) -> usize {
        self.n_head * self.head_dim_v
    }

    /// Whether layer `il` uses the sliding window.
    pub fn is_swa(&self, il: usize) -> bool {
        self.swa_layers.get(il).copied().unwrap_or(false)
    }
}

/// `llama_model_base::load_swa_pattern`: an explicit per-layer bool array, or a period `n`
/// (key value or the architecture default) where every `n`-th layer is global.
fn swa_pattern(
    md: &crate::gguf::Metadata,
    arch: &str,
    n_layer: usize,
    default_period: usize,
) -> Result<Vec<bool>> {
    let name = Kv::AttentionSlidingWindowPattern.key(arch);
    match md.get(&name) {
        Some(crate::gguf::Value::Array(arr)) => {
            if arr.len() != n_layer {
                return Err(Error::InvalidModel(format!(
                    "{name} has {} entries for {n_layer} layers",
                    arr.len()
                )));
            }
            (0..n_layer)
                .map(|i| {
                    arr.int_at(i).map(|v| v != 0).ok_or_else(|| {
                        Error::InvalidModel(format!("{name} must be an array of bool"))
                    })
                })
                .collect()
        }
        _ => {
            let n = md.get_int::<usize>(&name)?.unwrap_or(default_period);
            // llama_hparams::set_swa_pattern (dense_first = false).
            Ok((0..n_layer).map(|il| n == 0 || il % n < n - 1).collect())
        }
    }
}

fn check_range(what: &str, v: usize, min: usize, max: usize) -> Result<()> {
    if v < min || v > max {
        let msg = if v < min {
            format!("{what} is {v}, must be at least {min}")
        } else {
            format!("{what} is {v}, larger than the supported maximum {max}")
        };
        return Err(Error::InvalidModel(msg));
    }
    Ok(())
}

fn check_positive(what: &str, v: f32) -> Result<()> {
    if !(v.is_finite() && v > 0.0) {
        return Err(Error::InvalidModel(format!(
            "{what} is {v}, must be a positive finite number"
        )));
    }
    Ok(())
}
