//! The one table of GGUF key and tensor names, after llama.cpp's `LLM_KV_NAMES` and `LLM_TENSOR_NAMES`
//! (src/llama-arch.cpp). Keys with an architecture prefix are written with `{arch}`.

/// Metadata keys the engine reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kv {
    GeneralArchitecture,
    GeneralName,
    GeneralAlignment,
    GeneralFileType,
    GeneralQuantizationVersion,
    VocabSize,
    ContextLength,
    EmbeddingLength,
    BlockCount,
    FeedForwardLength,
    UseParallelResidual,
    AttentionHeadCount,
    AttentionHeadCountKv,
    AttentionKeyLength,
    AttentionValueLength,
    AttentionLayerNormEpsilon,
    AttentionLayerNormRmsEpsilon,
    AttentionSlidingWindow,
    AttnLogitSoftcapping,
    FinalLogitSoftcapping,
    RopeDimensionCount,
    RopeFreqBase,
    RopeFreqBaseSwa,
    RopeScalingType,
    RopeScalingFactor,
    RopeScalingOrigCtxLen,
    RopeScalingAttnFactor,
    TokenizerModel,
    TokenizerPre,
    TokenizerTokens,
    TokenizerScores,
    TokenizerTokenType,
    TokenizerMerges,
    TokenizerBosId,
    TokenizerEosId,
    TokenizerEotId,
    TokenizerEomId,
    TokenizerUnknownId,
    TokenizerSeparatorId,
    TokenizerPaddingId,
    TokenizerMaskId,
    TokenizerFimPreId,
    TokenizerFimSufId,
    TokenizerFimMidId,
    TokenizerFimPadId,
    TokenizerFimRepId,
    TokenizerFimSepId,
    /// Deprecated spellings of the FIM ids.
    TokenizerPrefixId,
    TokenizerSuffixId,
    TokenizerMiddleId,
    TokenizerAddBos,
    TokenizerAddEos,
    TokenizerAddSep,
    TokenizerAddSpacePrefix,
    TokenizerRemoveExtraWhitespaces,
    TokenizerChatTemplate,
}

impl Kv {
    /// The key pattern; `{arch}` stands for `general.architecture`.
    pub const fn pattern(self) -> &'static str {
        use Kv::*;
        match self {
            GeneralArchitecture => "general.architecture",
            GeneralName => "general.name",
            GeneralAlignment => "general.alignment",
            GeneralFileType => "general.file_type",
            GeneralQuantizationVersion => "general.quantization_version",
            VocabSize => "{arch}.vocab_size",
            ContextLength => "{arch}.context_length",
            EmbeddingLength => "{arch}.embedding_length",
            BlockCount => "{arch}.block_count",
            FeedForwardLength => "{arch}.feed_forward_length",
            UseParallelResidual => "{arch}.use_parallel_residual",
            AttentionHeadCount => "{arch}.attention.head_count",
            AttentionHeadCountKv => "{arch}.attention.head_count_kv",
            AttentionKeyLength => "{arch}.attention.key_length",
            AttentionValueLength => "{arch}.attention.value_length",
            AttentionLayerNormEpsilon => "{arch}.attention.layer_norm_epsilon",
            AttentionLayerNormRmsEpsilon => "{arch}.attention.layer_norm_rms_epsilon",
            AttentionSlidingWindow => "{arch}.attention.sliding_window",
            AttnLogitSoftcapping => "{arch}.attn_logit_softcapping",
            FinalLogitSoftcapping => "{arch}.final_logit_softcapping",
            RopeDimensionCount => "{arch}.rope.dimension_count",
            RopeFreqBase => "{arch}.rope.freq_base",
            RopeFreqBaseSwa => "{arch}.rope.freq_base_swa",
            RopeScalingType => "{arch}.rope.scaling.type",
            RopeScalingFactor => "{arch}.rope.scaling.factor",
            RopeScalingOrigCtxLen => "{arch}.rope.scaling.original_context_length",
            RopeScalingAttnFactor => "{arch}.rope.scaling.attn_factor",
            TokenizerModel => "tokenizer.ggml.model",
            TokenizerPre => "tokenizer.ggml.pre",
            TokenizerTokens => "tokenizer.ggml.tokens",
            TokenizerScores => "tokenizer.ggml.scores",
            TokenizerTokenType => "tokenizer.ggml.token_type",
            TokenizerMerges => "tokenizer.ggml.merges",
            TokenizerBosId => "tokenizer.ggml.bos_token_id",
            TokenizerEosId => "tokenizer.ggml.eos_token_id",
            TokenizerEotId => "tokenizer.ggml.eot_token_id",
            TokenizerEomId => "tokenizer.ggml.eom_token_id",
            TokenizerUnknownId => "tokenizer.ggml.unknown_token_id",
            TokenizerSeparatorId => "tokenizer.ggml.seperator_token_id",
            TokenizerPaddingId => "tokenizer.ggml.padding_token_id",
            TokenizerMaskId => "tokenizer.ggml.mask_token_id",
            TokenizerFimPreId => "tokenizer.ggml.fim_pre_token_id",
            TokenizerFimSufId => "tokenizer.ggml.fim_suf_token_id",
            TokenizerFimMidId => "tokenizer.ggml.fim_mid_token_id",
            TokenizerFimPadId => "tokenizer.ggml.fim_pad_token_id",
            TokenizerFimRepId => "tokenizer.ggml.fim_rep_token_id",
            TokenizerFimSepId => "tokenizer.ggml.fim_sep_token_id",
            TokenizerPrefixId => "tokenizer.ggml.prefix_token_id",
            TokenizerSuffixId => "tokenizer.ggml.suffix_token_id",
            TokenizerMiddleId => "tokenizer.ggml.middle_token_id",
            TokenizerAddBos => "tokenizer.ggml.add_bos_token",
            TokenizerAddEos => "tokenizer.ggml.add_eos_token",
            TokenizerAddSep => "tokenizer.ggml.add_sep_token",
            TokenizerAddSpacePrefix => "tokenizer.ggml.add_space_prefix",
            TokenizerRemoveExtraWhitespaces => "tokenizer.ggml.remove_extra_whitespaces",
            TokenizerChatTemplate => "tokenizer.chat_template",
        }
    }

    /// The full key for architecture `arch`.
    pub fn key(self, arch: &str) -> String {
        self.pattern().replace("{arch}", arch)
    }
}

/// Tensor names; per-layer ones are written with `{bid}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tn {
    TokenEmbd,
    OutputNorm,
    Output,
    RopeFreqs,
    AttnNorm,
    AttnQ,
    AttnK,
    AttnV,
    AttnQkv,
    AttnOut,
    AttnQNorm,
    AttnKNorm,
    AttnPostNorm,
    FfnNorm,
    FfnGate,
    FfnUp,
    FfnDown,
    FfnPostNorm,
    RopeFactorsLong,
    RopeFactorsShort,
}

impl Tn {
    /// The name pattern, without the `.weight`/`.bias` suffix.
    pub const fn pattern(self) -> &'static str {
        use Tn::*;
        match self {
            TokenEmbd => "token_embd",
            OutputNorm => "output_norm",
            Output => "output",
            RopeFreqs => "rope_freqs",
            AttnNorm => "blk.{bid}.attn_norm",
            AttnQ => "blk.{bid}.attn_q",
            AttnK => "blk.{bid}.attn_k",
            AttnV => "blk.{bid}.attn_v",
            AttnQkv => "blk.{bid}.attn_qkv",
            AttnOut => "blk.{bid}.attn_output",
            AttnQNorm => "blk.{bid}.attn_q_norm",
            AttnKNorm => "blk.{bid}.attn_k_norm",
            AttnPostNorm => "blk.{bid}.post_attention_norm",
            FfnNorm => "blk.{bid}.ffn_norm",
            FfnGate => "blk.{bid}.ffn_gate",
            FfnUp => "blk.{bid}.ffn_up",
            FfnDown => "blk.{bid}.ffn_down",
            FfnPostNorm => "blk.{bid}.post_ffw_norm",
            RopeFactorsLong => "rope_factors_long",
            RopeFactorsShort => "rope_factors_short",
        }
    }

    /// `<name>.weight` for a global tensor.
    pub fn weight(self) -> String {
        format!("{}.weight", self.pattern())
    }

    /// `<name>.<suffix>` for layer `bid`.
    pub fn layer(self, bid: usize, suffix: &str) -> String {
        format!(
            "{}.{suffix}",
            self.pattern().replace("{bid}", &bid.to_string())
        )
    }
}
