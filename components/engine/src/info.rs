//! A model's summary, as `chord info` shows it: read from the GGUF header alone.

use crate::Result;
use crate::gguf::names::Kv;
use crate::gguf::{Gguf, Value};

/// What a user wants to know about a model file before running it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSummary {
    /// `general.architecture`.
    pub architecture: String,
    /// `general.name`, if present.
    pub name: Option<String>,
    /// GGUF format version.
    pub gguf_version: u32,
    /// Size of the file in bytes.
    pub file_size: u64,
    /// Total number of weights (elements over all tensors).
    pub parameters: u64,
    /// Number of tensors.
    pub tensor_count: usize,
    /// Tensor types with their counts, most frequent first.
    pub tensor_types: Vec<(String, usize)>,
    /// Architecture hyperparameters: every `{arch}.*` key, with its prefix stripped.
    pub hyperparameters: Vec<(String, String)>,
    /// `tokenizer.ggml.model`, if present.
    pub tokenizer: Option<String>,
    /// `tokenizer.ggml.pre`, if present.
    pub tokenizer_pre: Option<String>,
    /// Number of tokens in the vocabulary.
    pub vocab_size: Option<usize>,
    /// Whether `tokenizer.chat_template` is present.
    pub has_chat_template: bool,
}

impl ModelSummary {
    /// Summarises a parsed header.
    pub fn from_gguf(g: &Gguf) -> Result<Self> {
        let m = &g.metadata;
        let architecture = g.architecture()?.to_string();
        let prefix = format!("{architecture}.");
        let hyperparameters = m
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix(&prefix)
                    .map(|k| (k.to_string(), v.display_short()))
            })
            .collect();
        let mut types: Vec<(String, usize)> = Vec::new();
        for t in &g.tensors {
            // Upper case, as llama.cpp's tools print types (Q4_K, not ggml_type_name's q4_K).
            let name = t.ty.name().to_uppercase();
            match types.iter_mut().find(|(n, _)| *n == name) {
                Some((_, c)) => *c += 1,
                None => types.push((name, 1)),
            }
        }
        types.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let vocab_size = match m.get(Kv::TokenizerTokens.pattern()) {
            Some(Value::Array(a)) => Some(a.len()),
            _ => None,
        };
        Ok(ModelSummary {
            name: m.get_str(Kv::GeneralName.pattern())?.map(str::to_string),
            gguf_version: g.version,
            file_size: g.file_size,
            parameters: g.tensors.iter().map(|t| t.n_elements()).sum(),
            tensor_count: g.tensors.len(),
            tensor_types: types,
            hyperparameters,
            tokenizer: m.get_str(Kv::TokenizerModel.pattern())?.map(str::to_string),
            tokenizer_pre: m.get_str(Kv::TokenizerPre.pattern())?.map(str::to_string),
            vocab_size,
            has_chat_template: m.get(Kv::TokenizerChatTemplate.pattern()).is_some(),
            architecture,
        })
    }
}
