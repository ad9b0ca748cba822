//! A loaded model and its inference sessions.
//!
//! ```text
//! let model = Arc::new(Model::load(src, gguf)?);
//! let mut s = model.new_session(SessionOptions { n_ctx: 2048, ..Default::default() })?;
//! let logits = s.eval(&prompt, LogitsMode::Last)?;   // batched prefill
//! let next = argmax(logits.last());
//! s.eval(&[next], LogitsMode::Last)?;                 // one token
//! ```
//!
//! The forward passes themselves live in [`crate::arch`], one file per architecture.

pub mod device;
pub(crate) mod fmat;
pub mod graph;
pub mod hparams;
pub(crate) mod kquant;
pub(crate) mod kv_cache;
pub(crate) mod ops;
mod trig;
pub mod weights;

use std::sync::Arc;

pub use device::{Device, DeviceKv, DeviceMatrix};
pub use graph::{DeviceProgram, DeviceRun, Rows, Runner};
pub use hparams::{Arch, HParams, RopeType};
pub use kv_cache::{KvCache, KvShape};
pub use ops::{AttnCfg, AttnPart, AttnScratch, Rope, matmul_rows};
pub use weights::{CacheOptions, CacheStats, Layers, Matrix};

use crate::arch;
use crate::gguf::names::Tn;
use crate::gguf::{ByteSource, Gguf};
use crate::quant::GgmlType;
use crate::{Error, Result};
use graph::{Buf, Emit, Exec, MAX_ROPES, N_BUFS, Op, Widths};
use kv_cache::Kv;
use ops::{Acts, alloc, mul};
use weights::Loader;

/// Tokens per forward step of a long prompt (llama.cpp's default `n_ubatch`).
pub const MAX_BATCH: usize = 512;

/// Byte source shared by a model and whatever else reads the file.
pub type SharedSource = Arc<dyn ByteSource + Send + Sync>;

/// The per-architecture weights.
pub(crate) enum ArchWeights {
    /// Llama and Qwen 2 (the same graph).
    Llama(arch::llama::Weights),
    Qwen3(arch::qwen3::Weights),
    Phi3(arch::phi3::Weights),
    Gemma(arch::gemma::Weights),
    Gemma2(arch::gemma2::Weights),
    Gemma3(arch::gemma3::Weights),
}

/// Runs `$body` with `$a` naming the architecture's module and `$w` its weights.
macro_rules! with_arch {
    ($weights:expr, |$a:ident, $w:ident| $body:expr) => {
        match $weights {
            ArchWeights::Llama($w) => {
                use crate::arch::llama as $a;
                $body
            }
            ArchWeights::Qwen3($w) => {
                use crate::arch::qwen3 as $a;
                $body
            }
            ArchWeights::Phi3($w) => {
                use crate::arch::phi3 as $a;
                $body
            }
            ArchWeights::Gemma($w) => {
                use crate::arch::gemma as $a;
                $body
            }
            ArchWeights::Gemma2($w) => {
                use crate::arch::gemma2 as $a;
                $body
            }
            ArchWeights::Gemma3($w) => {
                use crate::arch::gemma3 as $a;
                $body
            }
        }
    };
}

/// A model ready to run: hyperparameters and weights.
pub struct Model {
    hp: HParams,
    gguf: Arc<Gguf>,
    pub(crate) tok_embd: Matrix,
    output: Option<Matrix>,
    output_b: Option<Vec<f32>>,
    pub(crate) output_norm: Vec<f32>,
    pub(crate) weights: ArchWeights,
    /// Activation types the matrices need (their `vec_dot_type`s).
    act_types: Vec<GgmlType>,
    /// Widest fused Q/K/V projection (0 if none), and widest gate (or fused gate+up) output.
    fused_qkv_width: usize,
    ffn_width: usize,
    /// The device holding the weight matrices, if any: it may hold the sessions' KV caches too.
    device: Option<Arc<dyn Device>>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("hparams", &self.hp)
            .finish_non_exhaustive()
    }
}

impl Model {
    /// Reads the hyperparameters and every weight of the model in `gguf` from `src`.
    pub fn load(src: SharedSource, gguf: Gguf) -> Result<Model> {
        Model::load_with(src, gguf, CacheOptions::default())
    }

    /// Like [`Model::load`], keeping at most `cache.budget_bytes` of weights in memory: the
    /// output head (and the token embeddings, when they are the output head) always, as many
    /// leading layers as fit after it, and the other layers read on demand. Token embeddings
    /// that are not the output head are then read by the row.
    pub fn load_with(src: SharedSource, gguf: Gguf, cache: CacheOptions) -> Result<Model> {
        Model::load_inner(src, gguf, cache, None)
    }

    /// Like [`Model::load`], with every weight matrix placed on `device`, which reads them from
    /// its own copy of the source and computes their products; only vectors (norms, biases) and
    /// single embedding rows are read here.
    pub fn load_on(src: SharedSource, gguf: Gguf, device: Arc<dyn Device>) -> Result<Model> {
        Model::load_inner(src, gguf, CacheOptions::default(), Some(device))
    }

    fn load_inner(
        src: SharedSource,
        gguf: Gguf,
        cache: CacheOptions,
        device: Option<Arc<dyn Device>>,
    ) -> Result<Model> {
        let hp = HParams::from_gguf(&gguf)?;
        let gguf = Arc::new(gguf);
        let mut ld = Loader::new(&src, &gguf, None, cache.prefetch_layers);
        ld.device = device.clone();
        ld.ffn_width = hp.n_ff;
        let d = hp.n_embd;
        let tied = gguf.tensor(&Tn::Output.weight()).is_none();
        let tok_embd = if cache.budget_bytes.is_some() && !tied {
            ld.matrix_on_demand(&Tn::TokenEmbd.weight(), d, hp.n_vocab)?
        } else {
            ld.matrix(&Tn::TokenEmbd.weight(), d, hp.n_vocab)?
        };
        let output_norm = ld.vector(&Tn::OutputNorm.weight(), d)?;
        // Tied embeddings: llama.cpp falls back to token_embd when output.weight is absent.
        let output = ld.opt_matrix(&Tn::Output.weight(), d, hp.n_vocab)?;
        let output_b = ld.opt_vector(&format!("{}.bias", Tn::Output.pattern()), hp.n_vocab)?;
        if let Some(budget) = cache.budget_bytes {
            // What stays resident besides the layers: the head, and the vectors read so far
            // (`measured` counts every tensor read, the on-demand embeddings excepted).
            let fixed = ld.measured;
            ld.layer_budget = Some(budget.checked_sub(fixed).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "the weight cache budget of {budget} bytes is less than the output head's {fixed}"
                ))
            })?);
        }
        let weights = match hp.arch {
            Arch::Llama | Arch::Qwen2 => ArchWeights::Llama(arch::llama::load(&mut ld, &hp)?),
            Arch::Qwen3 => ArchWeights::Qwen3(arch::qwen3::load(&mut ld, &hp)?),
            Arch::Phi3 => ArchWeights::Phi3(arch::phi3::load(&mut ld, &hp)?),
            Arch::Gemma => ArchWeights::Gemma(arch::gemma::load(&mut ld, &hp)?),
            Arch::Gemma2 => ArchWeights::Gemma2(arch::gemma2::load(&mut ld, &hp)?),
            Arch::Gemma3 => ArchWeights::Gemma3(arch::gemma3::load(&mut ld, &hp)?),
        };
        let (act_types, fused_qkv_width, ffn_width) =
            (ld.act_types, ld.fused_qkv_width, ld.ffn_width);
        Ok(Model {
            hp,
            gguf,
            tok_embd,
            output,
            output_b,
            output_norm,
            weights,
            act_types,
            fused_qkv_width,
            ffn_width,
            device,
        })
    }

    /// The layer cache's counters (all layers pinned when the model was loaded without a
    /// budget).
    pub fn cache_stats(&self) -> CacheStats {
        let mut s = match &self.weights {
            ArchWeights::Llama(w) => w.layers.stats(),
            ArchWeights::Qwen3(w) => w.layers.stats(),
            ArchWeights::Phi3(w) => w.layers.stats(),
            ArchWeights::Gemma(w) => w.layers.stats(),
            ArchWeights::Gemma2(w) => w.layers.stats(),
            ArchWeights::Gemma3(w) => w.layers.stats(),
        };
        let head = self.tok_embd.resident_bytes()
            + self.output.as_ref().map_or(0, Matrix::resident_bytes)
            + 4 * self.output_norm.len();
        s.resident_bytes += head as u64;
        s
    }

    /// Whether the weight matrices are on a compute device.
    pub fn on_device(&self) -> bool {
        self.device.is_some()
    }

    /// The hyperparameters.
    pub fn hparams(&self) -> &HParams {
        &self.hp
    }

    /// The GGUF header the model was loaded from (metadata for the tokenizer, templates, …).
    pub fn gguf(&self) -> &Gguf {
        &self.gguf
    }

    /// The output projection (the token embedding when the two are tied).
    pub(crate) fn output(&self) -> &Matrix {
        self.output.as_ref().unwrap_or(&self.tok_embd)
    }

    /// Copies the embeddings of `tokens` into the rows of `x`, dequantizing only those rows.
    pub(crate) fn embed(&self, tokens: &[u32], x: &mut [f32], buf: &mut Vec<u8>) -> Result<()> {
        let d = self.hp.n_embd;
        for (t, &tok) in tokens.iter().enumerate() {
            self.tok_embd
                .dequantize_row(tok as usize, &mut x[t * d..(t + 1) * d], buf)?;
        }
        Ok(())
    }

    /// A new session with its own KV cache and buffers.
    pub fn new_session(self: &Arc<Self>, opts: SessionOptions) -> Result<Session> {
        Session::new(Arc::clone(self), opts)
    }

    /// Values per token of each activation buffer of a forward step.
    pub fn widths(&self) -> Widths {
        let hp = &self.hp;
        let d = hp.n_embd;
        [
            d,
            d,
            self.fused_qkv_width,
            hp.q_dim(),
            hp.k_dim(),
            hp.v_dim(),
            hp.attn_out_dim(),
            d,
            self.ffn_width,
            hp.n_ff,
        ]
    }

    /// Gives the operations of one forward step to `g`, for a session of `n_ctx` positions.
    pub(crate) fn emit<'w>(
        &'w self,
        g: &mut impl Emit<'w>,
        n_ctx: usize,
        flash: bool,
    ) -> Result<()> {
        with_arch!(&self.weights, |a, w| a::emit(self, w, g, n_ctx, flash))
    }
}

/// Options of a [`Session`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionOptions {
    /// Context window in tokens; 0 means the model's training context.
    pub n_ctx: usize,
    /// When the window is full: drop old tokens (llama.cpp's context shift) instead of failing
    /// with [`Error::ContextFull`].
    pub context_shift: bool,
    /// Tokens at the start that a context shift never drops (e.g. BOS and a system prompt).
    pub n_keep: usize,
    /// Attend as llama.cpp does with flash attention on (the default of llama-cli,
    /// llama-server and llama-perplexity on the CPU) rather than off (llama-cpp-python's
    /// default). Mathematically the same; the roundings differ.
    pub flash_attn: bool,
    /// Most tokens per forward step (llama.cpp's `n_ubatch`); 0: [`MAX_BATCH`]. Results depend
    /// on it only through roundings; `chord perplexity` matches llama-perplexity's shape with it.
    pub n_batch: usize,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            n_ctx: 4096,
            context_shift: false,
            n_keep: 0,
            flash_attn: false,
            n_batch: 0,
        }
    }
}

/// Which logits [`Session::eval`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsMode {
    /// Only after the last token (generation).
    Last,
    /// After every token (scoring, perplexity).
    All,
}

/// Rows of logits, `n_vocab` values each, borrowed from the session.
#[derive(Debug, Clone, Copy)]
pub struct Logits<'a> {
    data: &'a [f32],
    n_vocab: usize,
}

impl<'a> Logits<'a> {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.data.len() / self.n_vocab
    }

    /// Row `i` (after the `i`-th token of the call, or the only row in [`LogitsMode::Last`]).
    pub fn row(&self, i: usize) -> &'a [f32] {
        &self.data[i * self.n_vocab..(i + 1) * self.n_vocab]
    }

    /// The last row.
    pub fn last(&self) -> &'a [f32] {
        self.row(self.rows() - 1)
    }

    /// All rows back to back.
    pub fn as_slice(&self) -> &'a [f32] {
        self.data
    }

    /// Vocabulary size (row length).
    pub fn n_vocab(&self) -> usize {
        self.n_vocab
    }
}

/// Per-session work buffers, sized once for `MAX_BATCH` tokens.
pub(crate) struct Scratch {
    /// The step's activations ([`Buf`]), `n_batch` rows of [`Model::widths`] each.
    pub bufs: [Vec<f32>; N_BUFS],
    /// RoPE tables `[n, n_rot]` (full and sliding-window layers).
    pub tables: [Vec<f32>; MAX_ROPES],
    /// The current matmul input, quantized per weight type.
    pub acts: Acts,
    pub attn: AttnScratch,
    /// A token embedding row read from the source (embeddings not held in memory).
    pub row_buf: Vec<u8>,
}

impl Scratch {
    /// Buffers for steps of up to `nb` tokens attending over `n_ctx` positions here; with
    /// `step_here` false (the step runs on a device) only the embeddings' buffer.
    fn new(m: &Model, nb: usize, n_ctx: usize, step_here: bool) -> Result<Scratch> {
        let hp = &m.hp;
        let (nb_all, n_rot) = if step_here { (nb, hp.n_rot) } else { (0, 0) };
        let buf = |w: usize, what: &str| -> Result<Vec<f32>> { alloc(mul(nb_all, w, what)?, what) };
        let mut bufs: [Vec<f32>; N_BUFS] = Default::default();
        for (b, (w, name)) in bufs.iter_mut().zip(m.widths().into_iter().zip(Buf::ALL)) {
            // The embeddings go in X wherever the step runs.
            let rows = if name == Buf::X { nb } else { nb_all };
            let what = format!("{name:?} activations");
            *b = alloc(mul(rows, w, &what)?, &what)?;
        }
        let max_k = hp.n_embd.max(hp.attn_out_dim()).max(hp.n_ff);
        Ok(Scratch {
            bufs,
            tables: [buf(n_rot, "rope table")?, buf(n_rot, "rope table")?],
            acts: Acts::new(nb_all, max_k, &m.act_types)?,
            attn: AttnScratch::new(n_ctx, hp.head_dim_k, hp.head_dim_v)?,
            row_buf: Vec::new(),
        })
    }
}

/// One conversation: a KV cache, work buffers, and the logits of the last call.
pub struct Session {
    model: Arc<Model>,
    opts: SessionOptions,
    n_ctx: usize,
    n_batch: usize,
    n_past: usize,
    kv: Kv,
    /// The forward step recorded on the device that holds the weights and the cache, if it
    /// runs programs: then a step is one call.
    program: Option<Box<dyn DeviceRun>>,
    scratch: Scratch,
    logits: Vec<f32>,
    n_logit_rows: usize,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("opts", &self.opts)
            .field("n_ctx", &self.n_ctx)
            .field("n_past", &self.n_past)
            .finish_non_exhaustive()
    }
}

impl Session {
    fn new(model: Arc<Model>, opts: SessionOptions) -> Result<Session> {
        let hp = &model.hp;
        let n_ctx = if opts.n_ctx == 0 {
            hp.n_ctx_train
        } else {
            opts.n_ctx
        };
        // Far beyond any model; keeps position arithmetic well inside f32's exact integers.
        if n_ctx > 1 << 24 {
            return Err(Error::InvalidArgument(format!(
                "n_ctx {n_ctx} is larger than the supported maximum {}",
                1 << 24
            )));
        }
        if opts.context_shift && opts.n_keep >= n_ctx {
            return Err(Error::InvalidArgument(format!(
                "n_keep {} must be smaller than n_ctx {n_ctx}",
                opts.n_keep
            )));
        }
        let n_batch = match opts.n_batch {
            0 => MAX_BATCH,
            n => n.min(MAX_BATCH),
        }
        .min(n_ctx);
        let shape = KvShape {
            n_layer: hp.n_layer,
            n_ctx,
            n_head_kv: hp.n_head_kv,
            head_dim_k: hp.head_dim_k,
            head_dim_v: hp.head_dim_v,
        };
        // On the weights' device if it takes it: attention runs there, next to its products.
        let on_device = match &model.device {
            Some(d) => d.kv_cache(&shape)?,
            None => None,
        };
        let kv = match on_device {
            Some(c) => Kv::device(shape, c),
            None => Kv::local(KvCache::new(&shape)?),
        };
        // With the cache on the device, the whole step may run there too.
        let program = match (&model.device, kv.on_device()) {
            (Some(d), true) => graph::program_on(&model, &**d, n_ctx, opts.flash_attn, n_batch)?,
            _ => None,
        };
        // Attention buffers only where attention runs here, activations only where steps do.
        let attn_ctx = if kv.on_device() { 0 } else { n_ctx };
        let scratch = Scratch::new(&model, n_batch, attn_ctx, program.is_none())?;
        let logits = alloc(hp.n_vocab, "logits")?;
        Ok(Session {
            model,
            opts,
            n_ctx,
            n_batch,
            n_past: 0,
            kv,
            program,
            scratch,
            logits,
            n_logit_rows: 0,
        })
    }

    /// The model this session runs.
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// Tokens in the KV cache (the position of the next token).
    pub fn n_past(&self) -> usize {
        self.n_past
    }

    /// The context window.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Whether a full context drops old tokens rather than failing.
    pub fn context_shift(&self) -> bool {
        self.opts.context_shift
    }

    /// Most tokens per forward step.
    pub fn n_batch(&self) -> usize {
        self.n_batch
    }

    /// Whether each forward step runs whole on the compute device (one call per step).
    pub fn steps_on_device(&self) -> bool {
        self.program.is_some()
    }

    /// Forgets all tokens (the buffers stay allocated).
    pub fn reset(&mut self) {
        self.n_past = 0;
        self.n_logit_rows = 0;
    }

    /// The logits of the last [`Session::eval`] call.
    pub fn logits(&self) -> Logits<'_> {
        let n_vocab = self.model.hp.n_vocab;
        Logits {
            data: &self.logits[..self.n_logit_rows * n_vocab],
            n_vocab,
        }
    }

    /// Runs `tokens` through the model after the tokens already in the cache, and returns the
    /// logits `mode` asks for. Long inputs run in batches of up to [`MAX_BATCH`] tokens.
    ///
    /// Errors without changing the session for an empty input, a token id outside the
    /// vocabulary, or (context shift off) more tokens than the window has room for. A failure
    /// in the middle of a long input leaves the tokens of the finished batches in the cache.
    pub fn eval(&mut self, tokens: &[u32], mode: LogitsMode) -> Result<Logits<'_>> {
        let hp = &self.model.hp;
        let n_vocab = hp.n_vocab;
        if tokens.is_empty() {
            return Err(Error::InvalidArgument("eval of zero tokens".into()));
        }
        if let Some((i, &t)) = tokens
            .iter()
            .enumerate()
            .find(|&(_, &t)| t as usize >= n_vocab)
        {
            return Err(Error::InvalidArgument(format!(
                "token {i} has id {t}, outside the vocabulary of {n_vocab}"
            )));
        }
        // Refuse what cannot fit before touching the cache (shifts included).
        let mut p = self.n_past;
        for chunk in tokens.chunks(self.n_batch) {
            p = self.room_after_shifts(p, chunk.len()).ok_or_else(|| {
                Error::ContextFull(format!(
                    "{} tokens after {} do not fit in a window of {} ({})",
                    tokens.len(),
                    self.n_past,
                    self.n_ctx,
                    if self.opts.context_shift {
                        format!("context shift keeps {}", self.opts.n_keep)
                    } else {
                        "context shift off".to_string()
                    }
                ))
            })? + chunk.len();
        }
        let rows = match mode {
            LogitsMode::Last => 1,
            LogitsMode::All => tokens.len(),
        };
        let len = mul(rows, n_vocab, "logits")?;
        if len > self.logits.len() {
            self.logits
                .try_reserve_exact(len - self.logits.len())
                .map_err(|_| Error::OutOfMemory(format!("logits: {rows} x {n_vocab}")))?;
            self.logits.resize(len, 0.0);
        }
        self.n_logit_rows = 0;

        let n_chunks = tokens.len().div_ceil(self.n_batch);
        for (ci, chunk) in tokens.chunks(self.n_batch).enumerate() {
            if self.n_past + chunk.len() > self.n_ctx {
                self.shift(chunk.len())?;
            }
            let (which, out) = match mode {
                LogitsMode::All => (
                    Rows::All,
                    &mut self.logits[ci * self.n_batch * n_vocab..][..chunk.len() * n_vocab],
                ),
                LogitsMode::Last if ci + 1 == n_chunks => (Rows::Last, &mut self.logits[..n_vocab]),
                LogitsMode::Last => (Rows::None, &mut self.logits[..0]),
            };
            let (m, n, pos0) = (&*self.model, chunk.len(), self.n_past);
            let s = &mut self.scratch;
            // x = embeddings of the tokens: [n, d]
            let x = &mut s.bufs[Buf::X as usize][..n * m.hp.n_embd];
            m.embed(chunk, x, &mut s.row_buf)?;
            if let Some(p) = &mut self.program {
                // A program is made only for a cache on the device.
                let kv = self.kv.device_mut().ok_or_else(|| {
                    Error::InvalidArgument("a device program without a device cache".into())
                })?;
                p.run(kv, pos0, n, x, which, out)?;
            } else {
                let mut g = Exec::new(m, s, &mut self.kv, pos0, n, which, out);
                m.emit(&mut g, self.n_ctx, self.opts.flash_attn)?;
            }
            self.n_past += chunk.len();
        }
        self.n_logit_rows = rows;
        Ok(self.logits())
    }

    /// Where `n_past` ends up after the context shifts needed to add `n` tokens, or `None` if
    /// they cannot fit. llama.cpp's rule: keep the first `n_keep` tokens, drop the older half of
    /// the rest, repeat.
    fn room_after_shifts(&self, mut n_past: usize, n: usize) -> Option<usize> {
        let keep = self.opts.n_keep.min(n_past);
        while n_past + n > self.n_ctx {
            let n_discard = (n_past - keep) / 2;
            if !self.opts.context_shift || n_discard == 0 {
                return None;
            }
            n_past -= n_discard;
        }
        Some(n_past)
    }

    /// Shifts the context (see [`Session::room_after_shifts`]) until `n` more tokens fit.
    fn shift(&mut self, n: usize) -> Result<()> {
        let keep = self.opts.n_keep.min(self.n_past);
        while self.n_past + n > self.n_ctx {
            let n_discard = (self.n_past - keep) / 2;
            if !self.opts.context_shift || n_discard == 0 {
                return Err(Error::ContextFull(format!(
                    "{n} tokens do not fit after {} in a window of {}",
                    self.n_past, self.n_ctx
                )));
            }
            let (m, n_ctx, n_past) = (&*self.model, self.n_ctx, self.n_past);
            let kv = &mut self.kv;
            with_arch!(&m.weights, |a, w| kv
                .shift(n_past, keep, n_discard, |il| a::rope(&m.hp, w, il, n_ctx)))?;
            self.n_past -= n_discard;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

/// The model head shared by every architecture: `logits = rmsnorm(x) · W_out (+ b)`, soft-capped
/// by `softcap`, for the rows the step asks for (llama.cpp computes only the rows it outputs,
/// too).
pub(crate) fn output_head(m: &Model, softcap: Option<f32>) -> Op<&Matrix, &[f32]> {
    Op::Logits {
        norm: &m.output_norm,
        eps: m.hp.rms_eps,
        w: m.output(),
        b: m.output_b.as_deref(),
        softcap,
    }
}
