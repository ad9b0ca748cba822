//! The engine component's WIT glue: the only place that knows about `wit-bindgen`.
//!
//! It implements the `chord:llm/inference` exports over the engine library, reading model bytes
//! through the `chord:memory64-store` import. Three sections: the byte source over the store, the
//! exports, and (at the end) every conversion between engine and WIT types.
//!
//! The engine's types borrow (a generation borrows its session and tokenizer); WIT resources
//! cannot, so sessions live in `Rc<RefCell<…>>` shared with their generations, and a generation
//! keeps the owned [`GenerationState`].

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use crate::chat::{ChatTemplate, Message};
use crate::generate::{Finish, GenerateOptions, GenerationState};
use crate::gguf::names::{Kv, Tn};
use crate::gguf::{Array, Value};
use crate::gguf::{ByteSource, Gguf};
use crate::info::ModelSummary;
use crate::model::{LogitsMode, SessionOptions};
use crate::sample::SamplerOptions;
use crate::tokenizer::Tokenizer;

wit_bindgen::generate!({
    path: "../../wit",
    world: "chord:llm/engine",
    // The store and compute interfaces live in wit/deps; generate them here too.
    generate_all,
});

use chord::compute::compute as wit_compute;
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

// SAFETY: the engine shares weights' byte source as `Arc<dyn ByteSource + Send + Sync>` so that
// native hosts can use threads. This component is single-threaded (wasm32-wasip2 has no threads),
// so the store handle is never touched from two threads at once.
unsafe impl Send for StoreSource {}
// SAFETY: as above.
unsafe impl Sync for StoreSource {}

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

    fn prefetch(&self, offset: u64, len: u64) {
        self.blob.prefetch(offset, len);
    }

    fn read_vec(&self, offset: u64, len: usize) -> crate::Result<Vec<u8>> {
        // One store call fills a buffer that becomes the tensor's: no copy in the guest.
        match u32::try_from(len) {
            Ok(n) if n <= self.max_read => {
                let bytes = self.blob.read(offset, n).map_err(store_error)?;
                if bytes.len() != len {
                    return Err(EngineError::Store(format!(
                        "store returned {} bytes for a read of {len} at offset {offset}",
                        bytes.len()
                    )));
                }
                Ok(bytes)
            }
            _ => {
                let mut data = Vec::new();
                data.try_reserve_exact(len).map_err(|_| {
                    EngineError::OutOfMemory(format!("{len} bytes at offset {offset}"))
                })?;
                data.resize(len, 0);
                self.read_exact_at(offset, &mut data)?;
                Ok(data)
            }
        }
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

/// Models whose weights take at most this many bytes are held whole by default...
const DEFAULT_RESIDENT_MAX: u64 = 2 << 30;
/// ... larger ones get a weight cache of this many bytes.
const DEFAULT_CACHE_BUDGET: u64 = 1 << 30;

// ---------------------------------------------------------------------------------------------
// Matrix products on the host's compute device (the data plane of `chord:compute`).

/// Device `index` of the compute import; the host reads each matrix from `source`'s blob itself.
struct ComputeDevice {
    index: u32,
    source: Arc<StoreSource>,
}

/// A matrix on the compute device.
struct ComputeMatrix {
    m: wit_compute::Matrix,
    name: String,
    n_cols: usize,
    n_rows: usize,
}

// SAFETY: as for `StoreSource`: the component is single-threaded.
unsafe impl Send for ComputeDevice {}
// SAFETY: as above.
unsafe impl Sync for ComputeDevice {}
// SAFETY: as above.
unsafe impl Send for ComputeMatrix {}
// SAFETY: as above.
unsafe impl Sync for ComputeMatrix {}

impl crate::model::Device for ComputeDevice {
    fn upload(
        &self,
        name: &str,
        ty: crate::quant::GgmlType,
        n_cols: usize,
        n_rows: usize,
        offset: u64,
    ) -> crate::Result<Box<dyn crate::model::DeviceMatrix>> {
        let m = wit_compute::Matrix::from_blob(
            self.index,
            &self.source.blob,
            offset,
            ty as u32,
            n_cols as u64,
            n_rows as u64,
        )
        .map_err(|e| compute_error(name, e))?;
        Ok(Box::new(ComputeMatrix {
            m,
            name: name.to_string(),
            n_cols,
            n_rows,
        }))
    }

    fn kv_cache(
        &self,
        shape: &crate::model::KvShape,
    ) -> crate::Result<Option<Box<dyn crate::model::DeviceKv>>> {
        let dim = |v: usize| wire_u32(v, "KV cache dimension");
        let wit_shape = wit_compute::KvShape {
            n_layer: dim(shape.n_layer)?,
            n_ctx: dim(shape.n_ctx)?,
            n_head_kv: dim(shape.n_head_kv)?,
            head_dim_k: dim(shape.head_dim_k)?,
            head_dim_v: dim(shape.head_dim_v)?,
        };
        match wit_compute::KvCache::create(self.index, wit_shape) {
            Ok(kv) => Ok(Some(Box::new(ComputeKv { kv }))),
            // A device for weights only: the session keeps its cache in guest memory.
            Err(wit_compute::ComputeError::Unsupported(_)) => Ok(None),
            Err(e) => Err(compute_error("KV cache", e)),
        }
    }

    fn program(
        &self,
        p: crate::model::DeviceProgram,
        max_tokens: usize,
    ) -> crate::Result<Option<Box<dyn crate::model::DeviceRun>>> {
        let (desc, matrices) = program_desc(&p, max_tokens)?;
        let matrices: Vec<&wit_compute::Matrix> = matrices.iter().map(|m| &m.m).collect();
        match wit_compute::Program::create(self.index, &desc, &matrices) {
            Ok(p) => Ok(Some(Box::new(ComputeProgram { p }))),
            // A device without programs: the session runs each step, calling it per operation.
            Err(wit_compute::ComputeError::Unsupported(_)) => Ok(None),
            Err(e) => Err(compute_error("program", e)),
        }
    }
}

/// `p` as WIT data, and the matrices its operations name by index.
fn program_desc<'p>(
    p: &'p crate::model::DeviceProgram,
    max_tokens: usize,
) -> crate::Result<(wit_compute::ProgramDesc, Vec<&'p ComputeMatrix>)> {
    use crate::model::graph::{Buf, Glu, Op};
    use wit_compute::{Buffer, Op as W};
    let int = |v: usize| wire_u32(v, "program");
    let buf = |b: Buf| match b {
        Buf::X => Buffer::X,
        Buf::Xn => Buffer::Xn,
        Buf::Qkv => Buffer::Qkv,
        Buf::Q => Buffer::Q,
        Buf::K => Buffer::K,
        Buf::V => Buffer::V,
        Buf::Att => Buffer::Att,
        Buf::O => Buffer::O,
        Buf::Gate => Buffer::Gate,
        Buf::Up => Buffer::Up,
    };
    let mut matrices: Vec<&ComputeMatrix> = Vec::new();
    let mut index = |m: &'p Arc<dyn crate::model::DeviceMatrix>| -> crate::Result<u32> {
        let Some(cm) = m.as_any().downcast_ref::<ComputeMatrix>() else {
            return Err(EngineError::InvalidArgument(
                "a program with a matrix of another device".into(),
            ));
        };
        let i = match matrices.iter().position(|&x| std::ptr::eq(x, cm)) {
            Some(i) => i,
            None => {
                matrices.push(cm);
                matrices.len() - 1
            }
        };
        int(i)
    };
    let mut ops = Vec::with_capacity(p.ops.len());
    for op in &p.ops {
        ops.push(match op {
            Op::Scale { x, s } => W::Scale(wit_compute::ScaleOp {
                x: buf(*x),
                factor: *s,
            }),
            Op::RmsNorm { out, x, w, eps } => W::RmsNorm(wit_compute::RmsNormOp {
                out: buf(*out),
                x: buf(*x),
                weight: w.clone(),
                eps: *eps,
            }),
            Op::MatMul { out, x, w } => W::Matmul(wit_compute::MatmulOp {
                out: buf(*out),
                x: buf(*x),
                matrix: index(w)?,
            }),
            Op::AddBias { x, b } => W::AddBias(wit_compute::BiasOp {
                x: buf(*x),
                bias: b.clone(),
            }),
            Op::SplitQkv => W::SplitQkv,
            Op::Rope { x, rope, head_dim } => W::Rope(wit_compute::RopeOp {
                x: buf(*x),
                rope: int(*rope)?,
                head_dim: int(*head_dim)?,
            }),
            Op::Attend { layer, attn } => W::Attend(wit_compute::AttendOp {
                layer: int(*layer)?,
                attention: wit_attention(attn)?,
                n_head_kv: int(attn.n_head_kv)?,
                head_dim_k: int(attn.head_dim_k)?,
                head_dim_v: int(attn.head_dim_v)?,
            }),
            Op::Add { x, y } => W::Add(wit_compute::AddOp {
                x: buf(*x),
                y: buf(*y),
            }),
            Op::Glu(g) => W::Glu(match g {
                Glu::Silu => wit_compute::Glu::Silu,
                Glu::GeluTanh => wit_compute::Glu::GeluTanh,
                Glu::SiluFused => wit_compute::Glu::SiluFused,
            }),
            Op::Logits {
                norm,
                eps,
                w,
                b,
                softcap,
            } => W::Logits(wit_compute::LogitsOp {
                norm: norm.clone(),
                eps: *eps,
                matrix: index(w)?,
                bias: b.clone(),
                softcap: *softcap,
            }),
        });
    }
    let desc = wit_compute::ProgramDesc {
        widths: p
            .widths
            .iter()
            .map(|&w| int(w))
            .collect::<crate::Result<_>>()?,
        n_vocab: int(p.n_vocab)?,
        ropes: p
            .ropes
            .iter()
            .map(|r| wit_rope(&r.rope()))
            .collect::<crate::Result<_>>()?,
        ops,
        max_tokens: int(max_tokens)?,
    };
    Ok((desc, matrices))
}

/// A session's forward step on the compute device.
struct ComputeProgram {
    p: wit_compute::Program,
}

// SAFETY: as for `StoreSource`: the component is single-threaded.
unsafe impl Send for ComputeProgram {}

impl crate::model::DeviceRun for ComputeProgram {
    fn run(
        &mut self,
        kv: &mut dyn crate::model::DeviceKv,
        pos0: usize,
        n: usize,
        x: &[f32],
        rows: crate::model::Rows,
        logits: &mut [f32],
    ) -> crate::Result<()> {
        use crate::model::Rows;
        let Some(kv) = kv.as_any_mut().downcast_mut::<ComputeKv>() else {
            return Err(EngineError::InvalidArgument(
                "a program run over a cache of another device".into(),
            ));
        };
        let rows = match rows {
            Rows::None => wit_compute::LogitRows::None,
            Rows::Last => wit_compute::LogitRows::Last,
            Rows::All => wit_compute::LogitRows::All,
        };
        let int = |v: usize| wire_u32(v, "step");
        let r = self
            .p
            .run(&kv.kv, int(pos0)?, int(n)?, x, rows)
            .map_err(|e| compute_error("forward step", e))?;
        copy_result("logits", &r, logits)
    }
}

/// An attention configuration as WIT data (the head dimensions travel with the cache).
fn wit_attention(cfg: &crate::model::AttnCfg) -> crate::Result<wit_compute::Attention> {
    let int = |v: usize| wire_u32(v, "attention");
    Ok(wit_compute::Attention {
        n_head: int(cfg.n_head)?,
        kq_scale: cfg.kq_scale,
        softcap: cfg.softcap,
        window: int(cfg.window)?,
        flash: cfg.flash,
    })
}

/// A RoPE as WIT data.
fn wit_rope(r: &crate::model::Rope<'_>) -> crate::Result<wit_compute::Rope> {
    Ok(wit_compute::Rope {
        n_rot: wire_u32(r.n_rot, "RoPE")?,
        kind: match r.ty {
            crate::model::RopeType::Normal => wit_compute::RopeKind::Normal,
            crate::model::RopeType::Neox => wit_compute::RopeKind::Neox,
        },
        freq_base: r.freq_base,
        freq_scale: r.freq_scale,
        factors: r.factors.map(<[f32]>::to_vec),
        attn_factor: r.attn_factor,
    })
}

/// A session's KV cache on the compute device.
struct ComputeKv {
    kv: wit_compute::KvCache,
}

// SAFETY: as for `StoreSource`: the component is single-threaded.
unsafe impl Send for ComputeKv {}

impl crate::model::DeviceKv for ComputeKv {
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }

    fn attend(
        &mut self,
        il: usize,
        cfg: &crate::model::AttnCfg,
        pos0: usize,
        n: usize,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        out: &mut [f32],
    ) -> crate::Result<()> {
        let int = |v: usize| wire_u32(v, "attention");
        let attention = wit_attention(cfg)?;
        let r = self
            .kv
            .attend(int(il)?, attention, int(pos0)?, int(n)?, q, k, v)
            .map_err(|e| compute_error("attention", e))?;
        copy_result("attention", &r, out)
    }

    fn shift(
        &mut self,
        n_past: usize,
        n_keep: usize,
        n_discard: usize,
        ropes: &[crate::model::Rope<'_>],
    ) -> crate::Result<()> {
        let int = |v: usize| wire_u32(v, "context shift");
        let ropes = ropes
            .iter()
            .map(wit_rope)
            .collect::<crate::Result<Vec<_>>>()?;
        self.kv
            .shift(int(n_past)?, int(n_keep)?, int(n_discard)?, &ropes)
            .map_err(|e| compute_error("context shift", e))
    }
}

impl crate::model::DeviceMatrix for ComputeMatrix {
    fn shape(&self) -> (usize, usize) {
        (self.n_cols, self.n_rows)
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn matmul(&self, x: &[f32], n: usize, out: &mut [f32]) -> crate::Result<()> {
        let n32 = wire_u32(n, "activation rows")?;
        let r = self
            .m
            .matmul(x, n32)
            .map_err(|e| compute_error(&self.name, e))?;
        copy_result(&self.name, &r, out)
    }
}

/// A loaded model: its header, where its bytes are, and how it was loaded.
struct Model {
    gguf: Gguf,
    summary: ModelSummary,
    hyperparameters: wit::Hyperparameters,
    special_tokens: wit::SpecialTokens,
    /// The tokenizer, built once at load; a model whose vocabulary the engine cannot read still
    /// loads (its info is useful), and the tokenizer's error is returned by every call needing it.
    tokenizer: Result<Rc<Tokenizer>, String>,
    /// The model's chat template (its own or a built-in), compiled once at load; like the
    /// tokenizer, a template that does not compile fails only the calls that need it.
    chat_template: Result<ChatTemplate, String>,
    /// Where the weights are read from, on the first `new-session`.
    source: Arc<StoreSource>,
    /// The weights, loaded by the first `new-session` (info and tokenizing do not need them, and
    /// vocabulary-only files have none).
    weights: RefCell<Option<Arc<crate::model::Model>>>,
    /// Devices the host's compute import offered at load: the matrices go to the first (the
    /// host lists its best first); none, and the engine computes with its own kernels.
    devices: Vec<wit_compute::DeviceInfo>,
    /// Context length sessions get.
    context_length: u32,
    /// The weight cache's budget (`None`: everything resident).
    cache_budget: Option<u64>,
    /// The load options, validated.
    options: wit::LoadOptions,
}

impl Model {
    fn load(name: &str, options: wit::LoadOptions) -> Result<Model, EngineError> {
        if options.context_length == Some(0) {
            return Err(EngineError::InvalidArgument(
                "context length must be at least 1".into(),
            ));
        }
        let source = Arc::new(StoreSource::open(name)?);
        let gguf = Gguf::read(&*source)?;
        let summary = ModelSummary::from_gguf(&gguf)?;
        let hyperparameters = hyperparameters(&gguf)?;
        let special_tokens = special_tokens(&gguf)?;
        let context_length = options
            .context_length
            .unwrap_or(hyperparameters.context_length);
        let devices = wit_compute::devices();
        let cache_budget = match options.cache_budget_bytes {
            // The matrices go to the device: the guest keeps no weights to budget.
            _ if !devices.is_empty() => Some(0),
            Some(b) => Some(b),
            None => {
                let total: u64 = gguf.tensors.iter().map(|t| t.size).sum();
                (total > DEFAULT_RESIDENT_MAX).then_some(DEFAULT_CACHE_BUDGET)
            }
        };
        let tokenizer = Tokenizer::from_gguf(&gguf)
            .map(Rc::new)
            .map_err(|e| e.to_string());
        let chat_template = ChatTemplate::from_gguf(&gguf).map_err(|e| e.to_string());
        Ok(Model {
            gguf,
            summary,
            hyperparameters,
            special_tokens,
            tokenizer,
            chat_template,
            source,
            weights: RefCell::new(None),
            devices,
            context_length,
            cache_budget,
            options,
        })
    }

    fn tokenizer(&self) -> Result<&Rc<Tokenizer>, EngineError> {
        self.tokenizer
            .as_ref()
            .map_err(|e| EngineError::Unsupported(format!("no usable tokenizer: {e}")))
    }

    /// The weights, read through the store the first time they are needed.
    fn weights(&self) -> Result<Arc<crate::model::Model>, EngineError> {
        if let Some(w) = &*self.weights.borrow() {
            return Ok(w.clone());
        }
        let source: crate::model::SharedSource = self.source.clone();
        if !self.devices.is_empty() {
            let device = Arc::new(ComputeDevice {
                index: 0,
                source: self.source.clone(),
            });
            let w = Arc::new(crate::model::Model::load_on(
                source,
                self.gguf.clone(),
                device,
            )?);
            *self.weights.borrow_mut() = Some(w.clone());
            return Ok(w);
        }
        let cache = crate::model::CacheOptions {
            budget_bytes: self.cache_budget,
            prefetch_layers: self.options.prefetch_layers as usize,
        };
        let w = Arc::new(crate::model::Model::load_with(
            source,
            self.gguf.clone(),
            cache,
        )?);
        *self.weights.borrow_mut() = Some(w.clone());
        Ok(w)
    }

    fn new_session(&self, o: wit::SessionOptions) -> Result<Session, EngineError> {
        let n_ctx = o.context_length.unwrap_or(self.context_length);
        if n_ctx == 0 || n_ctx > self.context_length {
            return Err(EngineError::InvalidArgument(format!(
                "session context length {n_ctx} must be between 1 and the model's {}",
                self.context_length
            )));
        }
        if o.batch_size == Some(0) {
            return Err(EngineError::InvalidArgument(
                "batch size must be at least 1".into(),
            ));
        }
        let tokenizer = self.tokenizer()?.clone();
        let weights = self.weights()?;
        let session = weights.new_session(SessionOptions {
            n_ctx: n_ctx as usize,
            context_shift: self.options.context_shift,
            n_keep: o.keep_tokens as usize,
            flash_attn: o.flash_attention,
            n_batch: o.batch_size.map_or(0, |b| b as usize),
        })?;
        Ok(Session {
            inner: Rc::new(RefCell::new(SessionInner {
                session,
                tokenizer,
                active: None,
                next_generation: 0,
            })),
        })
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

    fn new_session(&self, options: wit::SessionOptions) -> Result<wit::Session, wit::Error> {
        Model::new_session(self, options)
            .map(wit::Session::new)
            .map_err(to_wit_error)
    }
}

/// A session: the engine's session, shared with the generation running on it.
struct Session {
    inner: Rc<RefCell<SessionInner>>,
}

struct SessionInner {
    session: crate::model::Session,
    tokenizer: Rc<Tokenizer>,
    /// The number of the generation that is unfinished, if one is.
    active: Option<u64>,
    next_generation: u64,
}

impl SessionInner {
    /// Refuses to touch the context while a generation owns it.
    fn idle(&self) -> Result<(), EngineError> {
        match self.active {
            Some(_) => Err(EngineError::InvalidArgument(
                "the session has an unfinished generation (drain, cancel or drop it first)".into(),
            )),
            None => Ok(()),
        }
    }

    /// Fails with `context-full` before evaluating anything when `n` more tokens cannot fit.
    fn check_room(&self, n: usize) -> Result<(), EngineError> {
        let s = &self.session;
        if !s.context_shift() && s.n_past() + n > s.n_ctx() {
            return Err(EngineError::ContextFull(format!(
                "{n} tokens after {} do not fit in a context of {} (context shift off)",
                s.n_past(),
                s.n_ctx()
            )));
        }
        Ok(())
    }

    /// Teacher-forced scores of `tokens`, evaluated a batch at a time so the logits held at once
    /// stay within one batch's rows whatever the input length.
    fn logits(
        &mut self,
        tokens: &[u32],
        top_k: u32,
    ) -> Result<Vec<wit::PositionLogits>, EngineError> {
        self.idle()?;
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        self.check_room(tokens.len())?;
        let mut out = Vec::new();
        out.try_reserve_exact(tokens.len())
            .map_err(|_| EngineError::OutOfMemory(format!("{} positions", tokens.len())))?;
        let nb = self.session.n_batch();
        let mut order: Vec<u32> = Vec::new();
        for (ci, piece) in tokens.chunks(nb).enumerate() {
            let logits = self.session.eval(piece, LogitsMode::All)?;
            for i in 0..piece.len() {
                let row = logits.row(i);
                let next = tokens.get(ci * nb + i + 1).map(|&t| row[t as usize]);
                out.push(position_logits(row, top_k, next, &mut order));
            }
        }
        Ok(out)
    }
}

impl wit::GuestSession for Session {
    fn generate(
        &self,
        prompt: Vec<wit::TokenId>,
        options: wit::SamplerOptions,
    ) -> Result<wit::Generation, wit::Error> {
        let inner = &mut *self.inner.borrow_mut();
        let start = || -> Result<GenerationState, EngineError> {
            inner.idle()?;
            let opts = generate_options(options, &inner.tokenizer)?;
            GenerationState::start(&mut inner.session, &inner.tokenizer, &prompt, &opts)
        };
        let state = start().map_err(to_wit_error)?;
        let id = inner.next_generation;
        inner.next_generation += 1;
        // A generation that ends at once (max-tokens 0) never holds the session.
        let finish = state.is_finished().then_some(wit::FinishReason::MaxTokens);
        if finish.is_none() {
            inner.active = Some(id);
        }
        Ok(wit::Generation::new(Generation {
            session: self.inner.clone(),
            id,
            state: RefCell::new(state),
            finish: Cell::new(finish),
        }))
    }

    fn feed(&self, tokens: Vec<wit::TokenId>) -> Result<(), wit::Error> {
        let inner = &mut *self.inner.borrow_mut();
        let mut feed = || -> Result<(), EngineError> {
            inner.idle()?;
            if tokens.is_empty() {
                return Ok(());
            }
            inner.session.eval(&tokens, LogitsMode::Last).map(|_| ())
        };
        feed().map_err(to_wit_error)
    }

    fn logits(
        &self,
        tokens: Vec<wit::TokenId>,
        top_k: u32,
    ) -> Result<Vec<wit::PositionLogits>, wit::Error> {
        self.inner
            .borrow_mut()
            .logits(&tokens, top_k)
            .map_err(to_wit_error)
    }

    fn reset(&self) -> Result<(), wit::Error> {
        let inner = &mut *self.inner.borrow_mut();
        inner.idle().map_err(to_wit_error)?;
        inner.session.reset();
        Ok(())
    }

    fn len(&self) -> u32 {
        // n_past <= n_ctx, which came from a u32.
        self.inner.borrow().session.n_past() as u32
    }

    fn context_length(&self) -> u32 {
        self.inner.borrow().session.n_ctx() as u32
    }
}

/// A generation: its state, and the session it runs on.
struct Generation {
    session: Rc<RefCell<SessionInner>>,
    /// Which of the session's generations this is.
    id: u64,
    state: RefCell<GenerationState>,
    /// Set once the generation has ended.
    finish: Cell<Option<wit::FinishReason>>,
}

impl Generation {
    /// Records the end and lets the session take other work.
    fn end(&self, reason: wit::FinishReason) {
        self.finish.set(Some(reason));
        let mut s = self.session.borrow_mut();
        if s.active == Some(self.id) {
            s.active = None;
        }
    }
}

impl Drop for Generation {
    fn drop(&mut self) {
        if let Ok(mut s) = self.session.try_borrow_mut()
            && s.active == Some(self.id)
        {
            s.active = None;
        }
    }
}

impl wit::GuestGeneration for Generation {
    fn next(&self) -> Result<Option<wit::Token>, wit::Error> {
        if self.finish.get().is_some() {
            return Ok(None);
        }
        let step = {
            let inner = &mut *self.session.borrow_mut();
            self.state
                .borrow_mut()
                .step(&mut inner.session, &inner.tokenizer)
        };
        let step = match step {
            Ok(Some(step)) => step,
            Ok(None) => {
                self.end(wit::FinishReason::MaxTokens);
                return Ok(None);
            }
            Err(e) => {
                // The session may be mid-token; the generation cannot go on.
                self.end(wit::FinishReason::Cancelled);
                return Err(to_wit_error(e));
            }
        };
        if let Some(f) = step.finish {
            self.end(finish_reason(f));
            // The end token itself is not output, unless it releases held-back text.
            if f == Finish::Eos && step.text.is_empty() {
                return Ok(None);
            }
        }
        Ok(Some(wit::Token {
            id: step.id,
            text: step.text,
        }))
    }

    fn finish_reason(&self) -> Option<wit::FinishReason> {
        self.finish.get()
    }

    fn cancel(&self) -> String {
        if self.finish.get().is_some() {
            return String::new();
        }
        let held = self.state.borrow_mut().cancel();
        self.end(wit::FinishReason::Cancelled);
        held
    }

    fn usage(&self) -> wit::Usage {
        let u = self.state.borrow().usage();
        wit::Usage {
            prompt_tokens: u32::try_from(u.prompt_tokens).unwrap_or(u32::MAX),
            completion_tokens: u32::try_from(u.completion_tokens).unwrap_or(u32::MAX),
            prefill_ms: u.prefill_ms,
            decode_ms: u.decode_ms,
        }
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
        EngineError::Compute(m) => wit::Error::Compute(m),
        EngineError::OutOfMemory(m) => wit::Error::OutOfMemory(m),
    }
}

fn finish_reason(f: Finish) -> wit::FinishReason {
    match f {
        Finish::Eos => wit::FinishReason::StopToken,
        Finish::Length => wit::FinishReason::MaxTokens,
        Finish::ContextFull => wit::FinishReason::ContextFull,
        Finish::Stop => wit::FinishReason::StopString,
    }
}

/// The engine's generation options from WIT's sampler options.
fn generate_options(
    o: wit::SamplerOptions,
    tok: &Tokenizer,
) -> Result<GenerateOptions, EngineError> {
    let seed = match o.seed {
        // The engine draws a seed from WASI's random source for its "random" seed value.
        None => crate::sample::DEFAULT_SEED,
        Some(s) => u32::try_from(s).map_err(|_| {
            EngineError::InvalidArgument(format!("seed {s} does not fit in 32 bits"))
        })?,
    };
    let mut logit_bias: Vec<(u32, f32)> = o.logit_bias.iter().map(|b| (b.token, b.bias)).collect();
    if o.ignore_eos {
        // llama.cpp's `ignore_eos`: end-of-generation tokens can never be sampled.
        logit_bias.extend(tok.eog_tokens().iter().map(|&t| (t, f32::NEG_INFINITY)));
    }
    Ok(GenerateOptions {
        sampler: SamplerOptions {
            temperature: o.temperature,
            top_k: i32::try_from(o.top_k).unwrap_or(i32::MAX),
            top_p: o.top_p,
            min_p: o.min_p,
            repeat_penalty: o.repeat_penalty,
            repeat_last_n: o.repeat_last_n as usize,
            frequency_penalty: o.frequency_penalty,
            presence_penalty: o.presence_penalty,
            logit_bias,
            seed,
            ..SamplerOptions::default()
        },
        max_tokens: o.max_tokens.map(|n| n as usize),
        stops: o.stop,
    })
}

/// One row of logits summarised: the `top_k` largest (ties to the lower id, as a stable sort
/// gives), the log-sum-exp (in f64, then rounded), and the next token's logit. `order` is
/// scratch reused between rows.
fn position_logits(
    row: &[f32],
    top_k: u32,
    next: Option<f32>,
    order: &mut Vec<u32>,
) -> wit::PositionLogits {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = if max.is_finite() {
        let sum: f64 = row.iter().map(|&x| f64::from(x - max).exp()).sum();
        f64::from(max) + sum.ln()
    } else {
        f64::from(max)
    };
    let k = (top_k as usize).min(row.len());
    let desc = |a: &u32, b: &u32| row[*b as usize].total_cmp(&row[*a as usize]).then(a.cmp(b));
    order.clear();
    order.extend(0..row.len() as u32);
    if k > 0 && k < order.len() {
        order.select_nth_unstable_by(k - 1, desc);
    }
    order.truncate(k);
    order.sort_unstable_by(desc);
    wit::PositionLogits {
        top: order
            .iter()
            .map(|&id| wit::TokenLogit {
                id,
                logit: row[id as usize],
            })
            .collect(),
        log_sum_exp: lse as f32,
        next_logit: next,
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

/// `v` as a WIT `u32`, or an error naming `what`.
fn wire_u32(v: usize, what: &str) -> crate::Result<u32> {
    u32::try_from(v)
        .map_err(|_| EngineError::InvalidArgument(format!("{what}: {v} does not fit in 32 bits")))
}

/// A device's result `r` into `out`, which it must fill exactly.
fn copy_result(what: &str, r: &[f32], out: &mut [f32]) -> crate::Result<()> {
    if r.len() != out.len() {
        return Err(EngineError::Compute(format!(
            "{what}: the device returned {} values for {}",
            r.len(),
            out.len()
        )));
    }
    out.copy_from_slice(r);
    Ok(())
}

fn compute_error(what: &str, e: wit_compute::ComputeError) -> EngineError {
    use wit_compute::ComputeError as C;
    match e {
        C::OutOfMemory(m) => EngineError::OutOfMemory(format!("{what}: {m}")),
        C::Unsupported(m) => EngineError::Unsupported(format!("{what} on the compute device: {m}")),
        C::Store(m) => EngineError::Store(format!("{what}: {m}")),
        C::NoDevice(m) | C::InvalidArgument(m) | C::Device(m) => {
            EngineError::Compute(format!("{what}: {m}"))
        }
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
        cache_budget_bytes: m.cache_budget,
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
