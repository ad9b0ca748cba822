//! The engine component's WIT glue: the only place that knows about `wit-bindgen`.
//!
//! It implements the `chord:llm/inference` exports over the engine library, reading model bytes
//! through the `chord:memory64-store` import. Three sections: the byte source over the store, the
//! exports, and (at the end) every conversion between engine and WIT types.
//!
//! Exports that the engine cannot serve yet all go through [`not_yet`], so wiring sessions and
//! generation means replacing those calls.

use std::convert::Infallible;
use std::rc::Rc;

use crate::chat::{ChatTemplate, Message};
use crate::gguf::names::{Kv, Tn};
use crate::gguf::{Array, Value};
use crate::gguf::{ByteSource, Gguf};
use crate::info::ModelSummary;
use crate::tokenizer::Tokenizer;

wit_bindgen::generate!({
    path: "../../wit",
    world: "chord:llm/engine",
    // The store and compute interfaces live in wit/deps; generate them here too.
    generate_all,
});

use chord::memory64_store::store as wit_store;
use exports::chord::llm::inference as wit;

/// The engine's error type, for short.
type EngineError = crate::Error;

// ---------------------------------------------------------------------------------------------
// Model bytes through the store import.

/// A [`ByteSource`] whose reads go to `blob.read`, split at the store's per-call limit.
struct StoreSource {
    blob: wit_store::Blob,
    size: u64,
    max_read: u32,
}

impl StoreSource {
    fn open(name: &str) -> Result<Self, EngineError> {
        let blob = wit_store::Blob::open(name).map_err(store_error)?;
        let size = blob.size();
        // A store that reports a zero limit would make every read impossible; treat it as 1 MiB so
        // the error, if any, comes from the store itself.
        let max_read = match wit_store::max_read_len() {
            0 => 1 << 20,
            n => n,
        };
        Ok(StoreSource {
            blob,
            size,
            max_read,
        })
    }
}

impl ByteSource for StoreSource {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> crate::Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let want = u32::try_from(buf.len() - done)
                .unwrap_or(u32::MAX)
                .min(self.max_read);
            let at = offset
                .checked_add(done as u64)
                .ok_or_else(|| EngineError::Store(format!("offset {offset} + {done} overflows")))?;
            let bytes = self.blob.read(at, want).map_err(store_error)?;
            // The store promises whole reads; a short one would otherwise leave zeros behind.
            if bytes.len() != want as usize {
                return Err(EngineError::Store(format!(
                    "store returned {} bytes for a read of {want} at offset {at}",
                    bytes.len()
                )));
            }
            buf[done..done + bytes.len()].copy_from_slice(&bytes);
            done += bytes.len();
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The exports.

struct Component;

export!(Component);

impl wit::Guest for Component {
    type Model = Model;
    type Session = Session;
    type Generation = Generation;
}

/// A loaded model: its header, where its bytes are, and how it was loaded.
struct Model {
    gguf: Gguf,
    summary: ModelSummary,
    hyperparameters: wit::Hyperparameters,
    special_tokens: wit::SpecialTokens,
    /// The tokenizer, built once at load; a model whose vocabulary the engine cannot read still
    /// loads (its info is useful), and the tokenizer's error is returned by every call needing it.
    tokenizer: Result<Tokenizer, String>,
    /// The model's chat template (its own or a built-in), compiled once at load; like the
    /// tokenizer, a template that does not compile fails only the calls that need it.
    chat_template: Result<ChatTemplate, String>,
    /// Kept for the forward pass (weights are read through it); only the header is read today.
    #[allow(dead_code)]
    source: Rc<StoreSource>,
    /// Devices the host's compute import offered at load. The engine has no device path yet and
    /// computes with its own kernels whatever is offered; this is where it will choose.
    #[allow(dead_code)]
    devices: Vec<chord::compute::compute::DeviceInfo>,
    /// Context length sessions get.
    context_length: u32,
    /// The load options, validated.
    #[allow(dead_code)]
    options: wit::LoadOptions,
}

/// The one place that says what is not implemented yet.
fn not_yet(what: &str) -> wit::Error {
    wit::Error::Unsupported(format!("{what} is not implemented yet"))
}

impl Model {
    fn load(name: &str, options: wit::LoadOptions) -> Result<Model, EngineError> {
        if options.context_length == Some(0) {
            return Err(EngineError::InvalidArgument(
                "context length must be at least 1".into(),
            ));
        }
        let source = Rc::new(StoreSource::open(name)?);
        let gguf = Gguf::read(&*source)?;
        let summary = ModelSummary::from_gguf(&gguf)?;
        let hyperparameters = hyperparameters(&gguf)?;
        let special_tokens = special_tokens(&gguf)?;
        let context_length = options
            .context_length
            .unwrap_or(hyperparameters.context_length);
        let tokenizer = Tokenizer::from_gguf(&gguf).map_err(|e| e.to_string());
        let chat_template = ChatTemplate::from_gguf(&gguf).map_err(|e| e.to_string());
        Ok(Model {
            gguf,
            summary,
            hyperparameters,
            special_tokens,
            tokenizer,
            chat_template,
            source,
            devices: chord::compute::compute::devices(),
            context_length,
            options,
        })
    }

    fn tokenizer(&self) -> Result<&Tokenizer, EngineError> {
        self.tokenizer
            .as_ref()
            .map_err(|e| EngineError::Unsupported(format!("no usable tokenizer: {e}")))
    }

    /// `messages` rendered with the model's template, or with `template` (Jinja source or a
    /// built-in name) when given.
    fn apply_chat_template(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        template: Option<&str>,
    ) -> Result<String, EngineError> {
        let own;
        let t = match template {
            Some(src) => {
                let arch = self.gguf.architecture()?;
                own = ChatTemplate::for_model(Some(src), arch, |_| false)?;
                &own
            }
            None => self
                .chat_template
                .as_ref()
                .map_err(|e| EngineError::InvalidModel(e.clone()))?,
        };
        // The template sees the BOS/EOS texts; a model without a tokenizer gives it empty ones.
        let text = |id: Option<u32>| -> &str {
            match (self.tokenizer.as_ref(), id) {
                (Ok(tok), Some(id)) => tok.token_text(id).unwrap_or(""),
                _ => "",
            }
        };
        let (bos, eos) = match self.tokenizer.as_ref() {
            Ok(tok) => (text(tok.bos()), text(tok.eos())),
            Err(_) => ("", ""),
        };
        t.render(messages, add_generation_prompt, bos, eos)
    }
}

impl wit::GuestModel for Model {
    fn load(name: String, options: wit::LoadOptions) -> Result<wit::Model, wit::Error> {
        Model::load(&name, options)
            .map(wit::Model::new)
            .map_err(to_wit_error)
    }

    fn info(&self) -> wit::ModelInfo {
        model_info(self)
    }

    fn tokenize(
        &self,
        text: String,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<wit::TokenId>, wit::Error> {
        self.tokenizer()
            .and_then(|t| t.tokenize(&text, add_special, parse_special))
            .map_err(to_wit_error)
    }

    fn detokenize(
        &self,
        tokens: Vec<wit::TokenId>,
        remove_special: bool,
        unparse_special: bool,
    ) -> Result<String, wit::Error> {
        self.tokenizer()
            .and_then(|t| t.detokenize_bytes(&tokens, remove_special, unparse_special))
            .map(lossy_utf8)
            .map_err(to_wit_error)
    }

    fn token_to_piece(&self, token: wit::TokenId, special: bool) -> Result<Vec<u8>, wit::Error> {
        self.tokenizer()
            .and_then(|t| t.token_to_piece(token, special).map(<[u8]>::to_vec))
            .map_err(to_wit_error)
    }

    fn apply_chat_template(
        &self,
        messages: Vec<wit::ChatMessage>,
        add_generation_prompt: bool,
        template: Option<String>,
    ) -> Result<String, wit::Error> {
        let messages: Vec<Message> = messages.into_iter().map(chat_message).collect();
        Model::apply_chat_template(self, &messages, add_generation_prompt, template.as_deref())
            .map_err(to_wit_error)
    }

    fn new_session(&self, _options: wit::SessionOptions) -> Result<wit::Session, wit::Error> {
        Err(not_yet("sessions"))
    }
}

/// A session. None can be made yet (`new-session` is [`not_yet`]), so this type has no values and
/// its methods are statically unreachable.
struct Session {
    never: Infallible,
}

impl wit::GuestSession for Session {
    fn generate(
        &self,
        _prompt: Vec<wit::TokenId>,
        _options: wit::SamplerOptions,
    ) -> Result<wit::Generation, wit::Error> {
        match self.never {}
    }

    fn feed(&self, _tokens: Vec<wit::TokenId>) -> Result<(), wit::Error> {
        match self.never {}
    }

    fn logits(
        &self,
        _tokens: Vec<wit::TokenId>,
        _top_k: u32,
    ) -> Result<Vec<wit::PositionLogits>, wit::Error> {
        match self.never {}
    }

    fn reset(&self) -> Result<(), wit::Error> {
        match self.never {}
    }

    fn len(&self) -> u32 {
        match self.never {}
    }

    fn context_length(&self) -> u32 {
        match self.never {}
    }
}

/// A generation; like [`Session`], none exists yet.
struct Generation {
    never: Infallible,
}

impl wit::GuestGeneration for Generation {
    fn next(&self) -> Result<Option<wit::Token>, wit::Error> {
        match self.never {}
    }

    fn finish_reason(&self) -> Option<wit::FinishReason> {
        match self.never {}
    }

    fn cancel(&self) {
        match self.never {}
    }

    fn usage(&self) -> wit::Usage {
        match self.never {}
    }
}

// ---------------------------------------------------------------------------------------------
// Conversions between engine and WIT types: all of them, here.

fn to_wit_error(e: EngineError) -> wit::Error {
    match e {
        EngineError::InvalidModel(m) => wit::Error::InvalidModel(m),
        EngineError::Unsupported(m) => wit::Error::Unsupported(m),
        EngineError::InvalidArgument(m) => wit::Error::InvalidArgument(m),
        EngineError::ContextFull(m) => wit::Error::ContextFull(m),
        EngineError::Store(m) => wit::Error::Store(m),
        EngineError::OutOfMemory(m) => wit::Error::OutOfMemory(m),
        EngineError::ContextFull(m) => wit::Error::ContextFull(m),
    }
}

fn chat_message(m: wit::ChatMessage) -> Message {
    Message::new(m.role, m.content)
}

/// Text for the WIT `string` the tokenizer's bytes become: a multi-byte character cut at a token
/// boundary turns into U+FFFD, as llama.cpp's `common_detokenize` callers see it.
fn lossy_utf8(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

fn store_error(e: wit_store::StoreError) -> EngineError {
    EngineError::Store(match e {
        wit_store::StoreError::NotFound(m) => format!("not found: {m}"),
        wit_store::StoreError::OutOfRange(m) => format!("out of range: {m}"),
        wit_store::StoreError::TooLarge(max) => {
            format!("read larger than the store's limit of {max} bytes")
        }
        wit_store::StoreError::Io(m) => format!("I/O error: {m}"),
    })
}

fn model_info(m: &Model) -> wit::ModelInfo {
    let s = &m.summary;
    wit::ModelInfo {
        architecture: s.architecture.clone(),
        name: s.name.clone(),
        gguf_version: s.gguf_version,
        file_size: s.file_size,
        parameter_count: s.parameters,
        tensor_count: s.tensor_count as u64,
        tensor_types: s
            .tensor_types
            .iter()
            .map(|(name, count)| wit::TensorTypeCount {
                type_name: name.clone(),
                count: u32::try_from(*count).unwrap_or(u32::MAX),
                bytes: m
                    .gguf
                    .tensors
                    .iter()
                    .filter(|t| t.ty.name().eq_ignore_ascii_case(name))
                    .map(|t| t.size)
                    .sum(),
            })
            .collect(),
        hyperparameters: m.hyperparameters,
        tokenizer_model: s.tokenizer.clone(),
        special_tokens: m.special_tokens,
        has_chat_template: s.has_chat_template,
        context_length: m.context_length,
        metadata: m
            .gguf
            .metadata
            .iter()
            .map(|(k, v)| wit::MetadataEntry {
                key: k.to_owned(),
                gguf_type: v.value_type().name().to_owned(),
                value: metadata_value(v),
            })
            .collect(),
    }
}

fn metadata_value(v: &Value) -> wit::MetadataValue {
    use Value as V;
    use wit::MetadataValue as M;
    match v {
        V::U8(x) => M::Uint((*x).into()),
        V::U16(x) => M::Uint((*x).into()),
        V::U32(x) => M::Uint((*x).into()),
        V::U64(x) => M::Uint(*x),
        V::I8(x) => M::Int((*x).into()),
        V::I16(x) => M::Int((*x).into()),
        V::I32(x) => M::Int((*x).into()),
        V::I64(x) => M::Int(*x),
        V::F32(x) => M::Float((*x).into()),
        V::F64(x) => M::Float(*x),
        V::Bool(b) => M::Boolean(*b),
        V::String(s) => M::Text(s.clone()),
        V::Array(a) => M::Array(wit::ArraySummary {
            element_type: a.elem_name().to_owned(),
            len: a.len() as u64,
        }),
    }
}

// Interim: the typed hyperparameters (and special tokens, from metadata only; the tokenizer will
// know the effective add-bos/add-eos defaults of its type) are read here until the forward pass's own reader
// (`model::HParams`) lands in the engine; then `model-info` should be filled from that.

/// The model's shape, read as llama.cpp's `llama_model_base::load_hparams` reads it: context length,
/// embedding length and block count are required; head counts and widths default as llama.cpp does.
fn hyperparameters(g: &Gguf) -> Result<wit::Hyperparameters, EngineError> {
    let md = &g.metadata;
    let arch = g.architecture()?;
    let key = |k: Kv| k.key(arch);
    let required = |k: Kv| md.require(&key(k), md.get_u32(&key(k)));
    let embedding_length = required(Kv::EmbeddingLength)?;
    let head_count = u32_or_first(g, &key(Kv::AttentionHeadCount))?.unwrap_or(0);
    let head_width = embedding_length.checked_div(head_count).unwrap_or(0);
    Ok(wit::Hyperparameters {
        vocab_size: vocab_size(g, &key(Kv::VocabSize))?,
        context_length: required(Kv::ContextLength)?,
        embedding_length,
        block_count: required(Kv::BlockCount)?,
        feed_forward_length: u32_or_first(g, &key(Kv::FeedForwardLength))?.unwrap_or(0),
        head_count,
        head_count_kv: u32_or_first(g, &key(Kv::AttentionHeadCountKv))?.unwrap_or(head_count),
        key_length: md
            .get_u32(&key(Kv::AttentionKeyLength))?
            .unwrap_or(head_width),
        value_length: md
            .get_u32(&key(Kv::AttentionValueLength))?
            .unwrap_or(head_width),
        rope_freq_base: md.get_f32(&key(Kv::RopeFreqBase))?.unwrap_or(10000.0),
        norm_epsilon: match md.get_f32(&key(Kv::AttentionLayerNormRmsEpsilon))? {
            Some(e) => Some(e),
            None => md.get_f32(&key(Kv::AttentionLayerNormEpsilon))?,
        },
        sliding_window: md.get_u32(&key(Kv::AttentionSlidingWindow))?,
    })
}

/// The tokenizer's token count, else `{arch}.vocab_size`, else the token embedding's rows.
fn vocab_size(g: &Gguf, vocab_key: &str) -> Result<u32, EngineError> {
    let md = &g.metadata;
    let n = match md.get_array(Kv::TokenizerTokens.pattern())? {
        Some(tokens) => tokens.len() as u64,
        None => match md.get_u32(vocab_key)? {
            Some(n) => u64::from(n),
            None => {
                let embd = Tn::TokenEmbd.weight();
                g.tensor(&embd).map(|t| t.n_rows()).ok_or_else(|| {
                    EngineError::InvalidModel(format!(
                        "no vocabulary: neither tokenizer.ggml.tokens, {vocab_key} nor {embd}"
                    ))
                })?
            }
        },
    };
    u32::try_from(n).map_err(|_| EngineError::InvalidModel(format!("{n} tokens is too many")))
}

/// A u32 key that may also be a per-layer array (llama.cpp's `get_key_or_arr`): an array gives its
/// first element.
fn u32_or_first(g: &Gguf, key: &str) -> Result<Option<u32>, EngineError> {
    let md = &g.metadata;
    let Some(Value::Array(a)) = md.get(key) else {
        return md.get_u32(key);
    };
    if matches!(
        a,
        Array::String(_) | Array::Array(_) | Array::F32(_) | Array::F64(_)
    ) {
        return Err(EngineError::InvalidModel(format!(
            "metadata {key} is an array of {}, expected integers",
            a.elem_name()
        )));
    }
    match a.int_at(0) {
        None => Ok(None),
        Some(v) => u32::try_from(v).map(Some).map_err(|_| {
            EngineError::InvalidModel(format!("metadata {key}[0] = {v} is out of range"))
        }),
    }
}

fn special_tokens(g: &Gguf) -> Result<wit::SpecialTokens, EngineError> {
    let md = &g.metadata;
    let id = |k: Kv| md.get_u32(k.pattern());
    let flag = |k: Kv| md.get_bool(k.pattern()).map(|b| b.unwrap_or(false));
    Ok(wit::SpecialTokens {
        bos: id(Kv::TokenizerBosId)?,
        eos: id(Kv::TokenizerEosId)?,
        eot: id(Kv::TokenizerEotId)?,
        add_bos: flag(Kv::TokenizerAddBos)?,
        add_eos: flag(Kv::TokenizerAddEos)?,
    })
}
